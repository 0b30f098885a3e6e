#include "apps/commands.h"

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>

#include "apps/app_util.h"
#include "base/file.h"
#include "base/process.h"
#include "bench/llm_bench.h"
#include "engine/generate.h"
#include "model/gguf_export.h"
#include "model/model.h"
#include "model/random_model.h"

namespace kvstash::apps {

int RunGenerate(const GenerateCommandOptions& options) {
  if (Status s = options.sampling.Validate(); !s.ok()) return Fail(s.message());
  if (options.n_predict < 0) return Fail("--n-predict must be >= 0");
  std::unique_ptr<ThreadPool> pool;
  GenerateOptions gen;
  if (Status s = ParseRunOptions(options.run, &pool, &gen.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  const Tokenizer& tok = (*model)->tokenizer();
  const std::vector<int32_t> prompt = tok.Encode(options.prompt, true);
  if (prompt.empty()) return Fail("the prompt encodes to no tokens");
  const int ctx = (*model)->config().context_length;
  if (int(prompt.size()) + options.n_predict > ctx) {
    std::cerr << "kvstash: warning: " << prompt.size() << " prompt + "
              << options.n_predict << " new tokens exceed the model's "
              << "training context of " << ctx << "\n";
  }

  Result<std::unique_ptr<KvCompressor>> compressor =
      MakeKvCompressor(options.kv_policy, (*model)->config(), pool.get());
  if (!compressor.ok()) return Fail(compressor.status().message());
  if (*compressor != nullptr) {
    const std::string why = KvCompactionSupports(gen.kv_format);
    if (!why.empty()) return Fail("--kv-policy: " + why);
  }
  gen.compressor = compressor->get();
  Transformer transformer(**model, pool.get());
  gen.n_predict = options.n_predict;
  gen.sampling = options.sampling;
  int32_t prev = prompt.back();
  TokenCallback stream = [&](int32_t token) {
    std::cout << tok.DecodeToken(prev, token) << std::flush;
    prev = token;
    return true;
  };
  if (!options.json) std::cout << options.prompt << std::flush;
  Result<GenerateResult> r = Generate(transformer, prompt, gen,
                                      options.json ? TokenCallback() : stream);
  if (!r.ok()) return Fail(r.status().message());
  if (!options.json) {
    std::cout << std::endl;
    std::cerr << "prefill: " << r->prompt_ids.size() << " tokens, "
              << r->prefill_tokens_per_s()
              << " tok/s; decode: " << r->gen_ids.size() << " tokens, "
              << r->decode_tokens_per_s() << " tok/s";
    if (gen.compressor != nullptr) {
      std::cerr << "; " << options.kv_policy.policy << " compression "
                << r->compress_seconds << " s (" << 1 + r->recompressions
                << " times), " << r->kv_blocks_held << " KV blocks held";
    }
    std::cerr << "\n";
    return 0;
  }
  PrintJson({{"prompt_ids", r->prompt_ids},
             {"gen_ids", r->gen_ids},
             {"text", tok.Decode(r->gen_ids, prompt.back())},
             {"prefill_tokens_per_s", r->prefill_tokens_per_s()},
             {"decode_tokens_per_s", r->decode_tokens_per_s()},
             {"compress_seconds", r->compress_seconds},
             {"recompressions", r->recompressions},
             {"kv_blocks_held", r->kv_blocks_held}});
  return 0;
}

int RunPerplexity(const PerplexityCommandOptions& options) {
  if (options.ctx < 2) return Fail("--ctx must be >= 2");
  if (options.windows < 0) return Fail("--windows must be >= 0");
  std::unique_ptr<ThreadPool> pool;
  kernels::KvFormat kv_format;
  if (Status s = ParseRunOptions(options.run, &pool, &kv_format); !s.ok()) {
    return Fail(s.message());
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<std::string> text = ReadFile(options.file);
  if (!text.ok()) return Fail(text.status().message());
  const std::vector<int32_t> ids = (*model)->tokenizer().Encode(*text, false);
  Transformer transformer(**model, pool.get());
  Result<PerplexityResult> r =
      Perplexity(transformer, ids, options.ctx, options.windows, kv_format,
                 [](int done, int total) {
                   std::cerr << "\rperplexity: window " << done << "/" << total
                             << std::flush;
                   if (done == total) std::cerr << "\n";
                 });
  if (!r.ok()) return Fail(r.status().message());
  if (options.json) {
    PrintJson({{"nll", r->nll},
               {"ppl", r->ppl},
               {"top1", r->top1},
               {"tokens", r->tokens},
               {"windows", r->windows},
               {"ctx", options.ctx}});
  } else {
    std::printf(
        "windows %d x %d tokens, %lld predicted: nll %.4f  ppl %.4f  "
        "top1 %.4f\n",
        r->windows, options.ctx, static_cast<long long>(r->tokens), r->nll,
        r->ppl, r->top1);
  }
  return 0;
}

int RunInfo(const InfoCommandOptions& options) {
  Result<std::unique_ptr<Model>> loaded = LoadModel(options.model);
  if (!loaded.ok()) return Fail(loaded.status().message());
  const Model& model = **loaded;
  std::cout << "file: " << options.model.model_path << " ("
            << HumanBytes(model.file_bytes()) << ", "
            << (model.format() == ModelFormat::kGguf ? "GGUF" : "llama2.c")
            << ")\n"
            << model.config().ToString()
            << "tokenizer: " << model.tokenizer().vocab_size()
            << " tokens, bos " << model.tokenizer().bos() << ", eos "
            << model.tokenizer().eos() << "\n"
            << "tensors: " << model.tensors().size() << "\n";
  std::map<std::string, std::pair<int, uint64_t>> by_type;
  uint64_t params = 0;
  for (const TensorSummary& t : model.tensors()) {
    std::string dims;
    uint64_t n = 1;
    for (uint64_t d : t.dims) {
      dims += (dims.empty() ? "" : " x ") + std::to_string(d);
      n *= d;
    }
    params += n;
    auto& [count, bytes] = by_type[std::string(kernels::DTypeName(t.type))];
    ++count;
    bytes += t.bytes;
    std::printf("  %-28s %-5s [%s] %s\n", t.name.c_str(),
                std::string(kernels::DTypeName(t.type)).c_str(), dims.c_str(),
                HumanBytes(t.bytes).c_str());
  }
  for (const auto& [type, cb] : by_type) {
    std::cout << "type " << type << ": " << cb.first << " tensors, "
              << HumanBytes(cb.second) << "\n";
  }
  std::cout << "parameters: " << params << "\n";
  return 0;
}

int RunConvert(const ConvertCommandOptions& options) {
  kernels::DType type;
  if (!kernels::ParseDType(options.type, &type)) {
    return Fail("--type '" + options.type +
                "' is not one of f32, f16, bf16, q8_0, q4_0");
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  std::vector<std::string> fallbacks;
  if (Status s = ExportGguf(**model, type, options.out_path, &fallbacks);
      !s.ok()) {
    return Fail(s.message());
  }
  for (const std::string& name : fallbacks) {
    std::cerr << "kvstash: note: " << name << " stored as f16 (rows are not "
              << "a whole number of " << options.type << " blocks)\n";
  }
  std::cout << "wrote " << options.out_path << " (" << options.type
            << " weights)\n";
  return 0;
}

int RunGenModel(const GenModelCommandOptions& options) {
  RandomModelOptions o;
  if (Status s = ApplyRandomModelPreset(options.preset, &o); !s.ok()) {
    return Fail(s.message());
  }
  if (!kernels::ParseDType(options.type, &o.type)) {
    return Fail("--type '" + options.type +
                "' is not one of f32, f16, bf16, q8_0, q4_0");
  }
  if (options.threads < 0) return Fail("--threads must be >= 0");
  for (auto [value, field] : {std::pair{options.dim, &o.dim},
                              {options.layers, &o.n_layers},
                              {options.heads, &o.n_heads},
                              {options.kv_heads, &o.n_kv_heads},
                              {options.ffn, &o.ffn_dim},
                              {options.ctx, &o.context_length}}) {
    if (value < 0) return Fail("shape flags must be positive");
    if (value > 0) *field = value;
  }
  o.seed = options.seed;
  o.vocab_path = options.vocab_path;
  std::unique_ptr<ThreadPool> pool = MakePool(options.threads);
  const auto start = std::chrono::steady_clock::now();
  if (Status s = WriteRandomModel(o, options.out_path, pool.get()); !s.ok()) {
    return Fail(s.message());
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  Result<std::unique_ptr<MappedFile>> written =
      MappedFile::Open(options.out_path);
  const uint64_t bytes = written.ok() ? (*written)->size() : 0;
  std::printf(
      "wrote %s: %s, dim %d, %d layers, %d/%d heads, ffn %d, %s "
      "weights (random N(0, 0.02); its text is noise) in %.1f s\n",
      options.out_path.c_str(), HumanBytes(bytes).c_str(), o.dim, o.n_layers,
      o.n_heads, o.n_kv_heads, o.ffn_dim, options.type.c_str(), seconds);
  return 0;
}

int RunBench(const BenchCommandOptions& options) {
  std::unique_ptr<ThreadPool> pool;
  bench::LlmBenchOptions o;
  if (Status s = ParseRunOptions(options.run, &pool, &o.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  o.prompt_tokens = options.prompt_tokens;
  o.gen_tokens = options.gen_tokens;
  o.depth = options.depth;
  o.repeat = options.repeat;
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
    PrintJson({{"model", options.model.model_path},
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
               {"read_bandwidth_gb_s", r->read_bandwidth / 1e9},
               {"decode_bandwidth_ratio", r->decode_bandwidth_ratio},
               {"prefill_flop_per_token", r->prefill_flop_per_token},
               {"peak_gops", r->peak.ops_per_s / 1e9},
               {"peak_instruction", r->peak.instruction},
               {"prefill_peak_ratio", r->prefill_peak_ratio},
               {"file_bytes", (*model)->file_bytes()},
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
      "decode  tg%d at depth %d: %.2f tok/s (min %.2f, max %.2f)  %.2f GB/s "
      "= %.2f of read bandwidth %.2f GB/s\n"
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
      r->decode_bandwidth_ratio, r->read_bandwidth / 1e9,
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

}  // namespace kvstash::apps
