// Model: a loaded Llama-family model ready for the engine: its config, typed
// views of every weight matrix, and its tokenizer. Load() reads either a GGUF
// file (architectures llama, qwen2 and qwen3; the vocabulary comes from its
// metadata) or a llama2.c checkpoint plus its tokenizer.bin, chosen by the
// file's magic.
//
// Weights are read in place from the file as held by the Model (base/file.h),
// but for the matrices WeightLayout::kFastest interleaves at load; small
// vectors (norm weights and biases) stored in a non-f32 type are converted to
// f32 copies. Immutable and thread-safe after
// Load().
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/file.h"
#include "base/hash.h"
#include "base/huge_pages.h"
#include "base/status.h"
#include "kernels/dtype.h"
#include "model/model_config.h"
#include "model/tokenizer.h"

namespace kvstash {

class GgufFile;

// A weight matrix of `rows` rows of `cols` elements in type `type`: `data`
// row after row (row stride kernels::RowBytes(type, cols)), or, when
// `interleaved` is set, only in the form kernels::InterleaveRows writes,
// and `data` is null (see WeightLayout).
struct WeightMatrix {
  kernels::DType type = kernels::DType::kF32;
  const void* data = nullptr;
  int rows = 0;
  int cols = 0;
  const void* interleaved = nullptr;
};

// How Model::Load holds the matrices the engine multiplies by:
//   kAsStored: as the file stores them, in place (for reading them back out:
//     `kvstash convert`);
//   kFastest: matrices of a type this CPU's decode reads faster interleaved
//     (kernels::UsesInterleavedRows: the K-quants with AVX-512 VNNI; rows a
//     multiple of 16) are interleaved into memory of the model's own at
//     load, and the file's pages that held them are given back; the rest
//     stay in place. The token embedding (read row by row) stays as stored.
enum class WeightLayout { kAsStored, kFastest };

struct LayerWeights {
  const float* attn_norm = nullptr;  // [dim]
  WeightMatrix wq;                   // [q_dim][dim]
  WeightMatrix wk;                   // [kv_dim][dim]
  WeightMatrix wv;                   // [kv_dim][dim]
  WeightMatrix wo;                   // [dim][q_dim]
  const float* bq = nullptr;         // [q_dim], qkv_bias only
  const float* bk = nullptr;         // [kv_dim], qkv_bias only
  const float* bv = nullptr;         // [kv_dim], qkv_bias only
  const float* q_norm = nullptr;     // [head_dim], qk_norm only
  const float* k_norm = nullptr;     // [head_dim], qk_norm only
  const float* ffn_norm = nullptr;   // [dim]
  WeightMatrix w_gate;               // [ffn_dim][dim]
  WeightMatrix w_up;                 // [ffn_dim][dim]
  WeightMatrix w_down;               // [dim][ffn_dim]
};

struct ModelWeights {
  WeightMatrix token_embedding;  // [vocab][dim]
  std::vector<LayerWeights> layers;
  const float* output_norm = nullptr;  // [dim]
  WeightMatrix output;  // [vocab][dim]; the token embedding when tied
};

// One stored tensor, for `kvstash info`.
struct TensorSummary {
  std::string name;
  kernels::DType type;
  std::vector<uint64_t> dims;  // ne0 first
  uint64_t bytes;
};

enum class ModelFormat { kGguf, kLlama2c };

class Model {
 public:
  // `tokenizer_path` is required for llama2.c checkpoints and ignored for
  // GGUF. `memory`: how the file's bytes, which the weights are read from
  // in place, are held (base/file.h). Errors name the file and what was
  // wrong.
  static Result<std::unique_ptr<Model>> Load(
      const std::string& path, const std::string& tokenizer_path,
      FileMemory memory = FileMemory::kMapped,
      WeightLayout layout = WeightLayout::kFastest);
  ~Model();

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  ModelFormat format() const { return format_; }
  uint64_t file_bytes() const { return file_bytes_; }
  // The model file as held in memory (FileMemory, HugePageBytes).
  const MappedFile& file() const { return *raw_file_; }
  const std::vector<TensorSummary>& tensors() const { return tensors_; }
  // Bytes of the matrices held interleaved (WeightLayout::kFastest).
  size_t interleaved_bytes() const { return interleaved_bytes_; }
  // The GGUF `general.file_type` (llama.cpp's llama_ftype: what most
  // matrices are, see GgufFileTypeName), when the file has one.
  std::optional<uint32_t> file_type() const { return file_type_; }
  // The GGUF `tokenizer.chat_template` (Jinja text), or "" when absent.
  const std::string& chat_template() const { return chat_template_; }
  // XXH3-128 of the whole model file: names the weights in KV cache keys, so
  // K/V computed by one model are never served to another. Hashed on the
  // first call (one pass over the mapping), then cached; thread-safe.
  Hash128 identity() const;

 private:
  Model() = default;
  Status BindGguf(const GgufFile& gguf);
  Status BindLlama2c(std::span<const uint8_t> data);
  // Returns a pointer to an f32 copy of `n` elements of `type` at `src`
  // (or `src` itself when already f32), owned by the model.
  const float* AsF32(kernels::DType type, const void* src, size_t n);
  // WeightLayout::kFastest: interleaves the matrices that gain from it.
  Status InterleaveWeights();

  ModelConfig config_;
  ModelWeights weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelFormat format_ = ModelFormat::kGguf;
  uint64_t file_bytes_ = 0;
  std::vector<TensorSummary> tensors_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<MappedFile> raw_file_;
  std::vector<std::unique_ptr<float[]>> converted_;
  std::unique_ptr<HugePages> interleaved_;
  size_t interleaved_bytes_ = 0;
  std::string chat_template_;
  std::optional<uint32_t> file_type_;
  mutable std::once_flag identity_once_;
  mutable Hash128 identity_;
};

}  // namespace kvstash
