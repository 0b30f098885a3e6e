// GgufWriter builds a GGUF v3 file: metadata key/values and tensors, written
// in one pass with 32-byte aligned tensor data. Tensors given as f32 are
// encoded into the requested type (any kernels::DType: f32, f16, bf16, q8_0,
// q4_0, q4_k, q5_k, q6_k) with the kernels' quantizers. A tensor is either
// given whole (encoded at once) or as a RowSource that produces its rows while
// the file is written, so that multi-GB models stream to disk in bounded
// memory. Used by tests, by `kvstash convert` and by `kvstash gen-model`. Not
// thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
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

  // Fills `out` ([row_end - row_begin][ne0] f32) with rows [row_begin,
  // row_end) of a tensor. May be called from several threads at once on
  // disjoint ranges.
  using RowSource =
      std::function<void(size_t row_begin, size_t row_end, float* out)>;

  // Adds tensor `name` whose rows `source` produces during Write/Serialize,
  // encoded as `type`. Same checks as above (except the element count).
  Status AddTensor(std::string_view name, std::vector<uint64_t> dims,
                   kernels::DType type, RowSource source);

  // Writes the file atomically (temporary file, then rename). Rows of
  // deferred tensors are produced and encoded in parallel on `pool` when
  // given.
  Status Write(const std::string& path, ThreadPool* pool = nullptr) const;

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
    std::string data;  // encoded; empty when `source` produces the rows
    RowSource source;
    uint64_t n_bytes() const;
  };
  void SetEncoded(std::string_view key, std::string encoded);
  Status CheckNewTensor(std::string_view name,
                        const std::vector<uint64_t>& dims,
                        kernels::DType type) const;
  // Emits the whole file, in order, to `sink`.
  Status WriteTo(const std::function<Status(std::string_view)>& sink,
                 ThreadPool* pool) const;

  std::vector<Entry> metadata_;
  std::vector<Tensor> tensors_;
};

}  // namespace kvstash
