// Hostile model files: truncations and random byte flips of a real GGUF and a
// real llama2.c checkpoint (and its tokenizer). Every load must return an
// error or a usable model, never crash or hang; a model that loads must run
// a short forward pass. Run under ASan/UBSan in CI (label "parsing").
#include <gtest/gtest.h>

#include <random>

#include "base/file.h"
#include "engine/transformer.h"
#include "model/model.h"
#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

// Per file: 1000 truncations and 1000 sets of random byte flips.
constexpr int kCasesPerFile = 2000;

// Mutation i of `original`: even i truncate at a random length (biased to the
// header, where the structure lives), odd i flip 1-8 random bytes.
std::string Mutate(const std::string& original, int i, std::mt19937_64& rng) {
  std::string m = original;
  if (i % 2 == 0) {
    const size_t limit = (i % 4 == 0) ? std::min<size_t>(m.size(), 4096)
                                      : m.size();
    m.resize(rng() % limit);
  } else {
    const int flips = 1 + rng() % 8;
    // Half of the cases aim at the first 64 KiB, where headers, metadata
    // and tensor infos are.
    const size_t limit =
        (i % 4 == 1) ? std::min<size_t>(m.size(), 65536) : m.size();
    for (int f = 0; f < flips; ++f) m[rng() % limit] ^= 1 + rng() % 255;
  }
  return m;
}

// Loads the mutated file; a model that loads must encode and run.
void LoadAndUse(const std::string& model_path,
                const std::string& tokenizer_path) {
  auto model = Model::Load(model_path, tokenizer_path);
  if (!model.ok()) {
    EXPECT_FALSE(model.status().message().empty());
    return;
  }
  const Model& m = **model;
  std::vector<int32_t> ids = m.tokenizer().Encode("Once upon a time", true);
  if (ids.empty()) ids.push_back(0);
  ids.resize(std::min<size_t>(ids.size(), 4));
  const ModelConfig& c = m.config();
  ContiguousKvCache kv(c.n_layers, c.n_kv_heads, c.head_dim, ids.size());
  std::vector<float> logits(c.vocab_size);
  Transformer t(m);
  EXPECT_TRUE(t.Forward(ids, 0, kv, false, logits.data()).ok());
  (void)m.tokenizer().Decode(ids);
}

class HostileFilesTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::TempDir("hostile"); }
  std::string dir_;
};

TEST_F(HostileFilesTest, MutatedGgufNeverCrashes) {
  auto original =
      ReadFile(testing::SharedPath("models/stories260K/stories260K.gguf"));
  ASSERT_TRUE(original.ok());
  std::mt19937_64 rng(1);
  const std::string path = dir_ + "/m.gguf";
  int loaded = 0;
  for (int i = 0; i < kCasesPerFile; ++i) {
    ASSERT_TRUE(WriteFileAtomic(path, Mutate(*original, i, rng)).ok());
    SCOPED_TRACE("case " + std::to_string(i));
    LoadAndUse(path, "");
    loaded += Model::Load(path, "").ok();
  }
  std::printf("[ hostile ] gguf: %d of %d mutations still loaded\n", loaded,
              kCasesPerFile);
}

TEST_F(HostileFilesTest, MutatedLlama2cCheckpointNeverCrashes) {
  auto original =
      ReadFile(testing::SharedPath("models/stories260K/stories260K.bin"));
  ASSERT_TRUE(original.ok());
  const std::string tok = testing::SharedPath("models/stories260K/tok512.bin");
  std::mt19937_64 rng(2);
  const std::string path = dir_ + "/m.bin";
  for (int i = 0; i < kCasesPerFile; ++i) {
    ASSERT_TRUE(WriteFileAtomic(path, Mutate(*original, i, rng)).ok());
    SCOPED_TRACE("case " + std::to_string(i));
    LoadAndUse(path, tok);
  }
}

TEST_F(HostileFilesTest, MutatedLlama2cTokenizerNeverCrashes) {
  auto original =
      ReadFile(testing::SharedPath("models/stories260K/tok512.bin"));
  ASSERT_TRUE(original.ok());
  const std::string model =
      testing::SharedPath("models/stories260K/stories260K.bin");
  std::mt19937_64 rng(3);
  const std::string path = dir_ + "/tok.bin";
  for (int i = 0; i < kCasesPerFile; ++i) {
    ASSERT_TRUE(WriteFileAtomic(path, Mutate(*original, i, rng)).ok());
    SCOPED_TRACE("case " + std::to_string(i));
    LoadAndUse(model, path);
  }
}

}  // namespace
}  // namespace kvstash
