#include "model/gguf_writer.h"

#include <algorithm>
#include <cstring>

#include "base/file.h"

namespace kvstash {
namespace {

constexpr uint32_t kAlignment = 32;

template <typename T>
void Put(std::string* out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out->append(buf, sizeof(T));
}

void PutString(std::string* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s);
}

void PutType(std::string* out, GgufType t) {
  Put<uint32_t>(out, static_cast<uint32_t>(t));
}

// Appends the payload of a value (without its leading type id).
void PutPayload(std::string* out, const GgufValue& v);

void PutScalar(std::string* out, GgufType t, const GgufValue& v, double x) {
  switch (t) {
    case GgufType::kU8:
      Put<uint8_t>(out, static_cast<uint8_t>(x));
      break;
    case GgufType::kI8:
      Put<int8_t>(out, static_cast<int8_t>(x));
      break;
    case GgufType::kU16:
      Put<uint16_t>(out, static_cast<uint16_t>(x));
      break;
    case GgufType::kI16:
      Put<int16_t>(out, static_cast<int16_t>(x));
      break;
    case GgufType::kU32:
      Put<uint32_t>(out, static_cast<uint32_t>(x));
      break;
    case GgufType::kI32:
      Put<int32_t>(out, static_cast<int32_t>(x));
      break;
    case GgufType::kU64:
      Put<uint64_t>(out, static_cast<uint64_t>(x));
      break;
    case GgufType::kI64:
      Put<int64_t>(out, static_cast<int64_t>(x));
      break;
    case GgufType::kBool:
      Put<uint8_t>(out, x != 0);
      break;
    case GgufType::kF32:
      Put<float>(out, static_cast<float>(x));
      break;
    case GgufType::kF64:
      Put<double>(out, x);
      break;
    case GgufType::kString:
      PutString(out, v.str);
      break;
    case GgufType::kArray:
      PutPayload(out, v);
      break;
  }
}

void PutPayload(std::string* out, const GgufValue& v) {
  if (v.type != GgufType::kArray) {
    double x = 0;
    switch (v.type) {
      case GgufType::kF32:
      case GgufType::kF64:
        x = v.f;
        break;
      case GgufType::kU64:
        Put<uint64_t>(out, v.u);
        return;  // exact
      case GgufType::kI64:
        Put<int64_t>(out, v.i);
        return;
      case GgufType::kU8:
      case GgufType::kU16:
      case GgufType::kU32:
      case GgufType::kBool:
        x = static_cast<double>(v.u);
        break;
      default:
        x = static_cast<double>(v.i);
        break;
    }
    PutScalar(out, v.type, v, x);
    return;
  }
  PutType(out, v.elem_type);
  Put<uint64_t>(out, v.count);
  if (v.elem_type == GgufType::kString) {
    for (std::string_view s : v.strings) PutString(out, s);
  } else if (v.elem_type == GgufType::kArray) {
    for (const GgufValue& a : v.arrays) PutPayload(out, a);
  } else {
    for (size_t i = 0; i < v.count; ++i) {
      PutScalar(out, v.elem_type, v, v.Number(i));
    }
  }
}

std::string Encode(const GgufValue& v) {
  std::string out;
  PutType(&out, v.type);
  PutPayload(&out, v);
  return out;
}

GgufValue Scalar(GgufType t) {
  GgufValue v;
  v.type = t;
  return v;
}

GgufValue NumberArray(GgufType elem, std::vector<double> numbers) {
  GgufValue v;
  v.type = GgufType::kArray;
  v.elem_type = elem;
  v.count = numbers.size();
  v.numbers = std::move(numbers);
  return v;
}

}  // namespace

void GgufWriter::SetEncoded(std::string_view key, std::string encoded) {
  for (Entry& e : metadata_) {
    if (e.key == key) {
      e.encoded = std::move(encoded);
      return;
    }
  }
  metadata_.push_back({std::string(key), std::move(encoded)});
}

