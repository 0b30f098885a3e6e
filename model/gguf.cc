#include "model/gguf.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace kvstash {
namespace {

using kernels::DType;

// Bounds that keep a hostile header from making us allocate without limit.
constexpr uint64_t kMaxArrayDepth = 4;
constexpr uint64_t kMaxDims = 4;

// A bounds-checked little-endian reader over the mapped image. Every read
// fails with a Corruption status naming `what` when the bytes are not there.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  Status Read(T* out, std::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what);
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::OK();
  }

  Status ReadString(std::string_view* out, std::string_view what) {
    uint64_t len = 0;
    KV_RETURN_IF_ERROR(Read(&len, what));
    if (len > remaining()) {
      return Status::Corruption(std::string(what) + ": string length " +
                                std::to_string(len) + " exceeds the " +
                                std::to_string(remaining()) +
                                " bytes left in the file");
    }
    *out = std::string_view(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return Status::OK();
  }

  // Points *out at the next n bytes and moves past them.
  Status Take(uint64_t n, const uint8_t** out, std::string_view what) {
    if (n > remaining()) return Truncated(what);
    *out = data_ + pos_;
    pos_ += n;
    return Status::OK();
  }

 private:
  Status Truncated(std::string_view what) const {
    return Status::Corruption(std::string(what) + ": file truncated at byte " +
                              std::to_string(pos_));
  }
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Size in bytes of a scalar of type t, 0 for string/array, -1 if invalid.
int ScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    case GgufType::kString:
    case GgufType::kArray:
      return 0;
  }
  return -1;
}

bool IsInteger(GgufType t) {
  switch (t) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kU16:
    case GgufType::kI16:
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kU64:
    case GgufType::kI64:
      return true;
    default:
      return false;
  }
}

bool IsUnsigned(GgufType t) {
  return t == GgufType::kU8 || t == GgufType::kU16 || t == GgufType::kU32 ||
         t == GgufType::kU64 || t == GgufType::kBool;
}

