#include "engine/kv_cache.h"

#include <gtest/gtest.h>

namespace kvstash {
namespace {

TEST(ContiguousKvCacheTest, ReadReturnsWrittenPositionsAsOneRun) {
  const int layers = 2, heads = 3, hd = 4, cap = 5;
  ContiguousKvCache kv(layers, heads, hd, cap);
  EXPECT_EQ(kv.capacity(), cap);
  auto value = [](int l, int p, int h, int d, bool is_v) {
    return float(l * 1000 + p * 100 + h * 10 + d) * (is_v ? -1.0f : 1.0f);
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
          EXPECT_EQ(runs[0].k[p * hd + d], value(l, p, h, d, false));
          EXPECT_EQ(runs[0].v[p * hd + d], value(l, p, h, d, true));
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvstash
