// The end-to-end model benchmark behind `kvstash bench`: prefill and decode
// speed of a model on the thread pool, with the machine probes (bench/probes.h)
// measured in the same run, so that the report holds ratios that mean
// something on a shared machine:
//   decode:  bytes streamed per second (every weight matrix once per token,
//            plus the K/V read by attention) over the read-bandwidth probe
//            measured right before and after each decode run;
//   prefill: FLOP per second (2 per weight per token, plus attention) over the
//            compute peak of the instruction family the weights use;
//   and, with a baseline KV type, the candidate's speed over the baseline's
//   measured run by run in the same process (compressed KV against f16);
//   with a token eviction policy (a KvCompressor), the depth context is
//   compressed once filled and the uncompressed cache is the baseline: the
//   decode speed-up of eviction, and the compression step's time over the
//   fill's prefill time.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "bench/probes.h"
#include "engine/kv_compaction.h"
#include "kernels/dtype.h"
#include "kernels/kv_format.h"
#include "model/model.h"

namespace kvstash::bench {

struct LlmBenchOptions {
  int prompt_tokens = 512;  // prefill batch (pp)
  int gen_tokens = 128;     // decode steps (tg)
  // Context filled (untimed) before prefill and decode are measured: the
  // prefill covers positions [depth, depth + prompt_tokens), the decode
  // steps positions depth, depth + 1, ... (as llama-bench -d).
  int depth = 0;
  int repeat = 3;               // runs; figures are median and min-max
  kernels::KvFormat kv_format;  // the KV cache's types
  // When set, every run also measures a cache of these types just before
  // the one of kv_format (same model, tokens and machine state), and the
  // result holds the ratios run by run.
  std::optional<kernels::KvFormat> baseline;
  // Null: none. Else it observes the depth fill and evicts tokens of it
  // before prefill and decode are measured; the baseline is then the same KV
  // types uncompressed (unless `baseline` names others). Not owned.
  KvCompressor* compressor = nullptr;
  uint64_t seed = 1;  // random token ids
  size_t probe_bytes = size_t{512} << 20;
};

struct Spread {
  double median = 0, min = 0, max = 0;
};
// Median (the upper one for an even count), min and max of `v` (non-empty).
Spread SpreadOf(std::vector<double> v);

struct LlmBenchResult {
  Spread prefill_tokens_per_s;
  Spread decode_tokens_per_s;
  double weight_bytes_per_token = 0;  // every matrix read once
  double kv_bytes_per_token = 0;      // mean K/V read per decode step
  double kv_bytes_per_position = 0;   // K/V stored per position, all layers
  double kv_cache_bytes = 0;          // the cache the run allocated
  double prefill_flop_per_token = 0;  // mean over the prompt
  // The read-bandwidth probe of each run, bytes/s: the mean of its
  // measurements right before and right after the run's decode.
  Spread read_bandwidth;
  ComputePeak peak;  // probe
  // With LlmBenchOptions::baseline: its figures, and candidate / baseline
  // per run (median and min-max of the runs' ratios).
  Spread baseline_prefill_tokens_per_s, baseline_decode_tokens_per_s;
  Spread prefill_over_baseline, decode_over_baseline;
  kernels::DType weight_type = kernels::DType::kF32;  // of most weight bytes
  // Decode bytes/s over the run's own probe, run by run.
  Spread decode_over_probe;
  // prefill FLOP/s (median) / peak.ops_per_s
  double prefill_peak_ratio = 0;
  // With a compressor: the depth fill's prefill time, the compression step's
  // time, their ratio per run, and the rows kept over the rows filled.
  Spread fill_seconds, compress_seconds, compress_over_fill;
  double kept_fraction = 0;
};

// Called with a line of progress ("prefill run 2/3 ...").
using BenchProgress = std::function<void(const std::string& line)>;

Result<LlmBenchResult> RunLlmBench(const Model& model, ThreadPool& pool,
                                   const LlmBenchOptions& options,
                                   const BenchProgress& progress);

}  // namespace kvstash::bench
