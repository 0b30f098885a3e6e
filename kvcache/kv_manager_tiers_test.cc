// KvManager over real disk tiers: write-behind on commit or on second use,
// Prefetch along the hash chain across DRAM and several tiers, promotion to
// the tiers above the source, and loads that stop at a missing or damaged
// object, a full pool, or another namespace.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <vector>

#include "kvcache/kv_manager.h"
#include "kvcache/kv_test_util.h"
#include "store/disk_tier.h"
#include "tests/testing/shared_data.h"

namespace kvstash::kvcache {
namespace {

using namespace testing;  // NOLINT: the helpers of kv_test_util.h

std::unique_ptr<store::DiskTier> OpenDisk(const std::string& name) {
  store::DiskTierOptions o;
  o.dir = kvstash::testing::TempDir(name);
  auto t = store::DiskTier::Open(o);
  KV_CHECK_MSG(t.ok(), t.status().ToString().c_str());
  return std::move(t).value();
}

// The keys h_1..h_n of `tokens`' full blocks under `root`.
std::vector<Hash128> Keys(std::span<const int32_t> tokens,
                          const Hash128& root) {
  std::vector<Hash128> keys;
  Hash128 h = root;
  for (size_t i = 0; i + kB <= tokens.size(); i += kB) {
    h = BlockHash(h, tokens.subspan(i, kB));
    keys.push_back(h);
  }
  return keys;
}

size_t Held(store::Tier& tier, std::span<const Hash128> keys) {
  size_t n = 0;
  for (const bool b : tier.Exists(keys)) n += b;
  return n;
}

TEST(KvManagerTiersTest, CommitWritesBehindAndAFreshManagerPrefetches) {
  auto disk = OpenDisk("prefetch");
  const std::vector<int32_t> prompt = Range(100, 4 * kB + 2);
  {
    auto a = MakeManager(16, {{disk.get()}});
    CacheRun(*a, prompt, Root(""));
    EXPECT_EQ(a->TierStats()[0].queued_blocks, 4u);
  }
  disk->Flush();
  EXPECT_EQ(Held(*disk, Keys(prompt, Root(""))), 4u);

  auto b = MakeManager(16, {{disk.get()}});
  const PrefixHit probe = b->Probe(prompt, Root(""));
  EXPECT_EQ(probe.dram_tokens, 0);
  EXPECT_EQ(probe.tier_tokens, std::vector<int>{4 * kB});
  EXPECT_EQ(b->Stats().free_blocks, 16u);  // Probe loads nothing

  const PrefixHit hit = b->Prefetch(prompt, Root(""));
  EXPECT_EQ(hit.dram_tokens, 0);
  EXPECT_EQ(hit.tier_tokens, std::vector<int>{4 * kB});
  EXPECT_EQ(b->Stats().cached_blocks, 4u);  // indexed, unreferenced
  EXPECT_TRUE(Valid(*b, {}).ok());
  SequenceKv seq = Seq(Root(""));
  EXPECT_EQ(b->Admit(prompt, &seq), 4 * kB);
  EXPECT_TRUE(Computed(*b, prompt, 4 * kB, seq));
  EXPECT_TRUE(Valid(*b, {&seq}).ok());
  b->Release(&seq);
  // Blocks loaded from the tier are not written back to it.
  EXPECT_EQ(b->TierStats()[0].queued_blocks, 0u);
  EXPECT_EQ(b->TierStats()[0].loaded_blocks, 4u);

  // Another namespace finds nothing.
  EXPECT_EQ(b->Prefetch(prompt, Root("other")).total(), 0);
}

TEST(KvManagerTiersTest, DramPrefixThenTierSuffix) {
  auto disk = OpenDisk("suffix");
  const std::vector<int32_t> prompt = Range(7, 5 * kB);
  {
    auto a = MakeManager(16, {{disk.get()}});
    CacheRun(*a, prompt, Root(""));
  }
  disk->Flush();
  auto b = MakeManager(16, {{disk.get()}});
  CacheRun(*b, std::span(prompt).first(2 * kB + 1), Root(""));  // 2 in DRAM
  const PrefixHit hit = b->Prefetch(prompt, Root(""));
  EXPECT_EQ(hit.dram_tokens, 2 * kB);
  EXPECT_EQ(hit.tier_tokens, std::vector<int>{3 * kB});
  SequenceKv seq = Seq(Root(""));
  EXPECT_EQ(Prefill(*b, prompt, &seq), 5 * kB - 1);  // block-aligned: COW
  EXPECT_TRUE(Computed(*b, prompt, 5 * kB, seq));
  b->Release(&seq);
  EXPECT_TRUE(Valid(*b, {}).ok());
}

TEST(KvManagerTiersTest, SecondUsePolicyWritesOnlyReusedBlocks) {
  auto disk = OpenDisk("second-use");
  auto m = MakeManager(16, {{disk.get(), TierWritePolicy::kOnSecondUse}});
  const std::vector<int32_t> once = Range(1, 3 * kB);
  const std::vector<int32_t> twice = Range(500, 3 * kB);
  CacheRun(*m, once, Root(""));
  CacheRun(*m, twice, Root(""));
  CacheRun(*m, twice, Root(""));
  disk->Flush();
  EXPECT_EQ(Held(*disk, Keys(once, Root(""))), 0u);
  // The second run maps 2 full blocks (the third holds its last token).
  EXPECT_EQ(Held(*disk, Keys(twice, Root(""))), 2u);
}

// Tier 0 holds the first two blocks, tier 1 all four: the walk takes two
// from each, and the two from tier 1 are promoted into tier 0.
TEST(KvManagerTiersTest, WalkAcrossTiersAndPromoteUpwards) {
  auto upper = OpenDisk("upper");
  auto lower = OpenDisk("lower");
  const std::vector<int32_t> prompt = Range(40, 4 * kB + 1);
  {
    auto a = MakeManager(16, {{lower.get()}});
    CacheRun(*a, prompt, Root(""));
    auto b = MakeManager(16, {{upper.get()}});
    CacheRun(*b, std::span(prompt).first(2 * kB + 1), Root(""));
  }
  upper->Flush();
  lower->Flush();
  const std::vector<Hash128> keys = Keys(prompt, Root(""));
  EXPECT_EQ(Held(*upper, keys), 2u);

  auto c = MakeManager(16, {{upper.get()}, {lower.get()}});
  const PrefixHit hit = c->Prefetch(prompt, Root(""));
  EXPECT_EQ(hit.tier_tokens, (std::vector<int>{2 * kB, 2 * kB}));
  SequenceKv seq = Seq(Root(""));
  EXPECT_EQ(c->Admit(prompt, &seq), 4 * kB);
  EXPECT_TRUE(Computed(*c, prompt, 4 * kB, seq));
  c->Release(&seq);
  upper->Flush();
  EXPECT_EQ(Held(*upper, keys), 4u);
}

TEST(KvManagerTiersTest, ADamagedObjectEndsTheLoadThere) {
  auto disk = OpenDisk("damaged");
  const std::vector<int32_t> prompt = Range(9, 4 * kB + 1);
  {
    auto a = MakeManager(16, {{disk.get()}});
    CacheRun(*a, prompt, Root(""));
  }
  disk->Flush();
  const std::vector<Hash128> keys = Keys(prompt, Root(""));
  {
    std::fstream f(disk->ObjectPath(keys[2]),
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  auto b = MakeManager(16, {{disk.get()}});
  const PrefixHit hit = b->Prefetch(prompt, Root(""));
  EXPECT_EQ(hit.tier_tokens, std::vector<int>{2 * kB});
  EXPECT_EQ(b->TierStats()[0].load_failures, 1u);
  EXPECT_EQ(b->TierStats()[0].store.corrupt_dropped, 1u);
  EXPECT_EQ(b->Stats().cached_blocks, 2u);  // the rest went back
  EXPECT_EQ(b->Stats().free_blocks, 14u);
  SequenceKv seq = Seq(Root(""));
  EXPECT_EQ(Prefill(*b, prompt, &seq), 2 * kB);
  EXPECT_TRUE(Computed(*b, prompt, int(prompt.size()), seq));
  b->Release(&seq);
  // The recomputed blocks are written again.
  disk->Flush();
  EXPECT_EQ(Held(*disk, keys), 4u);
}

TEST(KvManagerTiersTest, APoolTooSmallLoadsWhatFits) {
  auto disk = OpenDisk("small-pool");
  const std::vector<int32_t> prompt = Range(3, 6 * kB + 1);
  {
    auto a = MakeManager(16, {{disk.get()}});
    CacheRun(*a, prompt, Root(""));
  }
  disk->Flush();
  auto b = MakeManager(4, {{disk.get()}});
  SequenceKv holder = Seq(Root("x"));
  ASSERT_TRUE(b->Reserve(kB, &holder).ok());  // one block held elsewhere
  const PrefixHit hit = b->Prefetch(prompt, Root(""));
  EXPECT_EQ(hit.tier_tokens, std::vector<int>{3 * kB});
  EXPECT_TRUE(Valid(*b, {&holder}).ok());
  b->Release(&holder);
}

}  // namespace
}  // namespace kvstash::kvcache
