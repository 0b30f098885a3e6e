// GgufWriter builds a GGUF v3 file: metadata key/values and tensors, written
// in one pass with 32-byte aligned tensor data. Tensors given as f32 are
// encoded into the requested type (f32, f16, bf16, q8_0, q4_0) with the
// kernels' quantizers. Used by tests (round trips, hostile files) and by
// `kvstash gen-model`. Not thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "kernels/dtype.h"
#include "model/gguf.h"

namespace kvstash {

class GgufWriter {
 public:
  // Metadata setters; a key set twice keeps the last value. Keys keep the
  // order in which they were first set.
  void SetU32(std::string_view key, uint32_t v);
  void SetI32(std::string_view key, int32_t v);
  void SetF32(std::string_view key, float v);
  void SetBool(std::string_view key, bool v);
  void SetString(std::string_view key, std::string_view v);
  void SetStringArray(std::string_view key,
                      std::span<const std::string_view> v);
  void SetF32Array(std::string_view key, std::span<const float> v);
  void SetI32Array(std::string_view key, std::span<const int32_t> v);
  // Copies a value read by GgufFile, with its exact type (e.g. a vocabulary
  // from another model).
  void CopyValue(std::string_view key, const GgufValue& v);

  // Adds tensor `name` with dims (ne0 first) from f32 `values`, encoded as
  // `type`. InvalidArgument if the element count does not match the dims, a
  // row is not a whole number of blocks, or the name is already used.
  Status AddTensor(std::string_view name, std::vector<uint64_t> dims,
                   kernels::DType type, std::span<const float> values);

  // Writes the file (atomically: temporary file, then rename).
  Status Write(const std::string& path) const;

  // The complete file image.
  std::string Serialize() const;

 private:
  struct Entry {
    std::string key;
    std::string encoded;  // type id + value, as in the file
  };
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    kernels::DType type;
    std::string data;
  };
  void SetEncoded(std::string_view key, std::string encoded);

  std::vector<Entry> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace kvstash
