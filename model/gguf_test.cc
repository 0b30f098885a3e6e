#include "model/gguf.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/dtype.h"
#include "model/gguf_writer.h"

namespace kvstash {
namespace {

using kernels::DType;

std::vector<float> RandomValues(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A small file with every kind of metadata value and a tensor of each type.
std::string SampleImage() {
  GgufWriter w;
  w.SetString("general.architecture", "llama");
  w.SetU32("test.u32", 4000000000u);
  w.SetI32("test.i32", -7);
  w.SetF32("test.f32", 0.25f);
  w.SetBool("test.bool", true);
  const std::vector<std::string_view> strings = {"a", "", "héllo"};
  w.SetStringArray("test.strings", strings);
  const std::vector<float> floats = {1.5f, -2.0f};
  w.SetF32Array("test.floats", floats);
  const std::vector<int32_t> ints = {3, -4, 5};
  w.SetI32Array("test.ints", ints);
  const DType types[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0,
                         DType::kQ4_0};
  for (DType t : types) {
    const std::string name = "t." + std::string(kernels::DTypeName(t));
    EXPECT_TRUE(w.AddTensor(name, {64, 3}, t, RandomValues(192, 1)).ok());
  }
  return w.Serialize();
}

Result<std::unique_ptr<GgufFile>> ParseImage(const std::string& image) {
  return GgufFile::Parse(reinterpret_cast<const uint8_t*>(image.data()),
                         image.size());
}

TEST(GgufTest, RoundTripsMetadataAndTensors) {
  const std::string image = SampleImage();
  auto gguf = ParseImage(image);
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  const GgufFile& f = **gguf;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.GetString("general.architecture").value(), "llama");
  EXPECT_EQ(f.GetU32("test.u32").value(), 4000000000u);
  EXPECT_EQ(f.Find("test.i32")->i, -7);
  EXPECT_FLOAT_EQ(f.GetF32("test.f32").value(), 0.25f);
  EXPECT_TRUE(f.GetBool("test.bool").value());
  EXPECT_EQ(f.GetStringArray("test.strings").value(),
            (std::vector<std::string_view>{"a", "", "héllo"}));
  EXPECT_EQ(f.GetF32Array("test.floats").value(),
            (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(f.GetI32Array("test.ints").value(),
            (std::vector<int32_t>{3, -4, 5}));
  ASSERT_EQ(f.tensors().size(), 5u);
  const std::vector<float> values = RandomValues(192, 1);
  for (const GgufTensor& t : f.tensors()) {
    EXPECT_EQ(t.dims, (std::vector<uint64_t>{64, 3}));
    EXPECT_EQ(t.n_bytes, kernels::RowBytes(t.type, 64) * 3);
    EXPECT_EQ((t.data - reinterpret_cast<const uint8_t*>(image.data())) % 32,
              0);
    std::vector<float> decoded(192);
    for (int r = 0; r < 3; ++r) {
      kernels::DequantizeRow(t.type, t.data + r * kernels::RowBytes(t.type, 64),
                             64, &decoded[r * 64]);
    }
    const float tol = t.type == DType::kF32    ? 0.0f
                      : t.type == DType::kQ4_0 ? 0.6f
                                               : 0.05f;
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_NEAR(decoded[i], values[i], tol) << t.name << " element " << i;
    }
  }
  EXPECT_NE(f.FindTensor("t.q4_0"), nullptr);
  EXPECT_EQ(f.FindTensor("t.missing"), nullptr);
}

TEST(GgufTest, TypedGettersNameTheKey) {
  const std::string image = SampleImage();
  auto gguf = ParseImage(image);
  ASSERT_TRUE(gguf.ok());
  Result<uint32_t> wrong = (*gguf)->GetU32("general.architecture");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("general.architecture"),
            std::string::npos);
  EXPECT_EQ((*gguf)->GetU32("test.i32").status().code(),
            StatusCode::kInvalidArgument);  // negative
  EXPECT_EQ((*gguf)->GetString("no.such.key").status().code(),
            StatusCode::kNotFound);
}

TEST(GgufTest, EveryTruncationIsAnError) {
  const std::string image = SampleImage();
  // Only the padding after the last tensor's data may be cut.
  auto full = ParseImage(image);
  ASSERT_TRUE(full.ok());
  const GgufTensor& last = (*full)->tensors().back();
  const size_t end =
      last.data + last.n_bytes - reinterpret_cast<const uint8_t*>(image.data());
  ASSERT_LE(image.size() - end, 31u);
  for (size_t len = 0; len < end; ++len) {
    auto r =
        GgufFile::Parse(reinterpret_cast<const uint8_t*>(image.data()), len);
    EXPECT_FALSE(r.ok()) << "prefix of " << len << " bytes parsed";
  }
}

TEST(GgufTest, RejectsBadMagicAndVersion) {
  std::string image = SampleImage();
  image[0] = 'X';
  EXPECT_EQ(ParseImage(image).status().code(), StatusCode::kInvalidArgument);
  image = SampleImage();
  image[4] = 1;  // version 1 used 32-bit counts
  EXPECT_EQ(ParseImage(image).status().code(), StatusCode::kNotSupported);
}

// Builds a file with one tensor of `ne0` elements whose type id is
// `ggml_type`.
std::string OneTensorImage(uint32_t ggml_type, uint64_t offset,
                           uint64_t ne0 = 32) {
  std::string out;
  auto put = [&out](auto v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(v));
  };
  put(kGgufMagic);
  put(uint32_t{3});
  put(uint64_t{1});  // tensors
  put(uint64_t{0});  // metadata
  put(uint64_t{6});
  out += "blk.x0";
  put(uint32_t{1});
  put(ne0);
  put(ggml_type);
  put(offset);
  out.resize(64 + ne0 * 4, '\0');
  return out;
}

TEST(GgufTest, UnknownTensorTypeNamesTheTensor) {
  auto r = ParseImage(OneTensorImage(6 /* q5_0 */, 0));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotSupported);
  EXPECT_NE(r.status().message().find("blk.x0"), std::string::npos);
  EXPECT_NE(r.status().message().find("q6_k"), std::string::npos);
  EXPECT_TRUE(ParseImage(OneTensorImage(0, 0)).ok());
}

