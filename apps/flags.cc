#include "apps/flags.h"

#include <limits>

namespace kvstash::apps {

void AddModelFlags(CLI::App* cmd, ModelOptions* m, bool required) {
  CLI::Option* model =
      cmd->add_option("--model,-m", m->model_path,
                      "model file: GGUF, or a llama2.c checkpoint");
  if (required) model->required();
  cmd->add_option("--tokenizer", m->tokenizer_path,
                  "tokenizer.bin of a llama2.c checkpoint (GGUF files carry "
                  "their own vocabulary)");
  cmd->add_flag("--huge-pages", m->huge_pages,
                "read the model into memory backed by 2 MiB transparent huge "
                "pages instead of mapping the file (faster decode of large "
                "float weights; costs a read at start and memory not shared "
                "with other processes)");
}

void AddRunFlags(CLI::App* cmd, RunOptions* r) {
  cmd->add_option("--threads,-t", r->threads, "threads, 0 = one per core");
  cmd->add_option("--kv-type", r->kv_type,
                  "KV cache type of K and V: f32, f16, bf16, q8, q4, q4h, "
                  "kivi2, kivi4");
  cmd->add_option("--kv-type-k", r->kv_type_k,
                  "KV type of the keys (overrides --kv-type)");
  cmd->add_option("--kv-type-v", r->kv_type_v,
                  "KV type of the values (overrides --kv-type)");
}

void AddKvPolicyFlags(CLI::App* cmd, KvPolicyFlags* f) {
  cmd->add_option(
      "--kv-policy", f->policy,
      "token eviction policy: " + compress::PolicyNames() + " (none)");
  cmd->add_option("--kv-ratio", f->ratio,
                  "fraction of the tokens --kv-policy evicts, in [0, 1)");
  cmd->add_flag("--kv-merge", f->merge,
                "fold each evicted token into its most similar kept token");
  cmd->add_option("--kv-every", f->every,
                  "after the first compression, compress again every N "
                  "positions back to its budget (a fixed budget while "
                  "decoding); 0: once");
}

void AddTierCodecFlag(CLI::App* cmd, std::string* codec) {
  cmd->add_option("--tier-codec", *codec,
                  "how blocks are stored in the tiers: none, zstd "
                  "(lossless), cachegen (lossy, float KV types; measure it "
                  "with kvstash eval --tier-codec)");
}

void AddTierChunkFlag(CLI::App* cmd, int* blocks) {
  cmd->add_option("--tier-chunk-blocks", *blocks,
                  "blocks per tier object: chunks of N consecutive blocks, "
                  "the blocks after a request's last chunk one by one; 1: "
                  "one object per block; 0: as many as fit in 512 KiB");
}

void AddTierFlags(CLI::App* cmd, TierFlags* t) {
  cmd->add_option("--disk-cache", t->disk_cache,
                  "directory of a persistent KV cache tier (none)");
  cmd->add_option("--disk-cache-gb", t->disk_cache_gb,
                  "disk tier capacity in GiB");
  cmd->add_option("--disk-io", t->disk_io,
                  "disk tier I/O: auto, direct (O_DIRECT + io_uring), "
                  "buffered");
  cmd->add_option("--disk-write", t->disk_write,
                  "write blocks to disk on commit or on second-use");
  cmd->add_option("--redis", t->redis,
                  "Redis KV tier shared by servers: "
                  "redis://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...] (none)");
  cmd->add_option("--redis-password-file", t->redis_password_file,
                  "file holding the Redis password (AUTH; overrides the "
                  "URL's, keeps its user) (none)");
  cmd->add_option("--redis-prefix", t->redis_prefix, "prefix of Redis keys");
  cmd->add_option("--redis-ttl", t->redis_ttl,
                  "Redis key expiry in seconds, 0 = none");
  cmd->add_option("--redis-write", t->redis_write,
                  "write blocks to Redis on commit or on second-use");
  cmd->add_option("--tier-key-file", t->tier_key_file,
                  "file (mode 600) holding the secret that seals and "
                  "verifies tier objects, the same on every server of a "
                  "fleet; or KVSTASH_TIER_KEY in the environment (none: the "
                  "disk tier makes its own, Redis needs one)");
  cmd->add_flag("--redis-insecure", t->redis_insecure,
                "use Redis without a tier key: whoever can write to it "
                "controls the KV every server reads");
  AddTierCodecFlag(cmd, &t->tier_codec);
  AddTierChunkFlag(cmd, &t->tier_chunk_blocks);
}

void AddJsonFlag(CLI::App* cmd, bool* json) {
  cmd->add_flag("--json", *json, "print one JSON object");
}

CLI::Option* AddMiBOption(CLI::App* cmd, const std::string& name, size_t* bytes,
                          const std::string& help) {
  return cmd
      ->add_option_function<size_t>(
          name,
          [bytes](const size_t& mib) {
            constexpr size_t kMax = std::numeric_limits<size_t>::max();
            *bytes = mib > (kMax >> 20) ? kMax : mib << 20;
          },
          help)
      ->default_str(std::to_string(*bytes >> 20));
}

}  // namespace kvstash::apps