// Decodes a scalar of known valid type from `p` into value->i / u / f.
void DecodeScalar(GgufType t, const uint8_t* p, GgufValue* value) {
  auto load = [p](auto v) {
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  switch (t) {
    case GgufType::kU8:
      value->u = load(uint8_t{});
      break;
    case GgufType::kI8:
      value->i = load(int8_t{});
      break;
    case GgufType::kU16:
      value->u = load(uint16_t{});
      break;
    case GgufType::kI16:
      value->i = load(int16_t{});
      break;
    case GgufType::kU32:
      value->u = load(uint32_t{});
      break;
    case GgufType::kI32:
      value->i = load(int32_t{});
      break;
    case GgufType::kU64:
      value->u = load(uint64_t{});
      break;
    case GgufType::kI64:
      value->i = load(int64_t{});
      break;
    case GgufType::kBool:
      value->u = load(uint8_t{}) != 0;
      break;
    case GgufType::kF32:
      value->f = load(float{});
      break;
    case GgufType::kF64:
      value->f = load(double{});
      break;
    case GgufType::kString:
    case GgufType::kArray:
      return;
  }
  if (IsUnsigned(t)) {
    value->i = static_cast<int64_t>(value->u);
  } else if (IsInteger(t)) {
    value->u = static_cast<uint64_t>(value->i);
  }
}

double ScalarAsDouble(GgufType t, const GgufValue& v) {
  if (t == GgufType::kF32 || t == GgufType::kF64) return v.f;
  if (IsUnsigned(t)) return static_cast<double>(v.u);
  return static_cast<double>(v.i);
}

Status ReadValue(Cursor* cur, GgufType type, const std::string& key, int depth,
                 GgufValue* out);

Status ReadArray(Cursor* cur, const std::string& key, int depth,
                 GgufValue* out) {
  if (depth >= static_cast<int>(kMaxArrayDepth)) {
    return Status::Corruption("key '" + key + "': arrays nested too deeply");
  }
  uint32_t elem = 0;
  KV_RETURN_IF_ERROR(cur->Read(&elem, "key '" + key + "' array type"));
  uint64_t count = 0;
  KV_RETURN_IF_ERROR(cur->Read(&count, "key '" + key + "' array length"));
  out->elem_type = static_cast<GgufType>(elem);
  out->count = count;
  const int size = ScalarSize(out->elem_type);
  if (size < 0) {
    return Status::Corruption("key '" + key + "': unknown array element type " +
                              std::to_string(elem));
  }
  // Every element takes at least one byte (8 for strings and arrays), so a
  // count larger than what is left cannot be honest.
  const uint64_t min_elem = size > 0 ? size : 8;
  if (count > cur->remaining() / min_elem) {
    return Status::Corruption("key '" + key + "': array length " +
                              std::to_string(count) + " exceeds the file");
  }
  if (out->elem_type == GgufType::kString) {
    out->strings.resize(count);
    for (uint64_t i = 0; i < count; ++i) {
      KV_RETURN_IF_ERROR(cur->ReadString(
          &out->strings[i], "key '" + key + "' element " + std::to_string(i)));
    }
  } else if (out->elem_type == GgufType::kArray) {
    if (count > kMaxNestedArrays) {
      return Status::Corruption("key '" + key + "': " + std::to_string(count) +
                                " nested arrays, at most " +
                                std::to_string(kMaxNestedArrays));
    }
    out->arrays.resize(count);
    for (uint64_t i = 0; i < count; ++i) {
      out->arrays[i].type = GgufType::kArray;
      KV_RETURN_IF_ERROR(ReadArray(cur, key, depth + 1, &out->arrays[i]));
    }
  } else {
    const uint8_t* p = nullptr;
    KV_RETURN_IF_ERROR(
        cur->Take(count * size, &p, "key '" + key + "' array data"));
    out->raw = std::span(p, count * size);  // decoded on access
  }
  return Status::OK();
}

Status ReadValue(Cursor* cur, GgufType type, const std::string& key, int depth,
                 GgufValue* out) {
  out->type = type;
  const int size = ScalarSize(type);
  if (size < 0) {
    return Status::Corruption("key '" + key + "': unknown value type " +
                              std::to_string(static_cast<uint32_t>(type)));
  }
  if (type == GgufType::kString) {
    return cur->ReadString(&out->str, "key '" + key + "' value");
  }
  if (type == GgufType::kArray) return ReadArray(cur, key, depth, out);
  const uint8_t* p = nullptr;
  KV_RETURN_IF_ERROR(cur->Take(size, &p, "key '" + key + "' value"));
  DecodeScalar(type, p, out);
  return Status::OK();
}

bool DTypeFromGgml(uint32_t id, DType* out) {
  switch (id) {
    case kGgmlTypeF32:
      *out = DType::kF32;
      return true;
    case kGgmlTypeF16:
      *out = DType::kF16;
      return true;
    case kGgmlTypeBF16:
      *out = DType::kBF16;
      return true;
    case kGgmlTypeQ8_0:
      *out = DType::kQ8_0;
      return true;
    case kGgmlTypeQ4_0:
      *out = DType::kQ4_0;
      return true;
    case kGgmlTypeQ4_K:
      *out = DType::kQ4_K;
      return true;
    case kGgmlTypeQ5_K:
      *out = DType::kQ5_K;
      return true;
    case kGgmlTypeQ6_K:
      *out = DType::kQ6_K;
      return true;
  }
  return false;
}

}  // namespace

std::string_view GgufTypeName(GgufType t) {
  switch (t) {
    case GgufType::kU8:
      return "u8";
    case GgufType::kI8:
      return "i8";
    case GgufType::kU16:
      return "u16";
    case GgufType::kI16:
      return "i16";
    case GgufType::kU32:
      return "u32";
    case GgufType::kI32:
      return "i32";
    case GgufType::kF32:
      return "f32";
    case GgufType::kBool:
      return "bool";
    case GgufType::kString:
      return "string";
    case GgufType::kArray:
      return "array";
    case GgufType::kU64:
      return "u64";
    case GgufType::kI64:
      return "i64";
    case GgufType::kF64:
      return "f64";
  }
  return "invalid";
}

uint32_t GgmlTypeId(kernels::DType t) {
  switch (t) {
    case DType::kF32:
      return kGgmlTypeF32;
    case DType::kF16:
      return kGgmlTypeF16;
    case DType::kBF16:
      return kGgmlTypeBF16;
    case DType::kQ8_0:
      return kGgmlTypeQ8_0;
    case DType::kQ4_0:
      return kGgmlTypeQ4_0;
    case DType::kQ4_K:
      return kGgmlTypeQ4_K;
    case DType::kQ5_K:
      return kGgmlTypeQ5_K;
    case DType::kQ6_K:
      return kGgmlTypeQ6_K;
  }
  KV_CHECK(false);
  return 0;
}

uint64_t GgufTensor::n_elements() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return n;
}

Result<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  Result<std::unique_ptr<GgufFile>> parsed = Parse(file->data(), file->size());
  if (!parsed.ok()) return parsed.status().WithPrefix("gguf '" + path + "'");
  std::unique_ptr<GgufFile> gguf = std::move(parsed).value();
  gguf->file_ = std::move(file);
  gguf->path_ = path;
  return gguf;
}

