// `kvstash gen-model`: a random-weight Llama GGUF with a real vocabulary,
// for benchmarks (model/random_model.h).
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "base/file.h"
#include "model/random_model.h"

namespace kvstash::apps {
namespace {

// The preset's RandomModelOptions, then these overrides (0 keeps the
// preset's value).
struct GenModelCommandOptions {
  std::string preset = "110m";
  std::string type = "f16";
  std::string vocab_path;
  std::string out_path;
  uint64_t seed = 0;
  int threads = 0;  // 0: all cores
  int dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, ctx = 0;
};

int RunGenModel(const GenModelCommandOptions& options) {
  RandomModelOptions o;
  if (Status s = ApplyRandomModelPreset(options.preset, &o); !s.ok()) {
    return Fail(s.message());
  }
  if (Status s = ParseWeightType(options.type, &o.type); !s.ok()) {
    return Fail(s.message());
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
  std::vector<WeightFallback> fallbacks;
  if (Status s = WriteRandomModel(o, options.out_path, pool.get(), &fallbacks);
      !s.ok()) {
    return Fail(s.message());
  }
  for (const WeightFallback& f : fallbacks) {
    std::fprintf(stderr, "kvstash: note: %s\n", FallbackNote(f).c_str());
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
      o.n_heads, o.n_kv_heads, o.ffn_dim, std::string(o.type.name()).c_str(),
      seconds);
  return 0;
}

}  // namespace

Command RegisterGenModel(CLI::App& parent) {
  auto o = std::make_shared<GenModelCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "gen-model",
      "write a random-weight Llama GGUF with a real vocabulary (benchmarks)");
  cmd->add_option("--preset", o->preset, "110m or 1b");
  cmd->add_option("--type", o->type, kWeightTypeHelp);
  cmd->add_option("--vocab", o->vocab_path,
                  "vocabulary GGUF to copy tokenizer.* metadata from, "
                  "e.g. ../shared/vocab/ggml-vocab-llama-spm.gguf")
      ->required();
  cmd->add_option("--out,-o", o->out_path, "output .gguf path")->required();
  cmd->add_option("--seed", o->seed, "weight seed");
  cmd->add_option("--threads,-t", o->threads, "threads, 0 = all");
  cmd->add_option("--dim", o->dim, "override: embedding width");
  cmd->add_option("--layers", o->layers, "override: layers");
  cmd->add_option("--heads", o->heads, "override: query heads");
  cmd->add_option("--kv-heads", o->kv_heads, "override: KV heads");
  cmd->add_option("--ffn", o->ffn, "override: FFN width");
  cmd->add_option("--ctx", o->ctx, "override: context length (8192)");
  return {cmd, [o] { return RunGenModel(*o); }};
}

}  // namespace kvstash::apps
