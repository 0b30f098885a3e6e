// The KV tier benchmark behind `kvstash bench tiers`: what loading a prefix
// from the disk tier or from Redis buys against recomputing it, measured
// in-process through KvManager and the Scheduler, as ratios taken in the
// same run:
//   cold:     a `prompt_tokens` prompt nobody has seen (fresh namespace salt
//             per run): TTFT; its blocks are written behind to the tiers;
//   restore:  a fresh DRAM pool over one tier loads the prefix
//             (KvManager::Prefetch): bytes/s, over a probe of the same medium
//             in the same run (an O_DIRECT sequential read of the disk
//             cache's directory; pipelined GETs of same-size values);
//   warm:     a fresh server over one tier answers the prompt: TTFT, and cold
//             TTFT over it;
//   decode:   `streams` greedy streams of short prompts generate
//             `gen_tokens` each (a block fills every block_tokens tokens and
//             is written behind), with the disk tier on and off, alternating:
//             aggregate tokens/s and on/off.
// Either tier may be absent (empty dir or URL); its rows are then skipped.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "base/thread_pool.h"
#include "bench/llm_bench.h"
#include "kernels/dtype.h"
#include "kernels/kv_format.h"
#include "model/model.h"
#include "store/disk_tier.h"
#include "store/object_mac.h"

namespace kvstash::bench {

struct TierBenchOptions {
  std::string disk_dir;  // empty: no disk rows
  store::DiskTierOptions::DiskIo disk_io =
      store::DiskTierOptions::DiskIo::kAuto;
  std::string redis_url;  // empty: no Redis rows
  // Seals and verifies the objects of both tiers (a benchmark reads back
  // only what it wrote: ObjectAuthenticator::Ephemeral() will do).
  store::ObjectAuthenticator tier_key;
  int prompt_tokens = 4096;
  int gen_tokens = 32;
  // New tokens after the restored prompt for the suffix rows (0: none).
  int suffix_tokens = 512;
  int streams = 4;
  int decode_tokens = 128;  // per stream in the decode phase
  int repeat = 3;
  int block_tokens = 16;
  size_t kv_cache_mb = 1024;
  kernels::KvFormat kv_format;                   // the KV cache's types
  store::Codec tier_codec = store::Codec::kRaw;  // of the tiers' objects
  size_t chunk_blocks = 0;  // blocks per tier object (KvManagerOptions)
  uint64_t seed = 1;
};

// Restores run at once for TierRows::concurrent_over_one.
inline constexpr int kConcurrentRestores = 4;

struct TierRows {
  bool present = false;
  std::string mode;  // "direct+io_uring", "buffered", "standalone ...", ...
  Spread restore_bytes_per_s;
  Spread probe_bytes_per_s;
  Spread restore_over_probe;  // per run
  // Per run: a second restore of the prompt, right after the first (a fresh
  // pool again). The first restore after the cold run's writes makes a
  // redis-server fault in fresh reply buffers (README, "KV tiers"); this
  // one is what a medium that served the prefix recently delivers.
  Spread again_bytes_per_s;
  Spread again_over_probe;
  // Per run: the share of the restore's time that verifying MACs adds over
  // verifying checksums alone (both timed on the restored bytes, one
  // thread, as a tier's Get verifies them): what the MAC costs a restore.
  Spread mac_share_of_restore;
  // Per run: the wall time of kConcurrentRestores restores of the prefix at
  // once (each into its own fresh DRAM pool, one thread each) over the time
  // of one: 1 when loads overlap perfectly, kConcurrentRestores when they
  // serialize (or share a saturated medium).
  Spread concurrent_over_one;
  // The same with the kConcurrentRestores Prefetches into one fresh pool,
  // as requests for one prompt reach a restarted server at once: 1 when the
  // prefix is read once and shared, kConcurrentRestores when each request
  // reads it again.
  Spread shared_over_one;
  Spread warm_ttft_s;
  Spread cold_over_warm_ttft;  // per run
  int warm_cached_tokens = 0;
  // Per run, with suffix_tokens new tokens after the prompt: the TTFT of a
  // fresh server that restores the prompt from this tier and computes the
  // suffix, over the sum of its parts alone: the restore time and the TTFT
  // of the same request with the prompt already in DRAM (another suffix).
  // 1 + overhead when load and compute run one after the other; below 1
  // when they overlap. The server computes the suffix while the prefix
  // loads, layer by layer (SchedulerOptions::layered_loads).
  Spread suffix_ttft_s;
  Spread suffix_over_parts;
  // Per run: the same TTFT on a server that computes the suffix after the
  // whole load (layered_loads off), and layered over that: what layered
  // loading takes off (the two alternate which goes first). Zero when the
  // load could not be layered (a tier codec other than raw).
  Spread suffix_whole_load_ttft_s;
  Spread layered_over_whole_load;
  // Per run: the restore time over that sum of parts: the most that
  // computing the suffix while the prefix loads (layer by layer, as
  // LMCache's layerwise mode) could take off the TTFT, as a share of it.
  Spread restore_share_of_parts;
};

struct TierBenchResult {
  uint64_t restore_bytes = 0;  // KV bytes of the loadable prefix
  Spread cold_ttft_s;
  TierRows disk, redis;
  Spread decode_off_tokens_per_s;
  Spread decode_on_tokens_per_s;
  Spread decode_on_over_off;  // per run
};

Result<TierBenchResult> RunTierBench(const Model& model, ThreadPool& pool,
                                     const TierBenchOptions& options,
                                     const BenchProgress& progress);

}  // namespace kvstash::bench
