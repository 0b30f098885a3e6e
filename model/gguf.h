// GGUF (v2 and v3) reader over a read-only memory map.
//
// GgufFile::Open parses the header, every metadata key/value (all GGUF value
// types, arrays and nested arrays included) and every tensor info, and checks
// every count, length, offset and size against the file before anything is
// used: a truncated or malformed file gives a Status that names the key or
// tensor at fault, never a crash. Tensor data is not copied; GgufTensor::data
// points into the mapping, which lives as long as the GgufFile.
//
// Supported tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K. A
// tensor of any other type is an error naming the tensor and type.
// Thread-safe once opened.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/file.h"
#include "base/status.h"
#include "kernels/dtype.h"

namespace kvstash {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
std::string_view GgufTypeName(GgufType t);

// One metadata value. Scalars are widened: integers (and bool) to `i`/`u`,
// floats to `f`. Strings view the mapped file. Arrays keep their element type;
// numeric elements stay in the mapped file (`raw`, decoded by Number on
// access: a hostile array costs no memory) or, in a value built to be
// written, in `numbers`; strings go into `strings` (views), nested arrays
// into `arrays` (at most kMaxNestedArrays each).
struct GgufValue {
  GgufType type = GgufType::kU8;
  int64_t i = 0;   // signed integers and bool (0/1)
  uint64_t u = 0;  // unsigned integers and bool (0/1)
  double f = 0;    // f32 / f64
  std::string_view str;

  GgufType elem_type = GgufType::kU8;  // arrays only
  uint64_t count = 0;                  // arrays only
  std::span<const uint8_t> raw;  // parsed numeric arrays: the element bytes
  std::vector<double> numbers;   // built numeric arrays
  std::vector<std::string_view> strings;
  std::vector<GgufValue> arrays;

  // Numeric element i (< count) as double (exact for every integer GGUF
  // tokenizers use).
  double Number(size_t i) const;
};

// Nested arrays a metadata array may hold (each is a whole value in memory).
inline constexpr uint64_t kMaxNestedArrays = uint64_t{1} << 16;

// The first four bytes of every GGUF file, "GGUF", read as a little-endian u32.
inline constexpr uint32_t kGgufMagic = 0x46554747;

// ggml tensor type ids used by the supported types.
inline constexpr uint32_t kGgmlTypeF32 = 0;
inline constexpr uint32_t kGgmlTypeF16 = 1;
inline constexpr uint32_t kGgmlTypeQ4_0 = 2;
inline constexpr uint32_t kGgmlTypeQ8_0 = 8;
inline constexpr uint32_t kGgmlTypeQ4_K = 12;
inline constexpr uint32_t kGgmlTypeQ5_K = 13;
inline constexpr uint32_t kGgmlTypeQ6_K = 14;
inline constexpr uint32_t kGgmlTypeBF16 = 30;
uint32_t GgmlTypeId(kernels::DType t);

struct GgufTensor {
  std::string name;
  std::vector<uint64_t> dims;  // ne0 (innermost, contiguous) first
  kernels::DType type = kernels::DType::kF32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping

  uint64_t n_elements() const;
};

class GgufFile {
 public:
  static Result<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Parses an in-memory image (kept alive by the caller for the GgufFile's
  // lifetime). Used by tests and by Open.
  static Result<std::unique_ptr<GgufFile>> Parse(const uint8_t* data,
                                                 size_t size);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::string& path() const { return path_; }

  const std::map<std::string, GgufValue, std::less<>>& metadata() const {
    return metadata_;
  }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  // nullptr when absent.
  const GgufValue* Find(std::string_view key) const;
  const GgufTensor* FindTensor(std::string_view name) const;

  // Typed getters: NotFound when the key is absent, InvalidArgument (naming
  // the key) when it has another type or its value does not fit.
  Result<uint32_t> GetU32(std::string_view key) const;  // any integer type
  Result<float> GetF32(std::string_view key) const;     // f32/f64 or integer
  Result<bool> GetBool(std::string_view key) const;
  Result<std::string_view> GetString(std::string_view key) const;
  Result<std::vector<std::string_view>> GetStringArray(
      std::string_view key) const;
  Result<std::vector<float>> GetF32Array(std::string_view key) const;
  Result<std::vector<int32_t>> GetI32Array(std::string_view key) const;

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> file_;  // null for Parse()d images
  std::string path_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace kvstash
