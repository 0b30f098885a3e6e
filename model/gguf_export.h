// Writes a loaded Model as a GGUF file in the llama.cpp tensor naming, with its
// config and vocabulary as metadata, each weight matrix encoded in the type
// `mix` gives it (one type for all, or the Q4_K_M mixture; norm weights and
// biases stay f32, as llama.cpp writes them). A matrix whose rows are not a
// whole number of its type's blocks (e.g. 172 columns for q8_0) falls back as
// FallbackType says (model/weight_mix.h), as llama.cpp's quantizer does;
// `fallbacks`, when given, receives such tensors. Used by `kvstash convert`,
// by the round-trip tests, and by gen-model.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/dtype.h"
#include "model/model.h"
#include "model/weight_mix.h"

namespace kvstash {

class GgufWriter;

// Writes `general.architecture`, `general.name` = `name`, the alignment and
// every `<arch>.*` key that ModelConfigFromGguf reads back into `config`.
void WriteConfigMetadata(const ModelConfig& config, std::string_view name,
                         GgufWriter* out);

Status ExportGguf(const Model& model, const WeightMix& mix,
                  const std::string& path,
                  std::vector<WeightFallback>* fallbacks = nullptr,
                  ThreadPool* pool = nullptr);

}  // namespace kvstash
