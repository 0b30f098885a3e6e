// `kvstash info`: a model's config, its tensors and their types.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "model/model.h"
#include "model/weight_mix.h"

namespace kvstash::apps {
namespace {

struct InfoCommandOptions {
  ModelOptions model;
};

// "file type: Q4_K - Medium (15)\n" from general.file_type; "" without it.
std::string FileTypeLine(const Model& model) {
  if (!model.file_type()) return "";
  const std::string_view name = GgufFileTypeName(*model.file_type());
  return "file type: " + std::string(name.empty() ? "unknown" : name) + " (" +
         std::to_string(*model.file_type()) + ")\n";
}

int RunInfo(const InfoCommandOptions& options) {
  // Only read: no matrix is interleaved for it.
  Result<std::unique_ptr<Model>> loaded =
      LoadModel(options.model, WeightLayout::kAsStored);
  if (!loaded.ok()) return Fail(loaded.status().message());
  const Model& model = **loaded;
  // Tensor count and bytes per type, and the summary line "types: q4_k 88,
  // q6_k 23, f32 45" (most tensors first).
  std::map<std::string, std::pair<int, uint64_t>> by_type;
  for (const TensorSummary& t : model.tensors()) {
    auto& [count, bytes] = by_type[std::string(kernels::DTypeName(t.type))];
    ++count;
    bytes += t.bytes;
  }
  std::vector<std::pair<std::string, int>> counts;
  for (const auto& [type, cb] : by_type) counts.push_back({type, cb.first});
  std::stable_sort(
      counts.begin(), counts.end(),
      [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string types;
  for (const auto& [type, count] : counts) {
    if (!types.empty()) types += ", ";
    types += type;
    types += ' ';
    types += std::to_string(count);
  }
  std::cout << "file: " << options.model.model_path << " ("
            << HumanBytes(model.file_bytes()) << ", "
            << (model.format() == ModelFormat::kGguf ? "GGUF" : "llama2.c")
            << ")\n"
            << model.config().ToString() << FileTypeLine(model)
            << "tokenizer: " << model.tokenizer().vocab_size()
            << " tokens, bos " << model.tokenizer().bos() << ", eos "
            << model.tokenizer().eos() << "\n"
            << "tensors: " << model.tensors().size() << "\n"
            << "types: " << types << "\n";
  uint64_t params = 0;
  for (const TensorSummary& t : model.tensors()) {
    std::string dims;
    uint64_t n = 1;
    for (uint64_t d : t.dims) {
      dims += (dims.empty() ? "" : " x ") + std::to_string(d);
      n *= d;
    }
    params += n;
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
