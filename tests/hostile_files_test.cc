// Hostile model files: truncations and random byte flips of a real GGUF and a
// real llama2.c checkpoint (and its tokenizer). Every load must return an
// error or a usable model, never crash or hang; a model that loads must run
// a short forward pass. Run under ASan/UBSan in CI (label "parsing").
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "base/file.h"
#include "fuzz/model_load.h"
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
    const size_t limit =
        (i % 4 == 0) ? std::min<size_t>(m.size(), 4096) : m.size();
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

// Writes kCasesPerFile mutations of shared file `relative` to a temporary
// file and calls load(path) -> loaded? on each.
void MutateAndLoad(const std::string& relative, uint64_t seed,
                   const std::function<bool(const std::string&)>& load) {
  auto original = ReadFile(testing::SharedPath(relative));
  ASSERT_TRUE(original.ok());
  std::mt19937_64 rng(seed);
  const std::string path = testing::TempDir("hostile") + "/mutated";
  int loaded = 0;
  for (int i = 0; i < kCasesPerFile; ++i) {
    ASSERT_TRUE(WriteFileAtomic(path, Mutate(*original, i, rng)).ok());
    SCOPED_TRACE(relative + " case " + std::to_string(i));
    loaded += load(path);
  }
  std::printf("[ hostile ] %s: %d of %d mutations still loaded\n",
              relative.c_str(), loaded, kCasesPerFile);
}

const std::string kModel = "models/stories260K/stories260K.bin";
const std::string kTokenizer = "models/stories260K/tok512.bin";

TEST(HostileFilesTest, MutatedGgufNeverCrashes) {
  MutateAndLoad(
      "models/stories260K/stories260K.gguf", 1,
      [](const std::string& path) { return fuzz::LoadAndUse(path, ""); });
}

TEST(HostileFilesTest, MutatedLlama2cCheckpointNeverCrashes) {
  const std::string tokenizer = testing::SharedPath(kTokenizer);
  MutateAndLoad(kModel, 2, [&](const std::string& path) {
    return fuzz::LoadAndUse(path, tokenizer);
  });
}

TEST(HostileFilesTest, MutatedLlama2cTokenizerNeverCrashes) {
  const std::string model = testing::SharedPath(kModel);
  MutateAndLoad(kTokenizer, 3, [&](const std::string& path) {
    return fuzz::LoadAndUse(model, path);
  });
}

}  // namespace
}  // namespace kvstash