// ggml's K-quant type ids 12, 13, 14 are Q4_K, Q5_K, Q6_K; their rows must
// be whole 256-element super-blocks.
TEST(GgufTest, KQuantTypeIdsAndSuperBlockRows) {
  const std::pair<uint32_t, DType> ids[] = {
      {12, DType::kQ4_K}, {13, DType::kQ5_K}, {14, DType::kQ6_K}};
  for (const auto& [id, type] : ids) {
    EXPECT_EQ(GgmlTypeId(type), id);
    auto r = ParseImage(OneTensorImage(id, 0, 256));
    ASSERT_TRUE(r.ok()) << id << ": " << r.status().ToString();
    ASSERT_EQ((*r)->tensors().size(), 1u);
    EXPECT_EQ((*r)->tensors()[0].type, type);
    EXPECT_EQ((*r)->tensors()[0].n_bytes, kernels::DTypeBlockBytes(type));
    auto partial = ParseImage(OneTensorImage(id, 0, 96));
    ASSERT_FALSE(partial.ok()) << id;
    EXPECT_NE(partial.status().message().find("blk.x0"), std::string::npos);
    EXPECT_NE(partial.status().message().find("whole number"),
              std::string::npos)
        << partial.status().message();
  }
}

// K-quant tensors written by GgufWriter read back with their type, shape and
// exactly the bytes QuantizeRow makes of each row.
TEST(GgufTest, KQuantTensorsRoundTripThroughTheWriter) {
  constexpr size_t kCols = 512, kRows = 3;
  const std::vector<float> values = RandomValues(kCols * kRows, 5);
  const DType types[] = {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};
  GgufWriter w;
  for (DType t : types) {
    const std::string name = "k." + std::string(kernels::DTypeName(t));
    ASSERT_TRUE(w.AddTensor(name, {kCols, kRows}, t, values).ok()) << name;
    // Streamed rows take the same path.
    ASSERT_TRUE(w.AddTensor(name + ".rows", {kCols, kRows}, t,
                            [&values](size_t begin, size_t end, float* out) {
                              std::copy(values.begin() + begin * kCols,
                                        values.begin() + end * kCols, out);
                            })
                    .ok());
  }
  EXPECT_FALSE(w.AddTensor("k.partial", {kCols / 2 + 32, 1}, DType::kQ4_K,
                           RandomValues(kCols / 2 + 32, 6))
                   .ok());
  const std::string image = w.Serialize();
  auto gguf = ParseImage(image);
  ASSERT_TRUE(gguf.ok()) << gguf.status().ToString();
  for (DType t : types) {
    const size_t row_bytes = kernels::RowBytes(t, kCols);
    std::vector<uint8_t> want(row_bytes * kRows);
    for (size_t r = 0; r < kRows; ++r) {
      kernels::QuantizeRow(t, &values[r * kCols], kCols, &want[r * row_bytes]);
    }
    for (const std::string suffix : {"", ".rows"}) {
      const std::string name =
          "k." + std::string(kernels::DTypeName(t)) + suffix;
      const GgufTensor* tensor = (*gguf)->FindTensor(name);
      ASSERT_NE(tensor, nullptr) << name;
      EXPECT_EQ(tensor->type, t);
      EXPECT_EQ(tensor->dims, (std::vector<uint64_t>{kCols, kRows}));
      ASSERT_EQ(tensor->n_bytes, want.size()) << name;
      EXPECT_TRUE(std::equal(want.begin(), want.end(), tensor->data)) << name;
      // And the bytes decode to the values up to 4-, 5- or 6-bit rounding.
      std::vector<float> decoded(kCols);
      kernels::DequantizeRow(t, tensor->data + row_bytes, kCols,
                             decoded.data());
      const float tol = t == DType::kQ4_K ? 0.5f : 0.25f;
      for (size_t i = 0; i < kCols; ++i) {
        ASSERT_NEAR(decoded[i], values[kCols + i], tol) << name << " " << i;
      }
    }
  }
}

