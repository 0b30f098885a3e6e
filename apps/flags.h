// The flags several subcommands share, bound with CLI11 straight to the
// options they fill. Defaults live in the structs (the libraries' Options,
// or the small adapters below where a flag needs converting: file names to
// keys, type names to enums, MiB to bytes) and `--help` shows them from
// there (main.cc captures every option's default).
#pragma once

#include <CLI/CLI.hpp>
#include <cstddef>
#include <functional>
#include <string>

#include "compress/policy.h"

namespace kvstash::apps {

// A registered subcommand: its CLI11 app and what runs it once parsed
// (the process exit status; a failure reported as one line on stderr).
struct Command {
  CLI::App* cmd = nullptr;
  std::function<int()> run;
};

struct ModelOptions {
  std::string model_path;
  std::string tokenizer_path;  // llama2.c checkpoints only
  // Read the file into huge pages instead of mapping it (FileMemory).
  bool huge_pages = false;
};

// How a forward pass runs: threads and the KV cache's types (converted by
// app_util.h's ParseRunOptions into a pool and a kernels::KvFormat).
struct RunOptions {
  int threads = 0;              // 0: one per core
  std::string kv_type = "f16";  // K and V (kernels/kv_format.h)
  std::string kv_type_k;        // overrides kv_type for K when set
  std::string kv_type_v;        // overrides kv_type for V when set
};

// Token eviction (compress/policy.h) with the command line's ratio: an
// empty policy: none.
struct KvPolicyFlags : compress::PolicyOptions {
  KvPolicyFlags() { ratio = 0.5; }
};

// The KV tiers below DRAM (apps/tiers.h opens them into store options).
struct TierFlags {
  std::string disk_cache;        // directory; empty: no disk tier
  double disk_cache_gb = 16;     // capacity of the disk tier
  std::string disk_io = "auto";  // auto, direct (O_DIRECT + io_uring), buffered
  std::string disk_write = "commit";  // commit or second-use
  std::string redis;  // redis://[USER:PASSWORD@]HOST:PORT[,...]; empty: none
  // Holds the password (overriding the URL's); empty: none.
  std::string redis_password_file;
  std::string redis_prefix = "kvstash:";
  int redis_ttl = 0;                   // seconds, 0 = no expiry
  std::string redis_write = "commit";  // commit or second-use
  // The fleet's tier key (store/object_mac.h): a secret file, else
  // KVSTASH_TIER_KEY; none: the disk tier makes its own, Redis refuses to
  // start unless redis_insecure.
  std::string tier_key_file;
  bool redis_insecure = false;
  std::string tier_codec = "none";  // none, zstd or cachegen (store/kv_codec.h)
  int tier_chunk_blocks = 0;        // blocks per tier object, 0: auto
};

// --model (required unless `required` is false: a nested subcommand may
// take it instead) and --tokenizer.
void AddModelFlags(CLI::App* cmd, ModelOptions* m, bool required = true);
// --threads, --kv-type, --kv-type-k, --kv-type-v.
void AddRunFlags(CLI::App* cmd, RunOptions* r);
// --kv-policy, --kv-ratio, --kv-merge, --kv-every.
void AddKvPolicyFlags(CLI::App* cmd, KvPolicyFlags* f);
void AddTierCodecFlag(CLI::App* cmd, std::string* codec);
void AddTierChunkFlag(CLI::App* cmd, int* blocks);
// Every flag of TierFlags.
void AddTierFlags(CLI::App* cmd, TierFlags* t);
// --json.
void AddJsonFlag(CLI::App* cmd, bool* json);

// An option given in MiB that sets `*bytes`; its default is shown from
// `*bytes`. Values beyond size_t saturate (range checks come after).
CLI::Option* AddMiBOption(CLI::App* cmd, const std::string& name, size_t* bytes,
                          const std::string& help);

}  // namespace kvstash::apps
