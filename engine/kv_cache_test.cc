#include "engine/kv_cache.h"

#include <gtest/gtest.h>

namespace kvstash {
namespace {

class ContiguousKvCacheTest : public ::testing::TestWithParam<kernels::DType> {};

INSTANTIATE_TEST_SUITE_P(KvTypes, ContiguousKvCacheTest,
                         ::testing::Values(kernels::DType::kF32,
                                           kernels::DType::kF16,
                                           kernels::DType::kBF16),
                         [](const auto& info) {
                           return std::string(kernels::DTypeName(info.param));
                         });

// Reads element d of position p of a run of type t.
float Element(kernels::DType t, const void* base, int p, int hd, int d) {
  float out;
  kernels::DequantizeRow(
      t, static_cast<const uint8_t*>(base) + kernels::RowBytes(t, p * hd + d),
      1, &out);
  return out;
}

TEST_P(ContiguousKvCacheTest, ReadReturnsWrittenPositionsAsOneRun) {
  const kernels::DType t = GetParam();
  const int layers = 2, heads = 3, hd = 4, cap = 5;
  ContiguousKvCache kv(layers, heads, hd, cap, t);
  EXPECT_EQ(kv.capacity(), cap);
  EXPECT_EQ(kv.kv_type(), t);
  EXPECT_EQ(kv.bytes_per_position(),
            2u * layers * heads * kernels::RowBytes(t, hd));
  // Small integers: exact in f32, f16 and bf16.
  auto value = [](int l, int p, int h, int d, bool is_v) {
    return float(l * 64 + p * 8 + h * 2 + d % 2) * (is_v ? -1.0f : 1.0f);
  };
  for (int l = 0; l < layers; ++l) {
    for (int p = 0; p < cap; ++p) {
      std::vector<float> k(heads * hd), v(heads * hd);
      for (int h = 0; h < heads; ++h) {
        for (int d = 0; d < hd; ++d) {
          k[h * hd + d] = value(l, p, h, d, false);
          v[h * hd + d] = value(l, p, h, d, true);
        }
      }
      kv.Write(l, p, k.data(), v.data());
    }
  }
  std::vector<kernels::KvRun> runs;
  for (int l = 0; l < layers; ++l) {
    for (int h = 0; h < heads; ++h) {
      kv.Read(l, h, 4, &runs);
      ASSERT_EQ(runs.size(), 1u);
      ASSERT_EQ(runs[0].n_tokens, 4u);
      for (int p = 0; p < 4; ++p) {
        for (int d = 0; d < hd; ++d) {
          EXPECT_EQ(Element(t, runs[0].k, p, hd, d), value(l, p, h, d, false));
          EXPECT_EQ(Element(t, runs[0].v, p, hd, d), value(l, p, h, d, true));
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvstash
