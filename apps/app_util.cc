#include "apps/app_util.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <thread>

#include "compress/policy.h"
#include "kernels/attention.h"

namespace kvstash::apps {

void PrintJson(const Json& j) {
  std::cout << j.dump(-1, ' ', false, Json::error_handler_t::replace)
            << std::endl;
}

Json SpreadJson(const bench::Spread& s) {
  return Json{{"median", s.median}, {"min", s.min}, {"max", s.max}};
}

void PrintSpreadLine(const std::string& name, const bench::Spread& s,
                     double scale, const char* unit) {
  std::printf("%-40s %10.3f %s (min %.3f, max %.3f)\n", name.c_str(),
              s.median * scale, unit, s.min * scale, s.max * scale);
}

void PrintProgress(const std::string& line) { std::cerr << line << std::endl; }

Result<std::unique_ptr<Model>> LoadModel(const ModelOptions& options,
                                         WeightLayout layout) {
  if (options.model_path.empty()) {
    return Status::InvalidArgument("--model is required");
  }
  const FileMemory memory =
      options.huge_pages ? FileMemory::kHugePages : FileMemory::kMapped;
  KV_ASSIGN_OR_RETURN(
      std::unique_ptr<Model> model,
      Model::Load(options.model_path, options.tokenizer_path, memory, layout));
  if (memory == FileMemory::kHugePages) {
    KV_ASSIGN_OR_RETURN(size_t huge_bytes, model->file().HugePageBytes());
    std::string line = "--huge-pages: " + HumanBytes(model->file_bytes()) +
                       " read, " + HumanBytes(huge_bytes) + " in huge pages";
    if (huge_bytes == 0) {
      line +=
          " (the kernel gave none: see "
          "/sys/kernel/mm/transparent_hugepage/enabled, which must be "
          "'always' or 'madvise')";
    }
    PrintProgress(line);
  }
  return model;
}

std::string HumanBytes(uint64_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30)) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", bytes / double(1ull << 30));
  } else if (bytes >= (1ull << 20)) {
    std::snprintf(buf, sizeof(buf), "%.2f MiB", bytes / double(1ull << 20));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", bytes / 1024.0);
  }
  return buf;
}

std::unique_ptr<ThreadPool> MakePool(int threads) {
  const unsigned n =
      threads > 0 ? threads : std::max(1u, std::thread::hardware_concurrency());
  return std::make_unique<ThreadPool>(ThreadPool::Options{.num_threads = n});
}

Status ParseKvFormat(const RunOptions& run, kernels::KvFormat* format) {
  // A side's own flag when given, else --kv-type.
  auto parse = [&](const std::string& own, const char* own_flag,
                   kernels::KvType* out) {
    const std::string& value = own.empty() ? run.kv_type : own;
    if (kernels::ParseKvType(value, out)) return Status::OK();
    return Status::InvalidArgument(
        std::string(own.empty() ? "--kv-type" : own_flag) + " '" + value +
        "' is not one of " + kernels::KvTypeNames());
  };
  KV_RETURN_IF_ERROR(parse(run.kv_type_k, "--kv-type-k", &format->k));
  return parse(run.kv_type_v, "--kv-type-v", &format->v);
}

Status ParseWeightType(const std::string& value, WeightMix* mix) {
  if (WeightMix::Parse(value, mix)) return Status::OK();
  std::string message = "--type '";
  message += value;
  message += "' is not one of ";
  message += WeightMix::Names();
  return Status::InvalidArgument(message);
}

Status ParseRunOptions(const RunOptions& run, std::unique_ptr<ThreadPool>* pool,
                       kernels::KvFormat* kv_format) {
  if (run.threads < 0) return Status::InvalidArgument("--threads must be >= 0");
  KV_RETURN_IF_ERROR(ParseKvFormat(run, kv_format));
  *pool = MakePool(run.threads);
  return Status::OK();
}

int Fail(const std::string& message) {
  std::cerr << "kvstash: error: " << message << std::endl;
  return 1;
}

Result<std::unique_ptr<KvCompressor>> MakeKvCompressor(
    const KvPolicyFlags& flags, const ModelConfig& config, ThreadPool* pool) {
  if (flags.policy.empty()) return std::unique_ptr<KvCompressor>();
  Result<std::unique_ptr<KvCompressor>> c =
      compress::MakeCompressor(config, flags, pool);
  // CheckPolicyOptions names the field: "policy: ..." or "ratio: ...".
  if (!c.ok()) return Status::InvalidArgument("--kv-" + c.status().message());
  return c;
}

}  // namespace kvstash::apps
