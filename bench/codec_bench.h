// The tier codec benchmark behind `kvstash bench codec`: each codec of
// store/kv_codec.h timed on real KV blocks (a prompt prefilled by the model),
// one thread, as a tier's writer encodes and a loader decodes them. Reports
// per codec the size of its objects (header + payload) against the pool's
// bytes and against f16 K/V of the same tokens, and encode / decode
// throughput in bytes of KV (pool bytes) per second, median and spread of
// `repeat` runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "bench/llm_bench.h"
#include "kernels/kv_format.h"
#include "model/model.h"
#include "store/kv_codec.h"

namespace kvstash::bench {

struct CodecBenchOptions {
  int prompt_tokens = 1024;  // prefilled; its full blocks are coded
  int object_blocks = 1;     // consecutive blocks per object
  int block_tokens = 16;
  int repeat = 3;
  kernels::KvFormat kv_format;  // the pool's types
  // Token ids to prefill (BOS first is the caller's choice); empty: random
  // ids drawn with `seed`.
  std::vector<int32_t> tokens;
  uint64_t seed = 1;
};

struct CodecRow {
  store::Codec codec = store::Codec::kRaw;
  bool supported = false;      // false: the codec cannot code the KV types
  std::string why;             // when not supported
  double object_over_raw = 0;  // object bytes / pool bytes of its blocks
  double object_over_f16 = 0;  // object bytes / f16 K/V of its tokens
  Spread encode_bytes_per_s;   // pool bytes per second, one thread
  Spread decode_bytes_per_s;
};

struct CodecBenchResult {
  int objects = 0;
  double raw_bytes = 0;        // pool bytes coded per run
  std::vector<CodecRow> rows;  // none, zstd, cachegen
};

Result<CodecBenchResult> RunCodecBench(const Model& model, ThreadPool& pool,
                                       const CodecBenchOptions& options,
                                       const BenchProgress& progress);

}  // namespace kvstash::bench
