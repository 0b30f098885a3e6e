// The serving benchmark behind `kvstash bench serve`: what the paged prefix
// cache and continuous batching buy, measured in-process through the
// Scheduler (no HTTP), as ratios taken in the same run:
//   cold:    a `prompt_tokens` prompt nobody has seen: TTFT and prompt time;
//   warm:    the same prompt again (every full block mapped, the last token
//            computed): TTFT, prompt time, and cold TTFT / warm TTFT;
//   partial: the first prompt_tokens - new_tokens tokens of that prompt
//            followed by new_tokens fresh ones (the cached part mapped, the
//            rest prefilled in one batched chunk);
// With kv_compression all three carry it: a query-agnostic policy's warm
// prompt maps the compressed document (the prompt before its last token).
//   decode:  `streams` concurrent greedy streams against one alone: aggregate
//            tokens/s of the steps where all streams decode, over the single
//            stream's, and the share of step time spent outside the forward
//            pass (scheduler and cache bookkeeping);
//   choices: a cold prompt_tokens prompt with `choices` sampled choices of
//            gen_tokens each (n: one prefill, forked blocks, batched decode)
//            against a cold prompt with one: wall time from submission to
//            the last choice's end, its ratio, and the blocks the choices'
//            request allocated against the prompt's.
// Prompts are random token ids (a different seed per run, and the cache is
// cleared between runs, so "cold" is cold).
#pragma once

#include <cstdint>

#include "base/status.h"
#include "base/thread_pool.h"
#include "bench/llm_bench.h"
#include "compress/policy.h"
#include "kernels/dtype.h"
#include "kernels/kv_format.h"
#include "model/model.h"

namespace kvstash::bench {

struct ServeBenchOptions {
  int prompt_tokens = 2000;
  int new_tokens = 100;
  int streams = 16;
  int choices = 8;
  int gen_tokens = 64;  // per stream in the decode phase
  int repeat = 3;
  int block_tokens = 16;
  int max_batch_tokens = 512;
  size_t kv_cache_mb = 1024;
  kernels::KvFormat kv_format;  // the KV cache's types
  // Token eviction for the cold, warm and partial prompts (empty policy:
  // none). With a query-agnostic policy the warm prompt maps the cold
  // one's compressed document instead of computing and compressing it.
  compress::PolicyOptions kv_compression;
  uint64_t seed = 1;
};

struct ServeBenchResult {
  Spread cold_ttft_s, cold_prompt_s;
  Spread warm_ttft_s, warm_prompt_s;
  Spread partial_ttft_s, partial_prompt_s;
  Spread cold_over_warm_ttft;  // per run
  int warm_cached_tokens = 0;
  int partial_cached_tokens = 0;
  // With kv_compression: what became of the cold and warm prompts'
  // compression (RequestUsage::kv_cache: stored, mapped, per_request ...).
  std::string cold_kv_cache, warm_kv_cache;
  Spread single_stream_tokens_per_s;
  Spread multi_stream_tokens_per_s;  // aggregate over `streams`
  Spread batching_speedup;           // multi / single, per run
  Spread bookkeeping_share;          // 1 - forward / step time, multi phase
  Spread one_choice_s, choices_s;    // wall time, cold prompt
  Spread choices_over_one;           // per run
  int prompt_blocks = 0;             // blocks of one prompt_tokens prompt
  uint64_t choices_allocations = 0;  // blocks the choices' request took
};

Result<ServeBenchResult> RunServeBench(const Model& model, ThreadPool& pool,
                                       const ServeBenchOptions& options,
                                       const BenchProgress& progress);

}  // namespace kvstash::bench