TEST(GgufTest, TensorPastEndOrMisalignedIsCorruption) {
  auto past = ParseImage(OneTensorImage(0, 4096));
  ASSERT_FALSE(past.ok());
  EXPECT_NE(past.status().message().find("past the end"), std::string::npos);
  auto misaligned = ParseImage(OneTensorImage(0, 8));
  ASSERT_FALSE(misaligned.ok());
  EXPECT_NE(misaligned.status().message().find("aligned"), std::string::npos);
}

// A file of one metadata array `key`: `n` elements of `elem`, `data` of
// them written (`data_bytes` bytes of `fill`).
std::string OneArrayImage(const std::string& key, uint32_t elem, uint64_t n,
                          size_t data_bytes, char fill) {
  std::string out;
  auto put = [&out](auto v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(v));
  };
  put(kGgufMagic);
  put(uint32_t{3});
  put(uint64_t{0});
  put(uint64_t{1});
  put(uint64_t(key.size()));
  out += key;
  put(uint32_t{9});  // array
  put(elem);
  put(n);
  out.append(data_bytes, fill);
  return out;
}

TEST(GgufTest, HugeArrayLengthIsRejectedWithoutAllocating) {
  // An array of strings of absurd length.
  auto r = ParseImage(OneArrayImage("big", /*string=*/8, 1ull << 60, 0, 0));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'big'"), std::string::npos);
}

// A hostile 64 MiB metadata array is not copied: its numbers stay in the
// file, decoded on access; nested arrays are capped.
TEST(GgufTest, LargeMetadataArraysAreViewsNotCopies) {
  const std::string image = OneArrayImage("arr", /*u8=*/0, uint64_t{64} << 20,
                                          size_t{64} << 20, char(7));
  auto r = ParseImage(image);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const GgufValue* v = (*r)->Find("arr");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->count, uint64_t{64} << 20);
  EXPECT_TRUE(v->numbers.empty());
  EXPECT_EQ(v->raw.size(), size_t{64} << 20);
  EXPECT_GE(v->raw.data(), reinterpret_cast<const uint8_t*>(image.data()));
  EXPECT_EQ(v->Number(12345), 7.0);

  // kMaxNestedArrays + 1 empty u8 arrays (12 bytes each).
  std::string nested;
  for (uint64_t i = 0; i <= kMaxNestedArrays; ++i) {
    const uint32_t u8 = 0;
    const uint64_t zero = 0;
    nested.append(reinterpret_cast<const char*>(&u8), 4);
    nested.append(reinterpret_cast<const char*>(&zero), 8);
  }
  std::string deep =
      OneArrayImage("arr", /*array=*/9, kMaxNestedArrays + 1, 0, 0);
  deep += nested;
  auto capped = ParseImage(deep);
  ASSERT_FALSE(capped.ok());
  EXPECT_NE(capped.status().message().find("nested arrays"), std::string::npos)
      << capped.status().message();
}

TEST(GgufTest, WriterRejectsBadTensors) {
  GgufWriter w;
  EXPECT_FALSE(w.AddTensor("a", {33}, DType::kQ8_0, RandomValues(33, 2)).ok());
  EXPECT_FALSE(w.AddTensor("b", {4, 2}, DType::kF32, RandomValues(7, 2)).ok());
  EXPECT_TRUE(w.AddTensor("c", {4}, DType::kF32, RandomValues(4, 2)).ok());
  EXPECT_FALSE(w.AddTensor("c", {4}, DType::kF32, RandomValues(4, 2)).ok());
}

TEST(GgufTest, CopyValueKeepsTheType) {
  const std::string image = SampleImage();
  auto src = ParseImage(image);
  ASSERT_TRUE(src.ok());
  GgufWriter w;
  for (const auto& [key, value] : (*src)->metadata()) w.CopyValue(key, value);
  const std::string copy = w.Serialize();
  auto dst = ParseImage(copy);
  ASSERT_TRUE(dst.ok()) << dst.status().ToString();
  for (const auto& [key, value] : (*src)->metadata()) {
    const GgufValue* v = (*dst)->Find(key);
    ASSERT_NE(v, nullptr) << key;
    EXPECT_EQ(v->type, value.type) << key;
    EXPECT_EQ(v->elem_type, value.elem_type) << key;
    EXPECT_EQ(v->u, value.u) << key;
    EXPECT_EQ(v->strings, value.strings) << key;
    ASSERT_EQ(v->count, value.count) << key;
    if (v->type == GgufType::kArray && v->strings.empty() &&
        v->arrays.empty()) {
      for (size_t i = 0; i < v->count; ++i) {
        EXPECT_EQ(v->Number(i), value.Number(i)) << key << " " << i;
      }
    }
  }
}

}  // namespace
}  // namespace kvstash
