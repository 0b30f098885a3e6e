// `kvstash bench`: prefill and decode speed with the machine's probes
// (bench/llm_bench.h). Its subcommands (serve, tiers, codec, load) have
// files of their own.
#include <cstdio>
#include <memory>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "base/process.h"
#include "bench/llm_bench.h"

namespace kvstash::apps {
namespace {

struct BenchCommandOptions {
  ModelOptions model;
  RunOptions run;  // the pool and bench.kv_format
  // prompt_tokens, gen_tokens, depth and repeat bound to flags.
  bench::LlmBenchOptions bench;
  std::string baseline_kv_type;  // also measure this KV type; empty: none
  KvPolicyFlags kv_policy;       // compress the depth context
  bool json = false;
};

int RunBench(const BenchCommandOptions& options) {
  std::unique_ptr<ThreadPool> pool;
  bench::LlmBenchOptions o = options.bench;
  if (Status s = ParseRunOptions(options.run, &pool, &o.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  if (!options.baseline_kv_type.empty()) {
    kernels::KvType t;
    if (!kernels::ParseKvType(options.baseline_kv_type, &t)) {
      return Fail("--baseline-kv-type '" + options.baseline_kv_type +
                  "' is not one of " + kernels::KvTypeNames());
    }
    o.baseline = kernels::KvFormat{t, t};
  }
  if (options.kv_policy.every != 0) {
    return Fail(
        "--kv-every: bench measures one compression of the --depth context; "
        "compression every N positions runs in generate, eval and serve");
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<std::unique_ptr<KvCompressor>> compressor =
      MakeKvCompressor(options.kv_policy, (*model)->config(), pool.get());
  if (!compressor.ok()) return Fail(compressor.status().message());
  o.compressor = compressor->get();
  // Eviction is measured against the same types uncompressed.
  if (o.compressor != nullptr && !o.baseline) o.baseline = o.kv_format;
  Result<bench::LlmBenchResult> r =
      bench::RunLlmBench(**model, *pool, o, PrintProgress);
  if (!r.ok()) return Fail(r.status().message());
  // VmRSS, not the peak VmHWM, which would count the bandwidth probe's buffer.
  const size_t rss = ResidentBytes();
  Result<size_t> huge_page_bytes = (*model)->file().HugePageBytes();
  if (!huge_page_bytes.ok()) return Fail(huge_page_bytes.status().message());
  const std::string kv_name = kernels::KvFormatName(o.kv_format);
  if (options.json) {
    Json baseline = nullptr;
    if (o.baseline) {
      baseline = {
          {"kv_type", kernels::KvFormatName(*o.baseline)},
          {"prefill_tokens_per_s",
           SpreadJson(r->baseline_prefill_tokens_per_s)},
          {"decode_tokens_per_s", SpreadJson(r->baseline_decode_tokens_per_s)},
          {"prefill_over_baseline", SpreadJson(r->prefill_over_baseline)},
          {"decode_over_baseline", SpreadJson(r->decode_over_baseline)}};
    }
    Json policy = nullptr;
    if (o.compressor != nullptr) {
      policy = {{"kv_policy", options.kv_policy.policy},
                {"kv_ratio", options.kv_policy.ratio},
                {"kv_merge", options.kv_policy.merge},
                {"kv_every", options.kv_policy.every},
                {"kept_fraction", r->kept_fraction},
                {"fill_seconds", SpreadJson(r->fill_seconds)},
                {"compress_seconds", SpreadJson(r->compress_seconds)},
                {"compress_over_fill", SpreadJson(r->compress_over_fill)}};
    }
    PrintJson(
        {{"model", options.model.model_path},
         {"weight_type", kernels::DTypeName(r->weight_type)},
         {"kv_type", kv_name},
         {"kv_type_k", kernels::KvTypeName(o.kv_format.k)},
         {"kv_type_v", kernels::KvTypeName(o.kv_format.v)},
         {"kv_bytes_per_position", r->kv_bytes_per_position},
         {"threads", pool->NumWorkers()},
         {"prompt_tokens", o.prompt_tokens},
         {"gen_tokens", o.gen_tokens},
         {"depth", o.depth},
         {"repeat", o.repeat},
         {"prefill_tokens_per_s", SpreadJson(r->prefill_tokens_per_s)},
         {"decode_tokens_per_s", SpreadJson(r->decode_tokens_per_s)},
         {"decode_bytes_per_token",
          r->weight_bytes_per_token + r->kv_bytes_per_token},
         {"read_bandwidth_gb_s", SpreadJson({r->read_bandwidth.median / 1e9,
                                             r->read_bandwidth.min / 1e9,
                                             r->read_bandwidth.max / 1e9})},
         {"decode_over_probe", SpreadJson(r->decode_over_probe)},
         {"prefill_flop_per_token", r->prefill_flop_per_token},
         {"peak_gops", r->peak.ops_per_s / 1e9},
         {"peak_instruction", r->peak.instruction},
         {"prefill_peak_ratio", r->prefill_peak_ratio},
         {"file_bytes", (*model)->file_bytes()},
         {"file_huge_page_bytes", *huge_page_bytes},
         {"interleaved_bytes", (*model)->interleaved_bytes()},
         {"kv_cache_bytes", r->kv_cache_bytes},
         {"rss_bytes", rss},
         {"baseline", baseline},
         {"compression", policy}});
    return 0;
  }
  std::printf(
      "model %s (%s weights, %s KV), %zu threads\n"
      "prefill pp%d at depth %d: %.1f tok/s (min %.1f, max %.1f)  %.1f "
      "GFLOP/s = %.2f of "
      "%s peak %.1f GOP/s\n"
      "decode  tg%d at depth %d: %.2f tok/s (min %.2f, max %.2f)  %.2f GB/s; "
      "over the read bandwidth probed around each run (%.1f GB/s, min %.1f, "
      "max %.1f): %.2f (min %.2f, max %.2f)\n"
      "memory: RSS %s, file %s, KV cache %s\n",
      options.model.model_path.c_str(),
      std::string(kernels::DTypeName(r->weight_type)).c_str(), kv_name.c_str(),
      pool->NumWorkers(), o.prompt_tokens, o.depth,
      r->prefill_tokens_per_s.median, r->prefill_tokens_per_s.min,
      r->prefill_tokens_per_s.max,
      r->prefill_tokens_per_s.median * r->prefill_flop_per_token / 1e9,
      r->prefill_peak_ratio, r->peak.instruction.c_str(),
      r->peak.ops_per_s / 1e9, o.gen_tokens, o.depth,
      r->decode_tokens_per_s.median, r->decode_tokens_per_s.min,
      r->decode_tokens_per_s.max,
      r->decode_tokens_per_s.median *
          (r->weight_bytes_per_token + r->kv_bytes_per_token) / 1e9,
      r->read_bandwidth.median / 1e9, r->read_bandwidth.min / 1e9,
      r->read_bandwidth.max / 1e9, r->decode_over_probe.median,
      r->decode_over_probe.min, r->decode_over_probe.max,
      HumanBytes(rss).c_str(), HumanBytes((*model)->file_bytes()).c_str(),
      HumanBytes(uint64_t(r->kv_cache_bytes)).c_str());
  if (o.baseline) {
    auto ratio = [](const bench::Spread& s) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.2fx (%.2f-%.2f)", s.median, s.min,
                    s.max);
      return std::string(buf);
    };
    std::printf(
        "baseline %s KV in the same runs: prefill %.1f tok/s, decode %.2f "
        "tok/s; %s / %s: prefill %s, decode %s\n",
        kernels::KvFormatName(*o.baseline).c_str(),
        r->baseline_prefill_tokens_per_s.median,
        r->baseline_decode_tokens_per_s.median, kv_name.c_str(),
        kernels::KvFormatName(*o.baseline).c_str(),
        ratio(r->prefill_over_baseline).c_str(),
        ratio(r->decode_over_baseline).c_str());
  }
  if (o.compressor != nullptr) {
    std::printf(
        "kv policy %s%s at ratio %.3f: kept %.4f of the depth context's "
        "rows; compression %.3f s = %.4f of the fill's prefill (%.2f s) "
        "(min %.4f, max %.4f); the baseline above is the cache "
        "uncompressed\n",
        options.kv_policy.policy.c_str(),
        options.kv_policy.merge ? "+merge" : "", options.kv_policy.ratio,
        r->kept_fraction, r->compress_seconds.median,
        r->compress_over_fill.median, r->fill_seconds.median,
        r->compress_over_fill.min, r->compress_over_fill.max);
  }
  return 0;
}

}  // namespace

Command RegisterBench(CLI::App& parent) {
  auto o = std::make_shared<BenchCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "bench",
      "prefill and decode speed, with memory-bandwidth and compute-peak "
      "probes measured in the same run");
  AddModelFlags(cmd, &o->model, /*required=*/false);
  AddRunFlags(cmd, &o->run);
  AddKvPolicyFlags(cmd, &o->kv_policy);
  cmd->add_option("--prompt-tokens", o->bench.prompt_tokens, "prefill batch");
  cmd->add_option("--gen-tokens", o->bench.gen_tokens, "decode steps");
  cmd->add_option("--depth", o->bench.depth,
                  "context filled before decode is measured");
  cmd->add_option("--repeat", o->bench.repeat, "runs");
  cmd->add_option("--baseline-kv-type", o->baseline_kv_type,
                  "also measure a KV cache of this type (K and V) in each "
                  "run, before the one of --kv-type, and report the ratios "
                  "(none)");
  AddJsonFlag(cmd, &o->json);
  return {cmd, [o] { return RunBench(*o); }};
}

}  // namespace kvstash::apps
