// `kvstash convert`: a model as a GGUF of one weight type.
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
  std::string type = "f16";  // f32, f16, bf16, q8_0, q4_0
  std::string out_path;
};

int RunConvert(const ConvertCommandOptions& options) {
  kernels::DType type;
  if (Status s = ParseWeightType(options.type, &type); !s.ok()) {
    return Fail(s.message());
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

}  // namespace

Command RegisterConvert(CLI::App& parent) {
  auto o = std::make_shared<ConvertCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "convert",
      "write a model (GGUF or llama2.c) as a GGUF of one weight type");
  AddModelFlags(cmd, &o->model);
  cmd->add_option("--type", o->type, "weight type: f32, f16, bf16, q8_0, q4_0");
  cmd->add_option("--out,-o", o->out_path, "output .gguf path")->required();
  return {cmd, [o] { return RunConvert(*o); }};
}

}  // namespace kvstash::apps
