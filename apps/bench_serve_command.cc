// `kvstash bench serve`: the prefix-cache and batching benchmark
// (bench/serve_bench.h).
#include <cstdio>
#include <memory>
#include <string>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "bench/serve_bench.h"
#include "bench/svg_plot.h"
#include "compress/policy.h"

namespace kvstash::apps {
namespace {

struct BenchServeCommandOptions {
  ModelOptions model;
  RunOptions run;                  // the pool and bench.kv_format
  bench::ServeBenchOptions bench;  // bound to flags field by field
  KvPolicyFlags kv_policy;         // bench.kv_compression
  bool json = false;
  std::string plot;  // an SVG of TTFT against cached tokens; empty: none
};

// TTFT (median, min-max whiskers) of the cold, partial and warm prompts
// against the tokens each found cached.
Status PlotTtft(const bench::ServeBenchResult& r,
                const bench::ServeBenchOptions& o, const std::string& path) {
  auto point = [](int cached, const bench::Spread& s) {
    return bench::PlotPoint{double(cached), s.median * 1e3, s.min * 1e3,
                            s.max * 1e3};
  };
  bench::PlotSpec spec;
  spec.title = "TTFT of a " + std::to_string(o.prompt_tokens) +
               "-token prompt by cached tokens (" + std::to_string(o.repeat) +
               " runs)";
  spec.x_label = "cached prompt tokens";
  spec.y_label = "time to first token (ms)";
  spec.series = {{"TTFT",
                  {point(0, r.cold_ttft_s),
                   point(r.partial_cached_tokens, r.partial_ttft_s),
                   point(r.warm_cached_tokens, r.warm_ttft_s)}}};
  return bench::WriteSvgPlot(spec, path);
}

int RunBenchServe(const BenchServeCommandOptions& options) {
  std::unique_ptr<ThreadPool> pool;
  bench::ServeBenchOptions o = options.bench;
  if (Status s = ParseRunOptions(options.run, &pool, &o.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  o.kv_compression = options.kv_policy;
  if (!o.kv_compression.policy.empty()) {
    const Status valid = compress::CheckPolicyOptions(o.kv_compression);
    if (!valid.ok()) return Fail("--kv-" + valid.message());
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<bench::ServeBenchResult> r =
      bench::RunServeBench(**model, *pool, o, PrintProgress);
  if (!r.ok()) return Fail(r.status().message());
  if (!options.plot.empty()) {
    if (Status st = PlotTtft(*r, o, options.plot); !st.ok()) {
      return Fail(st.message());
    }
  }
  if (options.json) {
    PrintJson({{"model", options.model.model_path},
               {"threads", pool->NumWorkers()},
               {"prompt_tokens", o.prompt_tokens},
               {"new_tokens", o.new_tokens},
               {"streams", o.streams},
               {"repeat", o.repeat},
               {"cold_ttft_s", SpreadJson(r->cold_ttft_s)},
               {"cold_prompt_s", SpreadJson(r->cold_prompt_s)},
               {"warm_ttft_s", SpreadJson(r->warm_ttft_s)},
               {"warm_prompt_s", SpreadJson(r->warm_prompt_s)},
               {"warm_cached_tokens", r->warm_cached_tokens},
               {"cold_over_warm_ttft", SpreadJson(r->cold_over_warm_ttft)},
               {"partial_ttft_s", SpreadJson(r->partial_ttft_s)},
               {"partial_prompt_s", SpreadJson(r->partial_prompt_s)},
               {"partial_cached_tokens", r->partial_cached_tokens},
               {"kv_policy", o.kv_compression.policy},
               {"kv_ratio", o.kv_compression.ratio},
               {"cold_kv_cache", r->cold_kv_cache},
               {"warm_kv_cache", r->warm_kv_cache},
               {"single_stream_tokens_per_s",
                SpreadJson(r->single_stream_tokens_per_s)},
               {"multi_stream_tokens_per_s",
                SpreadJson(r->multi_stream_tokens_per_s)},
               {"batching_speedup", SpreadJson(r->batching_speedup)},
               {"bookkeeping_share", SpreadJson(r->bookkeeping_share)},
               {"choices", o.choices},
               {"one_choice_s", SpreadJson(r->one_choice_s)},
               {"choices_s", SpreadJson(r->choices_s)},
               {"choices_over_one", SpreadJson(r->choices_over_one)},
               {"prompt_blocks", r->prompt_blocks},
               {"choices_allocations", r->choices_allocations}});
    return 0;
  }
  const auto& line = PrintSpreadLine;
  std::printf("model %s, %zu threads, %d runs\n",
              options.model.model_path.c_str(), pool->NumWorkers(), o.repeat);
  line("cold prompt: TTFT", r->cold_ttft_s, 1e3, "ms");
  line("cold prompt: prompt time", r->cold_prompt_s, 1e3, "ms");
  line("same prompt again: TTFT", r->warm_ttft_s, 1e3, "ms");
  line("same prompt again: prompt time", r->warm_prompt_s, 1e3, "ms");
  line("cold TTFT / warm TTFT", r->cold_over_warm_ttft, 1, "x");
  line("cached + new tokens: TTFT", r->partial_ttft_s, 1e3, "ms");
  line("cached + new tokens: prompt time", r->partial_prompt_s, 1e3, "ms");
  std::printf("%-40s %d and %d of %d\n", "cached tokens (warm, partial)",
              r->warm_cached_tokens, r->partial_cached_tokens, o.prompt_tokens);
  if (!o.kv_compression.policy.empty()) {
    std::printf("%-40s %s %.3g: cold %s, warm %s\n", "kv compression",
                o.kv_compression.policy.c_str(), o.kv_compression.ratio,
                r->cold_kv_cache.c_str(), r->warm_kv_cache.c_str());
  }
  line("decode, 1 stream", r->single_stream_tokens_per_s, 1, "tok/s");
  line("decode, " + std::to_string(o.streams) + " streams (aggregate)",
       r->multi_stream_tokens_per_s, 1, "tok/s");
  line("batching speedup", r->batching_speedup, 1, "x");
  line("bookkeeping share of step time", r->bookkeeping_share, 100, "%");
  line("cold prompt, 1 choice: wall time", r->one_choice_s, 1e3, "ms");
  line("cold prompt, " + std::to_string(o.choices) + " choices: wall time",
       r->choices_s, 1e3, "ms");
  line(std::to_string(o.choices) + " choices / 1 choice", r->choices_over_one,
       1, "x");
  std::printf("%-40s %llu (the prompt's: %d)\n",
              "blocks allocated for the choices",
              static_cast<unsigned long long>(r->choices_allocations),
              r->prompt_blocks);
  return 0;
}

}  // namespace

Command RegisterBenchServe(CLI::App& parent) {
  auto o = std::make_shared<BenchServeCommandOptions>();
  bench::ServeBenchOptions& b = o->bench;
  CLI::App* cmd = parent.add_subcommand(
      "serve",
      "prefix-cache and batching benchmark: cold vs warm TTFT, cached + new "
      "prompt time, 1 vs N decode streams, bookkeeping share");
  AddModelFlags(cmd, &o->model);
  AddRunFlags(cmd, &o->run);
  cmd->add_option("--prompt-tokens", b.prompt_tokens, "long prompt");
  cmd->add_option("--new-tokens", b.new_tokens,
                  "fresh tail after the cached part");
  cmd->add_option("--streams", b.streams, "concurrent decode streams");
  cmd->add_option("--gen-tokens", b.gen_tokens, "tokens per decode stream");
  cmd->add_option("--choices", b.choices,
                  "n of the parallel-sampling phase: a cold prompt with n "
                  "choices against one");
  cmd->add_option("--repeat", b.repeat, "runs");
  cmd->add_option("--plot", o->plot,
                  "also write an SVG chart of TTFT against cached tokens "
                  "(cold, partial, warm) to this file");
  cmd->add_option("--block-tokens", b.block_tokens, "tokens per KV block");
  cmd->add_option("--kv-cache-mb", b.kv_cache_mb, "KV block pool in MiB");
  cmd->add_option("--max-batch-tokens", b.max_batch_tokens,
                  "tokens per forward step");
  AddKvPolicyFlags(cmd, &o->kv_policy);
  AddJsonFlag(cmd, &o->json);
  return {cmd, [o] { return RunBenchServe(*o); }};
}

}  // namespace kvstash::apps
