// Helpers shared by the subcommands of apps/: loading the model a command
// names, building its thread pool, printing JSON and byte counts, failing
// with one line on stderr.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/flags.h"
#include "base/status.h"
#include "base/thread_pool.h"
#include "bench/llm_bench.h"
#include "engine/kv_compaction.h"
#include "kernels/dtype.h"
#include "kernels/kv_format.h"
#include "model/model.h"
#include "model/weight_mix.h"

namespace kvstash::apps {

using Json = nlohmann::json;

// Prints `j` on one line of stdout; invalid UTF-8 in strings (a byte token
// cut mid-character) is replaced, never thrown on.
void PrintJson(const Json& j);

// {"median", "min", "max"} of a benchmark figure.
Json SpreadJson(const bench::Spread& s);

// One benchmark row on stdout: "<name> <median*scale> <unit> (min .., max ..)".
void PrintSpreadLine(const std::string& name, const bench::Spread& s,
                     double scale, const char* unit);

// Prints "kvstash: error: <message>" on stderr and returns 1.
int Fail(const std::string& message);

// Benchmark progress lines, to stderr.
void PrintProgress(const std::string& line);

// InvalidArgument when --model is missing; else Model::Load's result, with
// the matrices held as `layout` says.
Result<std::unique_ptr<Model>> LoadModel(
    const ModelOptions& options, WeightLayout layout = WeightLayout::kFastest);

// "1.50 GiB", "12.00 MiB", "3.0 KiB".
std::string HumanBytes(uint64_t bytes);

// A pool of `threads` workers (0: one per core).
std::unique_ptr<ThreadPool> MakePool(int threads);

// The KV types `run` names (--kv-type for both sides, --kv-type-k /
// --kv-type-v overriding one); InvalidArgument naming the flag otherwise.
Status ParseKvFormat(const RunOptions& run, kernels::KvFormat* format);

// --type of convert and gen-model: a weight type for every matrix (f32, f16,
// bf16, q8_0, q4_0, q4_k, q5_k, q6_k) or the q4_k_m mixture
// (WeightMix::Names()); InvalidArgument naming the flag otherwise.
Status ParseWeightType(const std::string& value, WeightMix* mix);
// The --help text of that flag.
inline constexpr const char* kWeightTypeHelp =
    "weight type of every matrix: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, "
    "q6_k; or q4_k_m (llama.cpp's Q4_K_M mixture of q4_k and q6_k)";

// Checks `run` and fills the pool and the KV types it names.
Status ParseRunOptions(const RunOptions& run, std::unique_ptr<ThreadPool>* pool,
                       kernels::KvFormat* kv_format);

// The compressor `flags` name for `config`'s model (scoring on `pool`), or
// null when no policy is named; InvalidArgument naming the flag
// (--kv-policy, --kv-ratio).
Result<std::unique_ptr<KvCompressor>> MakeKvCompressor(
    const KvPolicyFlags& flags, const ModelConfig& config, ThreadPool* pool);

}  // namespace kvstash::apps
