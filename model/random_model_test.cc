#include "model/random_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "base/file.h"
#include "model/model.h"
#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

RandomModelOptions SmallOptions(kernels::DType type) {
  RandomModelOptions o;
  o.dim = 64;
  o.n_layers = 2;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.ffn_dim = 96;
  o.context_length = 256;
  o.tied_output = false;
  o.type = type;
  o.seed = 7;
  o.vocab_path = testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf");
  return o;
}

TEST(RandomModelTest, LoadsWithItsShapeVocabularyAndWeightStatistics) {
  const std::string path = testing::TempDir("random_model") + "/m.gguf";
  ThreadPool pool({.num_threads = 2});
  ASSERT_TRUE(
      WriteRandomModel(SmallOptions(kernels::DType::kQ8_0), path, &pool).ok());
  auto model =
      Model::Load(path, "", FileMemory::kMapped, WeightLayout::kAsStored);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.ffn_dim, 96);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_FALSE(c.tied_output);
  const WeightMatrix& wq = (*model)->weights().layers[1].wq;
  EXPECT_EQ(wq.type, kernels::DType::kQ8_0);
  std::vector<float> values(size_t(wq.rows) * wq.cols);
  const size_t row_bytes = kernels::RowBytes(wq.type, wq.cols);
  for (int r = 0; r < wq.rows; ++r) {
    kernels::DequantizeRow(wq.type,
                           static_cast<const uint8_t*>(wq.data) + r * row_bytes,
                           wq.cols, &values[size_t(r) * wq.cols]);
  }
  double sum = 0, sum_sq = 0;
  for (float v : values) {
    sum += v;
    sum_sq += double(v) * v;
  }
  const double mean = sum / values.size();
  const double std_dev = std::sqrt(sum_sq / values.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(std_dev, 0.02, 0.001);
  EXPECT_EQ((*model)->weights().layers[0].attn_norm[5], 1.0f);

  const Tokenizer& tok = (*model)->tokenizer();
  const std::string text = "Hello world, this is kvstash!";
  EXPECT_EQ(tok.Decode(tok.Encode(text, true)), text);
}

TEST(RandomModelTest, SameSeedSameFileWhateverTheThreads) {
  const std::string dir = testing::TempDir("random_model_seed");
  ThreadPool pool({.num_threads = 2});
  RandomModelOptions o = SmallOptions(kernels::DType::kF16);
  ASSERT_TRUE(WriteRandomModel(o, dir + "/a.gguf", nullptr).ok());
  ASSERT_TRUE(WriteRandomModel(o, dir + "/b.gguf", &pool).ok());
  o.seed = 8;
  ASSERT_TRUE(WriteRandomModel(o, dir + "/c.gguf", &pool).ok());
  EXPECT_EQ(ReadFile(dir + "/a.gguf").value(),
            ReadFile(dir + "/b.gguf").value());
  EXPECT_NE(ReadFile(dir + "/a.gguf").value(),
            ReadFile(dir + "/c.gguf").value());
}

// The q4_k_m mixture: each matrix in the type llama-quantize's Q4_K_M rule
// gives it (4 layers: more bits for attn_v and ffn_down on layers 2 and 3;
// the tied embedding is the output matrix: q6_k), norms f32; ffn_down's rows
// of 320 are not whole 256-element super-blocks and fall back to q8_0,
// reported per tensor.
TEST(RandomModelTest, Q4KMMixtureTypesEachTensor) {
  RandomModelOptions o = SmallOptions(kernels::DType::kF16);
  o.dim = 256;
  o.n_layers = 4;
  o.ffn_dim = 320;
  o.tied_output = true;
  o.type = WeightMix::Q4_K_M();
  const std::string path = testing::TempDir("random_model_q4_k_m") + "/m.gguf";
  ThreadPool pool({.num_threads = 2});
  std::vector<WeightFallback> fallbacks;
  ASSERT_TRUE(WriteRandomModel(o, path, &pool, &fallbacks).ok());
  auto model =
      Model::Load(path, "", FileMemory::kMapped, WeightLayout::kAsStored);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  using kernels::DType;
  std::map<std::string, DType> want = {{"token_embd.weight", DType::kQ6_K},
                                       {"output_norm.weight", DType::kF32}};
  for (int l = 0; l < 4; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const DType more = l >= 2 ? DType::kQ6_K : DType::kQ4_K;
    for (const char* name :
         {"attn_q.weight", "attn_k.weight", "attn_output.weight",
          "ffn_gate.weight", "ffn_up.weight"}) {
      want[b + name] = DType::kQ4_K;
    }
    want[b + "attn_v.weight"] = more;
    want[b + "ffn_down.weight"] = DType::kQ8_0;
    want[b + "attn_norm.weight"] = DType::kF32;
    want[b + "ffn_norm.weight"] = DType::kF32;
  }
  ASSERT_EQ((*model)->tensors().size(), want.size());
  for (const TensorSummary& t : (*model)->tensors()) {
    ASSERT_EQ(want.count(t.name), 1u) << t.name;
    EXPECT_EQ(t.type, want[t.name]) << t.name;
  }
  ASSERT_EQ(fallbacks.size(), 4u);
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(fallbacks[l].tensor,
              "blk." + std::to_string(l) + ".ffn_down.weight");
    EXPECT_EQ(fallbacks[l].wanted, l >= 2 ? DType::kQ6_K : DType::kQ4_K);
    EXPECT_EQ(fallbacks[l].type, DType::kQ8_0);
  }
  // A q4_k matrix holds N(0, 0.02) values up to its 4-bit rounding.
  const WeightMatrix& wq = (*model)->weights().layers[1].wq;
  ASSERT_EQ(wq.type, DType::kQ4_K);
  std::vector<float> row(wq.cols);
  double sum_sq = 0;
  const size_t row_bytes = kernels::RowBytes(wq.type, wq.cols);
  for (int r = 0; r < wq.rows; ++r) {
    kernels::DequantizeRow(wq.type,
                           static_cast<const uint8_t*>(wq.data) + r * row_bytes,
                           wq.cols, row.data());
    for (float v : row) sum_sq += double(v) * v;
  }
  EXPECT_NEAR(std::sqrt(sum_sq / (double(wq.rows) * wq.cols)), 0.02, 0.002);
}

TEST(RandomModelTest, PresetsAndBadShapes) {
  RandomModelOptions o;
  ASSERT_TRUE(ApplyRandomModelPreset("1b", &o).ok());
  EXPECT_EQ(o.dim, 2048);
  EXPECT_EQ(o.n_kv_heads, 8);
  EXPECT_FALSE(o.tied_output);
  EXPECT_FALSE(ApplyRandomModelPreset("7b", &o).ok());
  o = SmallOptions(kernels::DType::kQ4_0);
  o.n_heads = 5;  // 64 % 5 != 0
  EXPECT_FALSE(
      WriteRandomModel(o, testing::TempDir("rm_bad") + "/x", nullptr).ok());
  o = SmallOptions(kernels::DType::kQ4_0);
  o.vocab_path = "/no/such/vocab.gguf";
  EXPECT_FALSE(
      WriteRandomModel(o, testing::TempDir("rm_bad2") + "/x", nullptr).ok());
}

}  // namespace
}  // namespace kvstash