Result<std::unique_ptr<GgufFile>> GgufFile::Parse(const uint8_t* data,
                                                  size_t size) {
  std::unique_ptr<GgufFile> gguf(new GgufFile());
  Cursor cur(data, size);
  uint32_t magic = 0;
  KV_RETURN_IF_ERROR(cur.Read(&magic, "header magic"));
  if (magic != kGgufMagic) {
    return Status::InvalidArgument("not a GGUF file (bad magic)");
  }
  KV_RETURN_IF_ERROR(cur.Read(&gguf->version_, "header version"));
  if (gguf->version_ != 2 && gguf->version_ != 3) {
    return Status::NotSupported("GGUF version " +
                                std::to_string(gguf->version_) +
                                " (supported: 2, 3)");
  }
  uint64_t n_tensors = 0, n_kv = 0;
  KV_RETURN_IF_ERROR(cur.Read(&n_tensors, "header tensor count"));
  KV_RETURN_IF_ERROR(cur.Read(&n_kv, "header metadata count"));
  // Each key/value takes at least 12 bytes and each tensor info 24.
  if (n_kv > cur.remaining() / 12 || n_tensors > cur.remaining() / 24) {
    return Status::Corruption("header counts (" + std::to_string(n_kv) +
                              " keys, " + std::to_string(n_tensors) +
                              " tensors) exceed the file size");
  }

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string_view key;
    KV_RETURN_IF_ERROR(
        cur.ReadString(&key, "metadata key " + std::to_string(k)));
    std::string key_str(key);
    uint32_t type = 0;
    KV_RETURN_IF_ERROR(cur.Read(&type, "key '" + key_str + "' type"));
    GgufValue value;
    KV_RETURN_IF_ERROR(
        ReadValue(&cur, static_cast<GgufType>(type), key_str, 0, &value));
    if (!gguf->metadata_.emplace(key_str, std::move(value)).second) {
      return Status::Corruption("duplicate metadata key '" + key_str + "'");
    }
  }

  if (const GgufValue* align = gguf->Find("general.alignment")) {
    if (!IsInteger(align->type) || align->u == 0 || align->u > (1u << 16) ||
        (align->u & (align->u - 1)) != 0) {
      return Status::Corruption(
          "key 'general.alignment': must be a power of two up to 65536");
    }
    gguf->alignment_ = static_cast<uint32_t>(align->u);
  }

  gguf->tensors_.resize(n_tensors);
  for (uint64_t t = 0; t < n_tensors; ++t) {
    GgufTensor& tensor = gguf->tensors_[t];
    std::string_view name;
    KV_RETURN_IF_ERROR(
        cur.ReadString(&name, "tensor info " + std::to_string(t) + " name"));
    tensor.name = std::string(name);
    const std::string what = "tensor '" + tensor.name + "'";
    uint32_t n_dims = 0;
    KV_RETURN_IF_ERROR(cur.Read(&n_dims, what + " dimension count"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return Status::Corruption(what + ": " + std::to_string(n_dims) +
                                " dimensions (1 to 4 allowed)");
    }
    tensor.dims.resize(n_dims);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      KV_RETURN_IF_ERROR(cur.Read(&tensor.dims[d], what + " dimensions"));
      if (tensor.dims[d] == 0 ||
          n_elems > std::numeric_limits<uint64_t>::max() / tensor.dims[d]) {
        return Status::Corruption(what + ": invalid dimension " +
                                  std::to_string(tensor.dims[d]));
      }
      n_elems *= tensor.dims[d];
    }
    uint32_t ggml_type = 0;
    KV_RETURN_IF_ERROR(cur.Read(&ggml_type, what + " type"));
    if (!DTypeFromGgml(ggml_type, &tensor.type)) {
      return Status::NotSupported(
          what + ": unsupported tensor type " + std::to_string(ggml_type) +
          " (supported: f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k)");
    }
    KV_RETURN_IF_ERROR(cur.Read(&tensor.offset, what + " offset"));
    if (tensor.dims[0] % kernels::DTypeBlockElems(tensor.type) != 0) {
      return Status::Corruption(
          what + ": row of " + std::to_string(tensor.dims[0]) +
          " elements is not a whole number of " +
          std::string(kernels::DTypeName(tensor.type)) + " blocks");
    }
    if (n_elems > (uint64_t{1} << 48)) {
      return Status::Corruption(what + ": too many elements");
    }
    tensor.n_bytes = kernels::RowBytes(tensor.type, tensor.dims[0]) *
                     (n_elems / tensor.dims[0]);
    if (tensor.offset % gguf->alignment_ != 0) {
      return Status::Corruption(
          what + ": data offset " + std::to_string(tensor.offset) +
          " is not aligned to " + std::to_string(gguf->alignment_));
    }
    if (!gguf->tensor_index_.emplace(tensor.name, t).second) {
      return Status::Corruption("duplicate tensor name '" + tensor.name + "'");
    }
  }

  const uint64_t data_start =
      (cur.pos() + gguf->alignment_ - 1) / gguf->alignment_ * gguf->alignment_;
  for (GgufTensor& tensor : gguf->tensors_) {
    if (data_start > size || tensor.offset > size - data_start ||
        tensor.n_bytes > size - data_start - tensor.offset) {
      return Status::Corruption("tensor '" + tensor.name + "': data [" +
                                std::to_string(tensor.offset) + ", +" +
                                std::to_string(tensor.n_bytes) +
                                ") lies past the end of the file");
    }
    tensor.data = data + data_start + tensor.offset;
  }
  return gguf;
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

