// Writes a loaded Model as a GGUF file in the llama.cpp tensor naming, with its
// config and vocabulary as metadata, every weight matrix encoded as `type`
// (norm weights and biases stay f32, as llama.cpp writes them). A matrix whose
// rows are not a whole number of quantization blocks (e.g. 172 columns for
// q8_0) falls back to f16, as llama.cpp's quantizer does; `fallbacks`, when
// given, receives the names of such tensors. Used by `kvstash convert`, by the
// round-trip tests, and by gen-model.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/dtype.h"
#include "model/model.h"

namespace kvstash {

class GgufWriter;

// Writes `general.architecture`, `general.name` = `name`, the alignment and
// every `<arch>.*` key that ModelConfigFromGguf reads back into `config`.
void WriteConfigMetadata(const ModelConfig& config, std::string_view name,
                         GgufWriter* out);

Status ExportGguf(const Model& model, kernels::DType type,
                  const std::string& path,
                  std::vector<std::string>* fallbacks = nullptr,
                  ThreadPool* pool = nullptr);

}  // namespace kvstash
