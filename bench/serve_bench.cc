#include "bench/serve_bench.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <vector>

#include "bench/requests.h"
#include "kvcache/kv_manager.h"
#include "serve/scheduler.h"
#include "serve/stack.h"

namespace kvstash::bench {
namespace {

Status Validate(const ServeBenchOptions& o, const Model& model) {
  if (o.prompt_tokens < 2 || o.new_tokens < 1 ||
      o.new_tokens >= o.prompt_tokens) {
    return Status::InvalidArgument(
        "bench serve: need prompt_tokens >= 2 and 1 <= new_tokens < "
        "prompt_tokens");
  }
  if (o.streams < 2 || o.gen_tokens < 4 || o.repeat < 1 || o.choices < 2) {
    return Status::InvalidArgument(
        "bench serve: need streams >= 2, gen_tokens >= 4, repeat >= 1, "
        "choices >= 2");
  }
  if (o.prompt_tokens + 1 > model.config().context_length &&
      model.config().context_length > 0) {
    return Status::InvalidArgument(
        "bench serve: prompt_tokens exceeds the model's context of " +
        std::to_string(model.config().context_length));
  }
  return Status::OK();
}

}  // namespace

Result<ServeBenchResult> RunServeBench(const Model& model, ThreadPool& pool,
                                       const ServeBenchOptions& options,
                                       const BenchProgress& progress) {
  KV_RETURN_IF_ERROR(Validate(options, model));
  ServingStackOptions so;
  so.http = false;  // driven in-process through the Scheduler
  so.kv.layout.block_tokens = options.block_tokens;
  so.kv.layout.kv = options.kv_format;
  so.kv.capacity_bytes = options.kv_cache_mb << 20;
  so.scheduler.max_batch_tokens = options.max_batch_tokens;
  so.scheduler.max_running =
      std::min(options.max_batch_tokens,
               std::max({64, options.streams, options.choices}));
  so.scheduler.context =
      options.prompt_tokens + std::max(32, options.gen_tokens) + 1;
  KV_ASSIGN_OR_RETURN(std::unique_ptr<ServingStack> stack,
                      ServingStack::Create(model, &pool, so));
  kvcache::KvManager* kv = &stack->kv();
  Scheduler* scheduler = &stack->scheduler();

  std::vector<double> cold_ttft, cold_prompt, warm_ttft, warm_prompt,
      partial_ttft, partial_prompt, cold_over_warm, single, multi, speedup,
      bookkeeping, one_choice, choices, choices_over_one;
  ServeBenchResult r;
  for (int run = 0; run < options.repeat; ++run) {
    const std::string tag =
        "run " + std::to_string(run + 1) + "/" + std::to_string(options.repeat);
    kv->Clear();
    Prompts prompts(model, options.seed + run);
    const std::vector<int32_t> prompt = prompts.Random(options.prompt_tokens);
    auto first_token = [&](std::vector<int32_t> tokens) {
      GenerationRequest g = Greedy(std::move(tokens), 1);
      g.kv_compression = options.kv_compression;
      return RunOne(*scheduler, std::move(g));
    };
    KV_ASSIGN_OR_RETURN(Run cold, first_token(prompt));
    KV_ASSIGN_OR_RETURN(Run warm, first_token(prompt));
    std::vector<int32_t> partial(prompt.begin(),
                                 prompt.end() - options.new_tokens);
    const std::vector<int32_t> fresh = prompts.Random(options.new_tokens + 1);
    partial.insert(partial.end(), fresh.begin() + 1, fresh.end());
    KV_ASSIGN_OR_RETURN(Run part, first_token(partial));
    cold_ttft.push_back(cold.ttft());
    cold_prompt.push_back(cold.finish.prompt_seconds);
    warm_ttft.push_back(warm.ttft());
    warm_prompt.push_back(warm.finish.prompt_seconds);
    partial_ttft.push_back(part.ttft());
    partial_prompt.push_back(part.finish.prompt_seconds);
    cold_over_warm.push_back(cold.ttft() / warm.ttft());
    r.warm_cached_tokens = warm.finish.usage.cached_tokens;
    r.partial_cached_tokens = part.finish.usage.cached_tokens;
    r.cold_kv_cache = cold.finish.usage.kv_cache;
    r.warm_kv_cache = warm.finish.usage.kv_cache;
    progress(tag + ": cold TTFT " + std::to_string(cold.ttft()) + " s, warm " +
             std::to_string(warm.ttft()) + " s, partial " +
             std::to_string(part.ttft()) + " s");

    KV_ASSIGN_OR_RETURN(
        Run alone,
        RunOne(*scheduler, Greedy(prompts.Random(32), options.gen_tokens)));
    const double alone_rate =
        (alone.token_times.size() - 1) /
        Seconds(alone.token_times.front(), alone.token_times.back());
    const SchedulerStats before = scheduler->Stats();
    std::vector<std::shared_ptr<RequestHandle>> handles;
    for (int s = 0; s < options.streams; ++s) {
      KV_ASSIGN_OR_RETURN(
          std::shared_ptr<RequestHandle> h,
          scheduler->Submit(Greedy(prompts.Random(32), options.gen_tokens)));
      handles.push_back(std::move(h));
    }
    std::vector<Run> streams;
    for (auto& h : handles) {
      Run s;
      RequestEvent ev;
      while (h->Next(&ev, std::chrono::minutes(10))) {
        if (ev.kind == RequestEvent::Kind::kFinish) break;
        s.token_times.push_back(ev.time);
      }
      if (ev.kind != RequestEvent::Kind::kFinish ||
          ev.finish != RequestEnd::kLength) {
        return Status::Internal("bench: a decode stream did not complete");
      }
      streams.push_back(std::move(s));
    }
    const SchedulerStats after = scheduler->Stats();
    const double multi_rate = AggregateDecodeRate(streams);
    const double step = after.step_seconds - before.step_seconds;
    const double forward = after.forward_seconds - before.forward_seconds;
    single.push_back(alone_rate);
    multi.push_back(multi_rate);
    speedup.push_back(multi_rate / alone_rate);
    bookkeeping.push_back(step > 0 ? 1 - forward / step : 0);
    progress(tag + ": decode 1 stream " + std::to_string(alone_rate) +
             " tok/s, " + std::to_string(options.streams) + " streams " +
             std::to_string(multi_rate) + " tok/s");

    // Parallel sampling: cold prompts, one choice and then n.
    auto sampled = [&](int n) -> Result<double> {
      GenerationRequest g =
          Greedy(prompts.Random(options.prompt_tokens), options.gen_tokens);
      g.sampling.temperature = 1.0f;
      g.sampling.seed = options.seed + uint64_t(run);
      g.n = n;
      const auto start = std::chrono::steady_clock::now();
      KV_ASSIGN_OR_RETURN(std::shared_ptr<RequestHandle> h,
                          scheduler->Submit(std::move(g)));
      int finished = 0;
      RequestEvent ev;
      while (finished < n && h->Next(&ev, std::chrono::minutes(10))) {
        if (ev.kind != RequestEvent::Kind::kFinish) continue;
        if (ev.finish != RequestEnd::kLength) {
          return Status::Internal("bench: a choice did not complete");
        }
        ++finished;
      }
      if (finished < n) return Status::Internal("bench: choices timed out");
      return Seconds(start, std::chrono::steady_clock::now());
    };
    KV_ASSIGN_OR_RETURN(const double one, sampled(1));
    const uint64_t allocations_before = kv->Stats().allocations;
    KV_ASSIGN_OR_RETURN(const double many, sampled(options.choices));
    r.choices_allocations = kv->Stats().allocations - allocations_before;
    r.prompt_blocks = (options.prompt_tokens + options.block_tokens - 1) /
                      options.block_tokens;
    one_choice.push_back(one);
    choices.push_back(many);
    choices_over_one.push_back(many / one);
    progress(tag + ": 1 choice " + std::to_string(one) + " s, " +
             std::to_string(options.choices) + " choices " +
             std::to_string(many) + " s");
  }
  r.cold_ttft_s = SpreadOf(cold_ttft);
  r.cold_prompt_s = SpreadOf(cold_prompt);
  r.warm_ttft_s = SpreadOf(warm_ttft);
  r.warm_prompt_s = SpreadOf(warm_prompt);
  r.partial_ttft_s = SpreadOf(partial_ttft);
  r.partial_prompt_s = SpreadOf(partial_prompt);
  r.cold_over_warm_ttft = SpreadOf(cold_over_warm);
  r.single_stream_tokens_per_s = SpreadOf(single);
  r.multi_stream_tokens_per_s = SpreadOf(multi);
  r.batching_speedup = SpreadOf(speedup);
  r.bookkeeping_share = SpreadOf(bookkeeping);
  r.one_choice_s = SpreadOf(one_choice);
  r.choices_s = SpreadOf(choices);
  r.choices_over_one = SpreadOf(choices_over_one);
  return r;
}

}  // namespace kvstash::bench
