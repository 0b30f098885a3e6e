#include "model/model.h"

#include <gtest/gtest.h>

#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

TEST(ModelTest, LoadsLlama2cCheckpointWithTokenizer) {
  auto model =
      Model::Load(testing::SharedPath("models/stories260K/stories260K.bin"),
                  testing::SharedPath("models/stories260K/tok512.bin"));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->format(), ModelFormat::kLlama2c);
  EXPECT_EQ((*model)->config().vocab_size, 512);
  EXPECT_EQ((*model)->weights().layers.size(), 5u);
  EXPECT_EQ((*model)->tokenizer().bos(), 1);
}

TEST(ModelTest, LlamaCheckpointWithoutTokenizerIsAClearError) {
  auto model = Model::Load(
      testing::SharedPath("models/stories260K/stories260K.bin"), "");
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("--tokenizer"), std::string::npos);
}

TEST(ModelTest, LoadsForeignGguf) {
  auto model = Model::Load(
      testing::SharedPath("models/stories260K/stories260K.gguf"), "");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ((*model)->format(), ModelFormat::kGguf);
  EXPECT_EQ(c.arch, Architecture::kLlama);
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.context_length, 128);
  EXPECT_EQ(c.rope_dims, 8);
  // llama.cpp's converter stores a copy of the embedding as output.weight.
  EXPECT_FALSE(c.tied_output);
  EXPECT_FALSE(c.qkv_bias);
}

TEST(ModelTest, MissingFileNamesThePath) {
  auto model = Model::Load("/no/such/model.gguf", "");
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("/no/such/model.gguf"),
            std::string::npos);
}

}  // namespace
}  // namespace kvstash