Status MissingKey(std::string_view key) {
  return Status::NotFound("metadata key '" + std::string(key) + "' missing");
}

Status WrongType(std::string_view key, const GgufValue& v,
                 std::string_view wanted) {
  std::string got(GgufTypeName(v.type));
  if (v.type == GgufType::kArray) {
    got += " of ";
    got += GgufTypeName(v.elem_type);
  }
  return Status::InvalidArgument("metadata key '" + std::string(key) + "' is " +
                                 got + ", expected " + std::string(wanted));
}

}  // namespace

Result<uint32_t> GgufFile::GetU32(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return MissingKey(key);
  if (!IsInteger(v->type)) return WrongType(key, *v, "an integer");
  const bool negative = !IsUnsigned(v->type) && v->i < 0;
  if (negative || v->u > std::numeric_limits<uint32_t>::max()) {
    return Status::InvalidArgument("metadata key '" + std::string(key) +
                                   "' value out of range for u32");
  }
  return static_cast<uint32_t>(v->u);
}

Result<float> GgufFile::GetF32(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return MissingKey(key);
  if (v->type == GgufType::kF32 || v->type == GgufType::kF64) {
    return static_cast<float>(v->f);
  }
  if (IsInteger(v->type))
    return static_cast<float>(ScalarAsDouble(v->type, *v));
  return WrongType(key, *v, "a number");
}

Result<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return MissingKey(key);
  if (v->type != GgufType::kBool) return WrongType(key, *v, "bool");
  return v->u != 0;
}

Result<std::string_view> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return MissingKey(key);
  if (v->type != GgufType::kString) return WrongType(key, *v, "string");
  return v->str;
}

Result<std::vector<std::string_view>> GgufFile::GetStringArray(
    std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return MissingKey(key);
  if (v->type != GgufType::kArray || v->elem_type != GgufType::kString) {
    return WrongType(key, *v, "array of string");
  }
  return v->strings;
}

double GgufValue::Number(size_t i) const {
  if (raw.empty()) return numbers[i];
  const size_t size = size_t(ScalarSize(elem_type));
  GgufValue element;
  DecodeScalar(elem_type, raw.data() + i * size, &element);
  return ScalarAsDouble(elem_type, element);
}

Result<std::vector<float>> GgufFile::GetF32Array(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return MissingKey(key);
  if (v->type != GgufType::kArray ||
      !(v->elem_type == GgufType::kF32 || v->elem_type == GgufType::kF64 ||
        IsInteger(v->elem_type))) {
    return WrongType(key, *v, "array of numbers");
  }
  std::vector<float> out(v->count);
  for (size_t i = 0; i < out.size(); ++i) out[i] = float(v->Number(i));
  return out;
}

Result<std::vector<int32_t>> GgufFile::GetI32Array(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return MissingKey(key);
  if (v->type != GgufType::kArray || !IsInteger(v->elem_type)) {
    return WrongType(key, *v, "array of integers");
  }
  std::vector<int32_t> out(v->count);
  for (size_t i = 0; i < out.size(); ++i) {
    const double x = v->Number(i);
    if (x < std::numeric_limits<int32_t>::min() ||
        x > std::numeric_limits<int32_t>::max()) {
      return Status::InvalidArgument("metadata key '" + std::string(key) +
                                     "' element " + std::to_string(i) +
                                     " out of range for i32");
    }
    out[i] = static_cast<int32_t>(x);
  }
  return out;
}

}  // namespace kvstash
