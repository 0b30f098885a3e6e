// `kvstash convert`: a model as a GGUF of one weight type, or of the q4_k_m
// mixture (model/weight_mix.h).
#include <iostream>
#include <memory>
#include <vector>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "model/gguf_export.h"

namespace kvstash::apps {
namespace {

struct ConvertCommandOptions {
  ModelOptions model;
  std::string type = "f16";  // WeightMix::Names()
  std::string out_path;
  int threads = 0;  // 0: all cores
};

int RunConvert(const ConvertCommandOptions& options) {
  WeightMix mix;
  if (Status s = ParseWeightType(options.type, &mix); !s.ok()) {
    return Fail(s.message());
  }
  if (options.threads < 0) return Fail("--threads must be >= 0");
  // Read back out as stored.
  Result<std::unique_ptr<Model>> model =
      LoadModel(options.model, WeightLayout::kAsStored);
  if (!model.ok()) return Fail(model.status().message());
  std::unique_ptr<ThreadPool> pool = MakePool(options.threads);
  std::vector<WeightFallback> fallbacks;
  if (Status s =
          ExportGguf(**model, mix, options.out_path, &fallbacks, pool.get());
      !s.ok()) {
    return Fail(s.message());
  }
  for (const WeightFallback& f : fallbacks) {
    std::cerr << "kvstash: note: " << FallbackNote(f) << "\n";
  }
  std::cout << "wrote " << options.out_path << " (" << mix.name()
            << " weights)\n";
  return 0;
}

}  // namespace

Command RegisterConvert(CLI::App& parent) {
  auto o = std::make_shared<ConvertCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "convert",
      "write a model (GGUF or llama2.c) as a GGUF of one weight type or the "
      "q4_k_m mixture");
  AddModelFlags(cmd, &o->model);
  cmd->add_option("--type", o->type, kWeightTypeHelp);
  cmd->add_option("--out,-o", o->out_path, "output .gguf path")->required();
  cmd->add_option("--threads,-t", o->threads,
                  "threads encoding the weights, 0 = all");
  return {cmd, [o] { return RunConvert(*o); }};
}

}  // namespace kvstash::apps
