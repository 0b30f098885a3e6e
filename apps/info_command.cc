// `kvstash info`: a model's config and tensors.
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>

#include "apps/app_util.h"
#include "apps/commands.h"

namespace kvstash::apps {
namespace {

struct InfoCommandOptions {
  ModelOptions model;
};

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

}  // namespace

Command RegisterInfo(CLI::App& parent) {
  auto o = std::make_shared<InfoCommandOptions>();
  CLI::App* cmd =
      parent.add_subcommand("info", "print a model's config and tensors");
  AddModelFlags(cmd, &o->model);
  return {cmd, [o] { return RunInfo(*o); }};
}

}  // namespace kvstash::apps
