#include "model/weight_mix.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvstash {
namespace {

using kernels::DType;

TEST(WeightMixTest, ParsesTypesAndTheQ4KMMixture) {
  WeightMix mix;
  EXPECT_EQ(mix, WeightMix(DType::kF16));  // the default
  for (const char* name :
       {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"}) {
    ASSERT_TRUE(WeightMix::Parse(name, &mix)) << name;
    EXPECT_EQ(mix.kind(), WeightMix::Kind::kUniform);
    EXPECT_EQ(mix.name(), name);
  }
  ASSERT_TRUE(WeightMix::Parse("q4_k_m", &mix));
  EXPECT_EQ(mix, WeightMix::Q4_K_M());
  EXPECT_EQ(mix.name(), "q4_k_m");
  ASSERT_TRUE(WeightMix::Parse("Q6_K", &mix));  // llama.cpp's spelling
  EXPECT_EQ(mix, WeightMix(DType::kQ6_K));
  for (const char* bad : {"", "q4_k_s", "q5_0", "q4_k_m "}) {
    EXPECT_FALSE(WeightMix::Parse(bad, &mix)) << bad;
  }
  EXPECT_NE(WeightMix::Names().find("q4_k_m"), std::string_view::npos);
}

// llama-quantize's use_more_bits: the first and last eighth of the layers and
// every third layer in between.
TEST(WeightMixTest, UseMoreBitsFollowsLlamaQuantize) {
  auto layers = [](int n) {
    std::vector<int> out;
    for (int l = 0; l < n; ++l) {
      if (UseMoreBits(l, n)) out.push_back(l);
    }
    return out;
  };
  EXPECT_EQ(layers(4), (std::vector<int>{2, 3}));
  EXPECT_EQ(layers(8), (std::vector<int>{0, 3, 6, 7}));
  // Llama 2 7B's 32 layers: 0-3, 28-31 and 6, 9, ..., 27.
  EXPECT_EQ(layers(32), (std::vector<int>{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24,
                                          27, 28, 29, 30, 31}));
}

TEST(WeightMixTest, Q4KMChoosesPerTensor) {
  const WeightMix m = WeightMix::Q4_K_M();
  const int n = 8;  // more bits on layers 0, 3, 6, 7
  EXPECT_EQ(m.Wanted("output.weight", n, false), DType::kQ6_K);
  EXPECT_EQ(m.Wanted("token_embd.weight", n, false), DType::kQ4_K);
  // Tied: the embedding is the output matrix, and gets its type.
  EXPECT_EQ(m.Wanted("token_embd.weight", n, true), DType::kQ6_K);
  for (int l = 0; l < n; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const DType more = UseMoreBits(l, n) ? DType::kQ6_K : DType::kQ4_K;
    EXPECT_EQ(m.Wanted(b + "attn_v.weight", n, true), more) << l;
    EXPECT_EQ(m.Wanted(b + "ffn_down.weight", n, true), more) << l;
    for (const char* other :
         {"attn_q.weight", "attn_k.weight", "attn_output.weight",
          "ffn_gate.weight", "ffn_up.weight"}) {
      EXPECT_EQ(m.Wanted(b + other, n, true), DType::kQ4_K) << b << other;
    }
  }
  EXPECT_EQ(m.Wanted("blk.3.attn_v.weight", n, false), DType::kQ6_K);
  EXPECT_EQ(m.Wanted("blk.1.attn_v.weight", n, false), DType::kQ4_K);
  // Names that are not "blk.N." are plain matrices.
  EXPECT_EQ(m.Wanted("blk.attn_v.weight", n, false), DType::kQ4_K);
  EXPECT_EQ(m.Wanted("blkx.3.attn_v.weight", n, false), DType::kQ4_K);
}

TEST(WeightMixTest, UniformGivesEveryMatrixItsType) {
  const WeightMix m(DType::kQ5_K);
  for (const char* name : {"output.weight", "token_embd.weight",
                           "blk.0.attn_v.weight", "blk.7.ffn_down.weight"}) {
    EXPECT_EQ(m.Wanted(name, 8, true), DType::kQ5_K) << name;
  }
}

// Rows that are not whole blocks: K-quants fall back to q8_0 (llama-quantize
// uses q5_0 / q5_1 / q8_0; kvstash has no q5_0 / q5_1), then f16.
TEST(WeightMixTest, FallbackPerTensor) {
  EXPECT_EQ(FallbackType(DType::kQ4_K, 512), DType::kQ4_K);
  EXPECT_EQ(FallbackType(DType::kQ4_K, 320), DType::kQ8_0);
  EXPECT_EQ(FallbackType(DType::kQ5_K, 64), DType::kQ8_0);
  EXPECT_EQ(FallbackType(DType::kQ6_K, 896), DType::kQ8_0);
  EXPECT_EQ(FallbackType(DType::kQ6_K, 172), DType::kF16);
  EXPECT_EQ(FallbackType(DType::kQ8_0, 172), DType::kF16);
  EXPECT_EQ(FallbackType(DType::kQ4_0, 96), DType::kQ4_0);
  EXPECT_EQ(FallbackType(DType::kBF16, 7), DType::kBF16);

  const WeightMix::Choice c =
      WeightMix::Q4_K_M().TypeOf("blk.0.ffn_down.weight", 4, true, 320);
  EXPECT_EQ(c.wanted, DType::kQ4_K);
  EXPECT_EQ(c.type, DType::kQ8_0);
  EXPECT_TRUE(c.fallback());
  EXPECT_FALSE(
      WeightMix::Q4_K_M().TypeOf("output.weight", 4, false, 256).fallback());
  EXPECT_EQ(FallbackNote({"blk.0.ffn_down.weight", DType::kQ6_K, DType::kQ8_0}),
            "blk.0.ffn_down.weight stored as q8_0 (rows are not a whole "
            "number of q6_k blocks)");
}

// general.file_type: llama.cpp's llama_ftype of each mix, and its name.
TEST(WeightMixTest, GgufFileTypes) {
  const std::pair<std::string_view, uint32_t> kTypes[] = {
      {"f32", 0},   {"f16", 1},   {"bf16", 32}, {"q8_0", 7},   {"q4_0", 2},
      {"q4_k", 14}, {"q5_k", 16}, {"q6_k", 18}, {"q4_k_m", 15}};
  for (const auto& [name, file_type] : kTypes) {
    WeightMix mix;
    ASSERT_TRUE(WeightMix::Parse(name, &mix)) << name;
    EXPECT_EQ(mix.GgufFileType(), file_type) << name;
    EXPECT_FALSE(GgufFileTypeName(file_type).empty()) << name;
  }
  EXPECT_EQ(GgufFileTypeName(15), "Q4_K - Medium");
  EXPECT_EQ(GgufFileTypeName(7), "Q8_0");
  EXPECT_EQ(GgufFileTypeName(0), "all F32");
  EXPECT_EQ(GgufFileTypeName(20), "");  // IQ2_XS: not named here
}

}  // namespace
}  // namespace kvstash
