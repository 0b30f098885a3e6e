#include "model/llama2c.h"

#include <gtest/gtest.h>

#include <cstring>

#include "base/file.h"
#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

// A tiny synthetic checkpoint: header + `n_floats` floats numbered 0, 1, ...
std::vector<uint8_t> Checkpoint(std::vector<int32_t> header, size_t n_floats) {
  std::vector<uint8_t> out(28 + 4 * n_floats);
  std::memcpy(out.data(), header.data(), 28);
  for (size_t i = 0; i < n_floats; ++i) {
    const float f = static_cast<float>(i);
    std::memcpy(&out[28 + 4 * i], &f, 4);
  }
  return out;
}

// Floats of a checkpoint with dim 8, hidden 16, 1 layer, 2 heads, 1 kv head,
// vocab 10, seq_len 4 (head_dim 4, rope tables 4 x 2 each).
constexpr size_t kTiedFloats =
    10 * 8 + 8 + 64 + 32 + 32 + 64 + 8 + 3 * 16 * 8 + 8 + 2 * 4 * 2;

TEST(Llama2cTest, ParsesStories260K) {
  auto file = MappedFile::Open(
      testing::SharedPath("models/stories260K/stories260K.bin"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ModelConfig c;
  Llama2cWeights w;
  ASSERT_TRUE(ParseLlama2c((*file)->bytes(), &c, &w).ok());
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.context_length, 512);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_TRUE(c.tied_output);
  EXPECT_EQ(w.wcls, w.token_embedding);
}

TEST(Llama2cTest, LaysOutTiedAndUntiedWeights) {
  std::vector<uint8_t> tied = Checkpoint({8, 16, 1, 2, 1, 10, 4}, kTiedFloats);
  ModelConfig c;
  Llama2cWeights w;
  ASSERT_TRUE(ParseLlama2c(tied, &c, &w).ok());
  EXPECT_EQ(w.rms_att[0], 80.0f);  // after the 10 x 8 embedding
  EXPECT_EQ(w.rms_final[0], kTiedFloats - 16 - 8.0f);  // before the RoPE tables

  std::vector<uint8_t> untied =
      Checkpoint({8, 16, 1, 2, 1, -10, 4}, kTiedFloats + 80);
  ASSERT_TRUE(ParseLlama2c(untied, &c, &w).ok());
  EXPECT_FALSE(c.tied_output);
  EXPECT_EQ(c.vocab_size, 10);
  EXPECT_EQ(w.wcls[0], static_cast<float>(kTiedFloats));
}

TEST(Llama2cTest, RejectsShortAndInconsistentFiles) {
  ModelConfig c;
  Llama2cWeights w;
  std::vector<uint8_t> short_body =
      Checkpoint({8, 16, 1, 2, 1, -10, 4}, kTiedFloats);  // wcls missing
  Status s = ParseLlama2c(short_body, &c, &w);
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
  EXPECT_FALSE(ParseLlama2c(std::vector<uint8_t>(20), &c, &w).ok());
  EXPECT_FALSE(
      ParseLlama2c(Checkpoint({8, 16, 1, 3, 1, 10, 4}, kTiedFloats), &c, &w)
          .ok());  // dim % n_heads != 0
  EXPECT_FALSE(
      ParseLlama2c(Checkpoint({8, 16, 1, 2, 0, 10, 4}, kTiedFloats), &c, &w)
          .ok());  // no kv heads
  EXPECT_FALSE(
      ParseLlama2c(Checkpoint({8, 16, 1, 2, 1, INT32_MIN, 4}, kTiedFloats), &c,
                   &w)
          .ok());
}

}  // namespace
}  // namespace kvstash