void GgufWriter::SetU32(std::string_view key, uint32_t x) {
  GgufValue v = Scalar(GgufType::kU32);
  v.u = x;
  SetEncoded(key, Encode(v));
}

void GgufWriter::SetI32(std::string_view key, int32_t x) {
  GgufValue v = Scalar(GgufType::kI32);
  v.i = x;
  SetEncoded(key, Encode(v));
}

void GgufWriter::SetF32(std::string_view key, float x) {
  GgufValue v = Scalar(GgufType::kF32);
  v.f = x;
  SetEncoded(key, Encode(v));
}

void GgufWriter::SetBool(std::string_view key, bool x) {
  GgufValue v = Scalar(GgufType::kBool);
  v.u = x;
  SetEncoded(key, Encode(v));
}

void GgufWriter::SetString(std::string_view key, std::string_view x) {
  GgufValue v = Scalar(GgufType::kString);
  v.str = x;
  SetEncoded(key, Encode(v));
}

void GgufWriter::SetStringArray(std::string_view key,
                                std::span<const std::string_view> x) {
  GgufValue v;
  v.type = GgufType::kArray;
  v.elem_type = GgufType::kString;
  v.count = x.size();
  v.strings.assign(x.begin(), x.end());
  SetEncoded(key, Encode(v));
}

void GgufWriter::SetF32Array(std::string_view key, std::span<const float> x) {
  SetEncoded(key, Encode(NumberArray(GgufType::kF32,
                                     std::vector<double>(x.begin(), x.end()))));
}

void GgufWriter::SetI32Array(std::string_view key, std::span<const int32_t> x) {
  SetEncoded(key, Encode(NumberArray(GgufType::kI32,
                                     std::vector<double>(x.begin(), x.end()))));
}

void GgufWriter::CopyValue(std::string_view key, const GgufValue& v) {
  SetEncoded(key, Encode(v));
}

Status GgufWriter::CheckNewTensor(std::string_view name,
                                  const std::vector<uint64_t>& dims,
                                  kernels::DType type) const {
  const std::string what = "tensor '" + std::string(name) + "'";
  if (dims.empty() || dims.size() > 4) {
    return Status::InvalidArgument(what + ": needs 1 to 4 dimensions");
  }
  for (uint64_t d : dims) {
    if (d == 0) return Status::InvalidArgument(what + ": zero dimension");
  }
  if (dims[0] % kernels::DTypeBlockElems(type) != 0) {
    return Status::InvalidArgument(
        what + ": row of " + std::to_string(dims[0]) +
        " elements is not a whole number of " +
        std::string(kernels::DTypeName(type)) + " blocks");
  }
  for (const Tensor& t : tensors_) {
    if (t.name == name) return Status::InvalidArgument(what + ": duplicate");
  }
  return Status::OK();
}

uint64_t GgufWriter::Tensor::n_bytes() const {
  uint64_t rows = 1;
  for (size_t i = 1; i < dims.size(); ++i) rows *= dims[i];
  return kernels::RowBytes(type, dims[0]) * rows;
}

Status GgufWriter::AddTensor(std::string_view name, std::vector<uint64_t> dims,
                             kernels::DType type,
                             std::span<const float> values) {
  KV_RETURN_IF_ERROR(CheckNewTensor(name, dims, type));
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  if (n != values.size()) {
    return Status::InvalidArgument(
        "tensor '" + std::string(name) + "': dims hold " + std::to_string(n) +
        " elements, got " + std::to_string(values.size()));
  }
  Tensor t{std::string(name), std::move(dims), type, {}, nullptr};
  const size_t row = t.dims[0];
  const size_t row_bytes = kernels::RowBytes(type, row);
  t.data.resize(t.n_bytes());
  for (size_t r = 0; r < n / row; ++r) {
    kernels::QuantizeRow(type, values.data() + r * row, row,
                         t.data.data() + r * row_bytes);
  }
  tensors_.push_back(std::move(t));
  return Status::OK();
}

