// The subcommands of the `kvstash` binary. Each Options struct is filled by
// CLI11 in main.cc (the only place that reads argv); each Run* returns the
// process exit status and reports any failure as one line on stderr.
#pragma once

#include <cstdint>
#include <string>

#include "bench/load_bench.h"
#include "compress/policy.h"
#include "engine/sampler.h"

namespace kvstash::apps {

struct ModelOptions {
  std::string model_path;
  std::string tokenizer_path;  // llama2.c checkpoints only
};

// How a forward pass runs: threads and the KV cache's types.
struct RunOptions {
  int threads = 0;              // 0: one per core
  std::string kv_type = "f16";  // K and V (kernels/kv_format.h)
  std::string kv_type_k;        // overrides kv_type for K when set
  std::string kv_type_v;        // overrides kv_type for V when set
};

// Token eviction (compress/policy.h): --kv-policy NAME --kv-ratio R
// [--kv-merge] [--kv-every N]. An empty policy: none.
struct KvPolicyFlags : compress::PolicyOptions {
  KvPolicyFlags() { ratio = 0.5; }
};

struct GenerateCommandOptions {
  ModelOptions model;
  RunOptions run;
  std::string prompt;
  int n_predict = 128;
  SamplerOptions sampling;
  bool json = false;
  KvPolicyFlags kv_policy;  // evict prompt tokens after the prefill
};
int RunGenerate(const GenerateCommandOptions& options);

struct PerplexityCommandOptions {
  ModelOptions model;
  RunOptions run;
  std::string file;
  int ctx = 256;
  int windows = 0;  // 0: every full window of the file
  bool json = false;
};
int RunPerplexity(const PerplexityCommandOptions& options);

struct InfoCommandOptions {
  ModelOptions model;
};
int RunInfo(const InfoCommandOptions& options);

struct ConvertCommandOptions {
  ModelOptions model;
  std::string type = "f16";  // f32, f16, bf16, q8_0, q4_0
  std::string out_path;
};
int RunConvert(const ConvertCommandOptions& options);

struct GenModelCommandOptions {
  std::string preset = "110m";
  std::string type = "f16";
  std::string vocab_path;
  std::string out_path;
  uint64_t seed = 0;
  int threads = 0;  // 0: all cores
  // Overrides of the preset's shape; 0 keeps the preset's value.
  int dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, ctx = 0;
};
int RunGenModel(const GenModelCommandOptions& options);

struct BenchCommandOptions {
  ModelOptions model;
  RunOptions run;
  int prompt_tokens = 512;
  int gen_tokens = 128;
  int depth = 0;
  int repeat = 3;
  std::string baseline_kv_type;  // also measure this KV type; empty: none
  KvPolicyFlags kv_policy;       // compress the depth context
  bool json = false;
};
int RunBench(const BenchCommandOptions& options);

// `kvstash eval`: a candidate KV configuration (run.kv_type...) against a
// baseline one on the same model and text (engine/eval.h).
struct EvalCommandOptions {
  ModelOptions model;
  RunOptions run;  // the candidate's KV types
  std::string baseline_kv_type = "f16";
  std::string file;  // teacher-forced text
  int ctx = 256;
  int windows = 32;         // 0: every full window of the file
  std::string gen_prompts;  // one prompt per line; empty: none
  int gen_tokens = 128;
  // Tier codec whose round trip the candidate's blocks pass through
  // (EvalOptions::candidate_blocks); "none": no round trip.
  std::string tier_codec = "none";
  int tier_chunk_blocks = 1;  // blocks per object through the codec
  KvPolicyFlags kv_policy;    // the candidate's token eviction
  int compress_at = 0;        // 0: ctx / 2
  bool sweep = false;         // every policy at every sweep ratio
  bool json = false;
};
int RunEval(const EvalCommandOptions& options);

// The KV tiers below DRAM (apps/tiers.h opens them).
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

// The serving stack: a KV cache pool, the scheduler and the HTTP server.
struct ServeStackOptions {
  RunOptions run;
  std::string host = "127.0.0.1";
  int port = 8080;
  size_t kv_cache_mb = 1024;
  int block_tokens = 16;
  int max_batch_tokens = 512;
  int max_running = 64;
  int max_queue = 256;
  int ctx = 0;  // 0: the model's context length (2048 when it has none)
  // Who may call the server (at most one of these; KVSTASH_API_KEY in the
  // environment is a fourth way to give one key).
  std::string api_key;        // one key, visible in the process list
  std::string api_key_file;   // one key, read from a private file
  std::string api_keys_file;  // `KEY TENANT [admin]` lines, re-read on SIGHUP
  std::vector<std::string> cors_origins;
  bool special_in_content = false;  // message text may spell control tokens
  size_t max_body_mb = 8;
  std::string model_id;  // empty: the model file's name
  TierFlags tiers;
  KvPolicyFlags kv_policy;  // requests' default token eviction
};

struct ServeCommandOptions {
  ModelOptions model;
  ServeStackOptions stack;
};
int RunServe(const ServeCommandOptions& options);

struct DemoCommandOptions {
  std::string vocab_path;  // empty: the shared vocabulary beside the repo
  std::string cache_dir;   // empty: $XDG_CACHE_HOME/kvstash or ~/.cache/kvstash
  int prompt_tokens = 1500;
  ServeStackOptions stack;
};
int RunDemo(const DemoCommandOptions& options);

struct BenchTiersCommandOptions {
  ModelOptions model;
  RunOptions run;
  std::string disk_cache;  // empty: no disk rows
  std::string disk_io = "auto";
  std::string redis;          // empty: no Redis rows
  std::string tier_key_file;  // empty: KVSTASH_TIER_KEY, else a random key
  std::string tier_codec = "none";
  int tier_chunk_blocks = 0;
  int prompt_tokens = 4096;
  int suffix_tokens = 512;
  int gen_tokens = 32;
  int streams = 4;
  int decode_tokens = 128;
  int repeat = 3;
  int block_tokens = 16;
  size_t kv_cache_mb = 1024;
  bool json = false;
};
int RunBenchTiers(const BenchTiersCommandOptions& options);

// `kvstash bench codec`: bench/codec_bench.h.
struct BenchCodecCommandOptions {
  ModelOptions model;
  RunOptions run;
  std::string file;  // text to prefill (BOS first); empty: random token ids
  int prompt_tokens = 1024;
  int object_blocks = 1;
  int block_tokens = 16;
  int repeat = 3;
  bool json = false;
};
int RunBenchCodec(const BenchCodecCommandOptions& options);

// `kvstash cache stats|verify|clear --disk-cache DIR`.
struct CacheCommandOptions {
  std::string action;  // stats, verify, clear or rekey
  std::string dir;
  std::string tier_key_file;  // verify: the servers' key (else the dir's)
  bool remove_bad = false;    // verify: delete the objects that fail
  bool json = false;
};
int RunCache(const CacheCommandOptions& options);

struct BenchServeCommandOptions {
  ModelOptions model;
  RunOptions run;
  int prompt_tokens = 2000;
  int new_tokens = 100;
  int streams = 16;
  int choices = 8;
  int gen_tokens = 64;
  int repeat = 3;
  int block_tokens = 16;
  size_t kv_cache_mb = 1024;
  int max_batch_tokens = 512;
  KvPolicyFlags kv_policy;
  bool json = false;
};
int RunBenchServe(const BenchServeCommandOptions& options);

// `kvstash bench load`: bench/load_bench.h, against a running server.
struct BenchLoadCommandOptions {
  bench::LoadBenchOptions load;  // api_key and text come from the two below
  std::string api_key_file;      // else KVSTASH_API_KEY; neither: no key
  std::string prompts_file;      // words of the prompts; empty: built-in
  bool json = false;
};
// Exits 1 when a well-formed request failed or a bad one was accepted.
int RunBenchLoad(const BenchLoadCommandOptions& options);

// Prints "kvstash: error: <message>" on stderr and returns 1.
int Fail(const std::string& message);

}  // namespace kvstash::apps