Status GgufWriter::AddTensor(std::string_view name, std::vector<uint64_t> dims,
                             kernels::DType type, RowSource source) {
  KV_RETURN_IF_ERROR(CheckNewTensor(name, dims, type));
  tensors_.push_back(
      Tensor{std::string(name), std::move(dims), type, {}, std::move(source)});
  return Status::OK();
}

Status GgufWriter::WriteTo(const std::function<Status(std::string_view)>& sink,
                           ThreadPool* pool) const {
  std::string out;
  Put<uint32_t>(&out, kGgufMagic);
  Put<uint32_t>(&out, 3);
  Put<uint64_t>(&out, tensors_.size());
  Put<uint64_t>(&out, metadata_.size());
  for (const Entry& e : metadata_) {
    PutString(&out, e.key);
    out += e.encoded;
  }
  auto aligned = [](uint64_t x) {
    return (x + kAlignment - 1) / kAlignment * kAlignment;
  };
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    PutString(&out, t.name);
    Put<uint32_t>(&out, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) Put<uint64_t>(&out, d);
    Put<uint32_t>(&out, GgmlTypeId(t.type));
    Put<uint64_t>(&out, offset);
    offset = aligned(offset + t.n_bytes());
  }
  out.resize(aligned(out.size()), '\0');
  KV_RETURN_IF_ERROR(sink(out));

  // Deferred tensors are produced in chunks of about 16 MiB of f32 rows.
  constexpr size_t kChunkBytes = 16 << 20;
  std::vector<float> rows;
  std::string encoded;
  for (const Tensor& t : tensors_) {
    if (!t.source) {
      KV_RETURN_IF_ERROR(sink(t.data));
    } else {
      const size_t row = t.dims[0];
      const size_t row_bytes = kernels::RowBytes(t.type, row);
      const size_t n_rows = t.n_bytes() / row_bytes;
      const size_t chunk = std::max<size_t>(1, kChunkBytes / (row * 4));
      for (size_t begin = 0; begin < n_rows; begin += chunk) {
        const size_t end = std::min(n_rows, begin + chunk);
        rows.resize((end - begin) * row);
        encoded.resize((end - begin) * row_bytes);
        // Each task produces and encodes a slice of the chunk's rows.
        auto task = [&](size_t part, size_t n_parts) {
          const size_t lo = begin + (end - begin) * part / n_parts;
          const size_t hi = begin + (end - begin) * (part + 1) / n_parts;
          if (lo == hi) return;
          float* f = rows.data() + (lo - begin) * row;
          t.source(lo, hi, f);
          for (size_t r = lo; r < hi; ++r) {
            kernels::QuantizeRow(t.type, rows.data() + (r - begin) * row, row,
                                 encoded.data() + (r - begin) * row_bytes);
          }
        };
        if (pool != nullptr) {
          const size_t n_parts = pool->NumWorkers() * 4;
          pool->ParallelFor(n_parts,
                            [&](size_t part, size_t) { task(part, n_parts); });
        } else {
          task(0, 1);
        }
        KV_RETURN_IF_ERROR(sink(encoded));
      }
    }
    const size_t pad = aligned(t.n_bytes()) - t.n_bytes();
    if (pad > 0) KV_RETURN_IF_ERROR(sink(std::string(pad, '\0')));
  }
  return Status::OK();
}

std::string GgufWriter::Serialize() const {
  std::string out;
  Status s = WriteTo(
      [&out](std::string_view bytes) {
        out.append(bytes);
        return Status::OK();
      },
      nullptr);
  KV_CHECK(s.ok());  // appending to a string cannot fail
  return out;
}

Status GgufWriter::Write(const std::string& path, ThreadPool* pool) const {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> file,
                      AtomicFileWriter::Create(path));
  KV_RETURN_IF_ERROR(WriteTo(
      [&file](std::string_view bytes) { return file->Append(bytes); }, pool));
  return file->Commit();
}

}  // namespace kvstash
