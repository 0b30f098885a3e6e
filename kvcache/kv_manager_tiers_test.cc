// KvManager over real disk tiers: write-behind on commit or on second use,
// Prefetch along the hash chain across DRAM and several tiers, promotion to
// the tiers above the source, loads that stop at a missing or damaged
// object, a full pool, or another namespace, and concurrent loads of one
// prefix that read it once; layered loads.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "kvcache/kv_manager.h"
#include "kvcache/kv_test_util.h"
#include "store/disk_tier.h"
#include "store/object_testing.h"
#include "tests/testing/forwarding_tier.h"
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

// Chunks of 4 blocks: a 10-block prompt is stored as chunk objects of
// blocks [0, 4) and [4, 8), written as their last blocks are committed and
// keyed by them, and single-block objects of blocks 8 and 9, written when
// the sequence is released.
TEST(KvManagerTiersTest, ChunksAtCommitAndTheTailAtRelease) {
  auto disk = OpenDisk("chunks");
  const std::vector<int32_t> prompt = Range(11, 10 * kB + 1);
  const std::vector<Hash128> keys = Keys(prompt, Root(""));
  auto held = [&] {
    disk->Flush();
    std::vector<size_t> at;
    const std::vector<bool> e = disk->Exists(keys);
    for (size_t i = 0; i < e.size(); ++i) {
      if (e[i]) at.push_back(i);
    }
    return at;
  };
  {
    auto a = MakeManager(32, {{disk.get()}}, {}, 4);
    SequenceKv seq = Seq(Root(""));
    Prefill(*a, prompt, &seq);
    EXPECT_EQ(held(), (std::vector<size_t>{3, 7}));
    EXPECT_EQ(a->TierStats()[0].queued_blocks, 8u);
    a->Release(&seq);
    EXPECT_EQ(held(), (std::vector<size_t>{3, 7, 8, 9}));
    EXPECT_EQ(a->TierStats()[0].queued_blocks, 10u);
  }

  // A fresh manager finds and loads all ten blocks from the four objects.
  auto b = MakeManager(32, {{disk.get()}}, {}, 4);
  EXPECT_EQ(b->Probe(prompt, Root("")).tier_tokens, std::vector<int>{10 * kB});
  EXPECT_EQ(b->Prefetch(prompt, Root("")).tier_tokens,
            std::vector<int>{10 * kB});
  SequenceKv seq = Seq(Root(""));
  EXPECT_EQ(b->Admit(prompt, &seq), 10 * kB);
  EXPECT_TRUE(Computed(*b, prompt, 10 * kB, seq));
  EXPECT_TRUE(Valid(*b, {&seq}).ok());
  b->Release(&seq);
  EXPECT_EQ(b->TierStats()[0].loaded_blocks, 10u);
  EXPECT_EQ(b->TierStats()[0].queued_blocks, 0u);  // nothing written back

  // A stored prompt's prefix that ends inside its tail: chunks and singles.
  auto c = MakeManager(32, {{disk.get()}}, {}, 4);
  EXPECT_EQ(c->Prefetch(std::span(prompt).first(9 * kB + 1), Root("")).total(),
            9 * kB);
  // A prompt that branches off inside chunk [4, 8): the chunk before it.
  std::vector<int32_t> branch = prompt;
  branch[6 * kB + 3] = -5;
  auto d = MakeManager(32, {{disk.get()}}, {}, 4);
  EXPECT_EQ(d->Prefetch(branch, Root("")).total(), 4 * kB);
  SequenceKv dseq = Seq(Root(""));
  EXPECT_EQ(Prefill(*d, branch, &dseq), 4 * kB);
  EXPECT_TRUE(Computed(*d, branch, int(branch.size()), dseq));
  d->Release(&dseq);
}

// A chunk whose first blocks are in DRAM is read whole; only its missing
// blocks are used.
TEST(KvManagerTiersTest, AChunkPartlyInDramFillsTheRest) {
  auto disk = OpenDisk("chunk-dram");
  const std::vector<int32_t> prompt = Range(70, 8 * kB + 1);
  {
    auto a = MakeManager(32, {{disk.get()}}, {}, 4);
    CacheRun(*a, prompt, Root(""));
  }
  disk->Flush();
  auto b = MakeManager(32, {{disk.get()}}, {}, 4);
  CacheRun(*b, std::span(prompt).first(2 * kB + 1), Root(""));  // 2 in DRAM
  const PrefixHit hit = b->Prefetch(prompt, Root(""));
  EXPECT_EQ(hit.dram_tokens, 2 * kB);
  EXPECT_EQ(hit.tier_tokens, std::vector<int>{6 * kB});
  SequenceKv seq = Seq(Root(""));
  EXPECT_EQ(b->Admit(prompt, &seq), 8 * kB);
  EXPECT_TRUE(Computed(*b, prompt, 8 * kB, seq));
  EXPECT_TRUE(Valid(*b, {&seq}).ok());
  b->Release(&seq);
}

// Chunks of one block: every block is its own object, written at commit.
TEST(KvManagerTiersTest, ChunksOfOneBlockWriteEveryBlockAtCommit) {
  auto disk = OpenDisk("chunk-one");
  const std::vector<int32_t> prompt = Range(5, 5 * kB + 1);
  auto a = MakeManager(16, {{disk.get()}}, {}, 1);
  SequenceKv seq = Seq(Root(""));
  Prefill(*a, prompt, &seq);
  disk->Flush();
  EXPECT_EQ(Held(*disk, Keys(prompt, Root(""))), 5u);
  a->Release(&seq);
}

// Rows of a compacted prefix (PublishRows): a document whose rows a policy
// kept, in 3 blocks named by their rows chain.
struct Rows {
  std::vector<int32_t> doc = Range(10, 13);
  Hash128 root = RowsRoot(Root(""), "policy=knorm;ratio=0.5;merge=0");
  std::vector<Hash128> chain = RowsChain(root, doc, 3);
};

// Published rows are written to a kOnCommit tier at once (the last block
// too, before the publisher's copy of it is written into); a fresh manager
// loads them with PrefetchRows and maps them with the bytes published.
TEST(KvManagerTiersTest, PublishedRowsAreWrittenBehindAndPrefetched) {
  auto disk = OpenDisk("rows");
  const Rows r;
  {
    auto a = MakeManager(16, {{disk.get()}});
    SequenceKv s = CompactedSeq(*a, Root(""), 3, /*seed=*/1);
    ASSERT_TRUE(a->PublishRows(r.root, r.chain, /*copy_last=*/true, &s));
    EXPECT_EQ(a->TierStats()[0].queued_blocks, 3u);
    std::memset(a->BlockData(s.blocks[2]), 0, a->layout().block_bytes());
    a->Release(&s);
    EXPECT_EQ(a->TierStats()[0].queued_blocks, 3u);  // nothing at release
  }
  disk->Flush();
  EXPECT_EQ(Held(*disk, r.chain), 3u);

  auto b = MakeManager(16, {{disk.get()}});
  EXPECT_FALSE(b->HoldsRows(r.chain));
  const PrefixHit hit = b->PrefetchRows(r.root, r.chain);
  EXPECT_EQ(hit.dram_tokens, 0);
  EXPECT_EQ(hit.tier_tokens, std::vector<int>{3 * kB});
  EXPECT_TRUE(b->HoldsRows(r.chain));
  EXPECT_EQ(b->Stats().cached_blocks, 3u);
  EXPECT_EQ(b->TierStats()[0].loaded_blocks, 3u);
  SequenceKv seq = Seq(Root(""));
  ASSERT_TRUE(b->AdmitRows(r.root, r.chain, /*copy_last=*/true, &seq));
  ASSERT_EQ(seq.blocks.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(HasRows(*b, seq.blocks[i], 1, i)) << "block " << i;
  }
  EXPECT_TRUE(Valid(*b, {&seq}).ok());
  b->Release(&seq);
  EXPECT_EQ(b->TierStats()[0].queued_blocks, 0u);  // nothing written back
  const PrefixHit again = b->PrefetchRows(r.root, r.chain);
  EXPECT_EQ(again.dram_tokens, 3 * kB);
  EXPECT_EQ(again.tier_tokens, std::vector<int>{0});
}

// The objects are bound to the rows root they were written under: read as
// another transform's rows they fail verification and nothing is loaded.
TEST(KvManagerTiersTest, RowsObjectsLoadOnlyUnderTheirRowsRoot) {
  auto disk = OpenDisk("rows-root");
  const Rows r;
  {
    auto a = MakeManager(16, {{disk.get()}});
    SequenceKv s = CompactedSeq(*a, Root(""), 3, /*seed=*/2);
    ASSERT_TRUE(a->PublishRows(r.root, r.chain, /*copy_last=*/false, &s));
    a->Release(&s);
  }
  disk->Flush();
  auto b = MakeManager(16, {{disk.get()}});
  const Hash128 other = RowsRoot(Root(""), "policy=knorm;ratio=0.75;merge=0");
  EXPECT_EQ(b->PrefetchRows(other, r.chain).total(), 0);
  EXPECT_EQ(b->TierStats()[0].load_failures, 1u);
  EXPECT_FALSE(b->HoldsRows(r.chain));
  EXPECT_EQ(b->Stats().free_blocks, 16u);
  EXPECT_EQ(b->PrefetchRows(r.root, r.chain).total(), 3 * kB);
}

// Chunks of 2 blocks: the 3 blocks of rows are stored as the chunk [0, 2)
// and the single last block; evicting the leaf and prefetching again loads
// it alone from its object, under the head still in DRAM.
TEST(KvManagerTiersTest, RowsInChunksAndAnEvictedLeafReloaded) {
  auto disk = OpenDisk("rows-chunks");
  const Rows r;
  auto m = MakeManager(6, {{disk.get()}}, {}, /*chunk_blocks=*/2);
  SequenceKv s = CompactedSeq(*m, Root(""), 3, /*seed=*/3);
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/false, &s));
  m->Release(&s);
  disk->Flush();
  EXPECT_EQ(disk->Exists(r.chain), (std::vector<bool>{false, true, true}));

  SequenceKv other = Seq(Root(""));
  ASSERT_TRUE(m->Reserve(4 * kB, &other).ok());  // evicts the leaf
  EXPECT_FALSE(m->HoldsRows(r.chain));
  m->Release(&other);
  const PrefixHit hit = m->PrefetchRows(r.root, r.chain);
  EXPECT_EQ(hit.dram_tokens, 2 * kB);
  EXPECT_EQ(hit.tier_tokens, std::vector<int>{kB});
  SequenceKv seq = Seq(Root(""));
  ASSERT_TRUE(m->AdmitRows(r.root, r.chain, /*copy_last=*/false, &seq));
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(HasRows(*m, seq.blocks[i], 3, i));
  EXPECT_TRUE(Valid(*m, {&seq}).ok());
  m->Release(&seq);

  // A fresh manager reads the chunk and the single object.
  auto b = MakeManager(6, {{disk.get()}}, {}, /*chunk_blocks=*/2);
  EXPECT_EQ(b->PrefetchRows(r.root, r.chain).tier_tokens,
            std::vector<int>{3 * kB});
}

// A kOnSecondUse tier gets the rows when a later request maps them, once.
TEST(KvManagerTiersTest, SecondUseTierGetsRowsWhenMapped) {
  auto disk = OpenDisk("rows-second-use");
  const Rows r;
  auto m = MakeManager(16, {{disk.get(), TierWritePolicy::kOnSecondUse}});
  SequenceKv a = CompactedSeq(*m, Root(""), 3, /*seed=*/4);
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/true, &a));
  m->Release(&a);
  disk->Flush();
  EXPECT_EQ(Held(*disk, r.chain), 0u);
  EXPECT_EQ(m->TierStats()[0].queued_blocks, 0u);

  for (int use = 0; use < 2; ++use) {
    SequenceKv b = Seq(Root(""));
    ASSERT_TRUE(m->AdmitRows(r.root, r.chain, /*copy_last=*/true, &b));
    m->Release(&b);
  }
  disk->Flush();
  EXPECT_EQ(Held(*disk, r.chain), 3u);
  EXPECT_EQ(m->TierStats()[0].queued_blocks, 3u);

  auto fresh = MakeManager(16, {{disk.get(), TierWritePolicy::kOnSecondUse}});
  EXPECT_EQ(fresh->PrefetchRows(r.root, r.chain).tier_tokens,
            std::vector<int>{3 * kB});
  SequenceKv c = Seq(Root(""));
  ASSERT_TRUE(fresh->AdmitRows(r.root, r.chain, /*copy_last=*/false, &c));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(HasRows(*fresh, c.blocks[i], 4, i));
  }
  fresh->Release(&c);
}

TEST(KvManagerTiersTest, ChunkSizeIsAutomaticOrWithinRange) {
  KvManagerOptions o;
  o.layout = SmallLayout();
  o.capacity_bytes = 4 * o.layout.block_bytes();
  o.prefault = false;
  o.chunk_blocks = kMaxChunkBlocks + 1;
  EXPECT_EQ(KvManager::Create(o).status().code(), StatusCode::kInvalidArgument);
  // Automatic: objects of at most kTargetObjectBytes, at least one block.
  o.chunk_blocks = 0;
  auto m = KvManager::Create(o);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->chunk_blocks(), AutoChunkBlocks(o.layout));
  EXPECT_EQ(
      AutoChunkBlocks(o.layout),
      std::min(kMaxChunkBlocks, kTargetObjectBytes / o.layout.block_bytes()));
  BlockLayout big = o.layout;
  big.n_layers = 16;
  big.n_kv_heads = 8;
  big.head_dim = 64;
  big.block_tokens = 16;
  EXPECT_EQ(big.block_bytes(), size_t{512} << 10);  // the 1b shape
  EXPECT_EQ(AutoChunkBlocks(big), 1u);
  big.n_layers = 17;
  EXPECT_EQ(AutoChunkBlocks(big), 1u);  // never 0
}

// Two Prefetches of one prefix at once: the second waits for the first's
// load and maps it (no object is read twice), then loads the part of its
// own prompt past the first's itself.
TEST(KvManagerTiersTest, ConcurrentPrefetchesOfOnePrefixReadItOnce) {
  auto disk = OpenDisk("shared_loads");
  const std::vector<int32_t> longer = Range(300, 8 * kB + 3);
  const std::span<const int32_t> shorter = std::span(longer).first(4 * kB + 1);
  {
    auto a = MakeManager(32, {{disk.get()}}, {}, /*chunk_blocks=*/1);
    CacheRun(*a, longer, Root(""));
  }
  disk->Flush();
  kvstash::testing::HeldTier held(disk.get());
  auto b = MakeManager(32, {{&held}}, {}, /*chunk_blocks=*/1);
  PrefixHit first, second;
  std::thread loader([&] { first = b->Prefetch(shorter, Root("")); });
  held.AwaitGet();  // the first load is reading
  std::thread waiter([&] { second = b->Prefetch(longer, Root("")); });
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (b->Stats().shared_loads == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(b->Stats().shared_loads, 1u);
  EXPECT_EQ(held.keys_read(), 4u);  // the waiter reads nothing meanwhile
  held.Open();
  loader.join();
  waiter.join();
  EXPECT_EQ(first.dram_tokens, 0);
  EXPECT_EQ(first.tier_tokens, std::vector<int>{4 * kB});
  EXPECT_EQ(second.dram_tokens, 4 * kB);
  EXPECT_EQ(second.tier_tokens, std::vector<int>{4 * kB});
  EXPECT_EQ(held.keys_read(), 8u);  // every object once
  EXPECT_EQ(b->TierStats()[0].loaded_blocks, 8u);
  EXPECT_EQ(b->Stats().cached_blocks, 8u);
  SequenceKv seq = Seq(Root(""));
  EXPECT_EQ(b->Admit(longer, &seq), 8 * kB);
  EXPECT_TRUE(Computed(*b, longer, 8 * kB, seq));
  EXPECT_TRUE(Valid(*b, {&seq}).ok());
  b->Release(&seq);
}

// Layered loads (KvManager::BeginLayeredLoad): the blocks a sequence holds
// are filled group of layers by group, each group announced before the next
// is read; only what verified is named; a forged object ends the load there;
// a load that cannot be layered falls back to Prefetch; a Prefetch of the
// same prefix waits for a layered load and maps what it brought.

std::unique_ptr<KvManager> Manager(store::Tier* tier, size_t chunk_blocks = 16,
                                   size_t range_bytes = 1,
                                   store::Codec codec = store::Codec::kRaw) {
  KvManagerOptions o;
  o.layout = SmallLayout();
  o.capacity_bytes = 32 * o.layout.block_bytes();
  o.prefault = false;
  o.tiers = {{tier}};
  o.chunk_blocks = chunk_blocks;
  o.layered_range_bytes = range_bytes;  // 1: one layer per group
  o.tier_codec = codec;
  Result<std::unique_ptr<KvManager>> m = KvManager::Create(o);
  KV_CHECK(m.ok());
  return std::move(m).value();
}

// `prompt` computed by one server and its blocks stored on `disk`.
void Store(store::DiskTier& disk, std::span<const int32_t> prompt,
           size_t chunk_blocks = 16) {
  auto a = Manager(&disk, chunk_blocks);
  CacheRun(*a, prompt, Root(""));
  disk.Flush();
}

// Edits a payload byte of the object on disk and recomputes its checksum:
// intact to anything without the tier key (store/object_testing.h).
void Forge(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)), {});
  in.close();
  const store::ObjectHeader h = store::ParseHeaderPrefix(file).value();
  std::vector<uint8_t> object(
      file.begin(),
      file.begin() + ptrdiff_t(store::kObjectHeaderBytes + h.payload_bytes));
  object[store::kObjectHeaderBytes + 3] ^= 0x40;
  store::RecomputeChecksum(object);
  std::copy(object.begin(), object.end(), file.begin());  // padding kept
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(file.data()),
             std::streamsize(file.size()));
}

TEST(KvManagerLayeredLoadTest, FillsTheSequencesBlocksAndNamesThem) {
  auto disk = OpenDisk("layered");
  const std::vector<int32_t> prompt = Range(100, 4 * kB + 2);
  Store(*disk, prompt);
  auto b = Manager(disk.get());
  SequenceKv seq = Seq(Root(""));
  std::shared_ptr<LayeredLoad> load = b->BeginLayeredLoad(prompt, &seq);
  ASSERT_NE(load, nullptr);
  EXPECT_EQ(load->tokens(), 4 * kB);
  EXPECT_EQ(load->planned().dram_tokens, 0);
  EXPECT_EQ(load->planned().tier_tokens, std::vector<int>{4 * kB});
  EXPECT_EQ(seq.blocks.size(), 4u);  // held, private until named
  EXPECT_TRUE(seq.chain.empty());
  EXPECT_TRUE(Valid(*b, {&seq}).ok());
  b->RunLayeredLoad(*load);
  EXPECT_EQ(b->FinishLayeredLoad(*load, &seq), 4 * kB);
  EXPECT_EQ(seq.chain.size(), 4u);
  EXPECT_TRUE(Computed(*b, prompt, 4 * kB, seq));
  ASSERT_TRUE(b->Reserve(int(prompt.size()), &seq).ok());
  Compute(*b, prompt, 4 * kB, int(prompt.size()), seq);
  b->Commit(prompt, &seq);
  EXPECT_TRUE(Valid(*b, {&seq}).ok());
  b->Release(&seq);
  EXPECT_EQ(b->Stats().layered_loads, 1u);
  EXPECT_EQ(b->Stats().layered_load_failures, 0u);
  EXPECT_EQ(b->Stats().hit_tokens, uint64_t(4 * kB));
  EXPECT_EQ(b->TierStats()[0].loaded_blocks, 4u);
  EXPECT_EQ(b->TierStats()[0].store.hits, 4u);
  // The loaded blocks are cached like any: the next request maps them.
  SequenceKv again = Seq(Root(""));
  EXPECT_EQ(b->Admit(prompt, &again), 4 * kB);
  EXPECT_TRUE(Computed(*b, prompt, 4 * kB, again));
  b->Release(&again);
  EXPECT_TRUE(Valid(*b, {}).ok());
}

// A DRAM prefix, then chunk objects of 2 blocks from disk.
TEST(KvManagerLayeredLoadTest, ContinuesADramPrefixWithChunks) {
  auto disk = OpenDisk("layered_chunks");
  const std::vector<int32_t> prompt = Range(40, 6 * kB + 1);
  Store(*disk, prompt, /*chunk_blocks=*/2);
  auto b = Manager(disk.get(), 2);
  CacheRun(*b, std::span(prompt).first(2 * kB + 1), Root(""));  // 2 blocks
  SequenceKv seq = Seq(Root(""));
  std::shared_ptr<LayeredLoad> load = b->BeginLayeredLoad(prompt, &seq);
  ASSERT_NE(load, nullptr);
  EXPECT_EQ(load->planned().dram_tokens, 2 * kB);
  EXPECT_EQ(load->planned().tier_tokens, std::vector<int>{4 * kB});
  b->RunLayeredLoad(*load);
  EXPECT_EQ(b->FinishLayeredLoad(*load, &seq), 6 * kB);
  EXPECT_TRUE(Computed(*b, prompt, 6 * kB, seq));
  EXPECT_EQ(b->TierStats()[0].store.hits, 2u);  // two chunk objects
  EXPECT_TRUE(Valid(*b, {&seq}).ok());
  b->Release(&seq);
}

// With one layer per group, layer 0 of every block is read and announced
// before layer 1 is asked for: the forward pass computes layer 0 meanwhile.
TEST(KvManagerLayeredLoadTest, AnnouncesEachGroupOfLayersBeforeReadingTheNext) {
  auto disk = OpenDisk("layered_order");
  const std::vector<int32_t> prompt = Range(7, 4 * kB + 1);
  Store(*disk, prompt);
  kvstash::testing::SteppedTier stepped(disk.get(), /*free_calls=*/1);
  auto b = Manager(&stepped);
  SequenceKv seq = Seq(Root(""));
  std::shared_ptr<LayeredLoad> load = b->BeginLayeredLoad(prompt, &seq);
  ASSERT_NE(load, nullptr);
  std::thread loader([&] { b->RunLayeredLoad(*load); });
  stepped.AwaitCalls(2);  // the second group's read waits
  load->AwaitLayer(0);    // returns: the first group is in
  EXPECT_TRUE(Computed(*b, prompt, 4 * kB, seq));  // layer 0's tags
  std::future<void> layer1 =
      std::async(std::launch::async, [&] { load->AwaitLayer(1); });
  EXPECT_EQ(layer1.wait_for(std::chrono::milliseconds(50)),
            std::future_status::timeout);
  stepped.Open();
  layer1.wait();
  loader.join();
  EXPECT_EQ(b->FinishLayeredLoad(*load, &seq), 4 * kB);
  const auto calls = stepped.calls();
  ASSERT_EQ(calls.size(), 2u);
  const size_t layer_bytes = b->layout().layer_bytes();
  // Group 0: each object's header, then its layer 0; group 1: layer 1.
  ASSERT_EQ(calls[0].size(), 8u);
  EXPECT_EQ(calls[0][0],
            std::make_pair(uint64_t{0}, store::kObjectHeaderBytes));
  EXPECT_EQ(calls[0][1],
            std::make_pair(uint64_t{store::kObjectHeaderBytes}, layer_bytes));
  ASSERT_EQ(calls[1].size(), 4u);
  EXPECT_EQ(calls[1][0],
            std::make_pair(uint64_t(store::kObjectHeaderBytes + layer_bytes),
                           layer_bytes));
  b->Release(&seq);
}

// The third object is forged: the load reads it (reads do not verify), the
// verification refuses it (dropped, counted), and only the two before it
// are named; the sequence holds 2 blocks of verified K/V.
TEST(KvManagerLayeredLoadTest, AForgedObjectEndsTheLoadWhereItLies) {
  auto disk = OpenDisk("layered_forged");
  const std::vector<int32_t> prompt = Range(9, 4 * kB + 1);
  Store(*disk, prompt);
  const std::vector<Hash128> keys = Keys(prompt, Root(""));
  Forge(disk->ObjectPath(keys[2]));
  auto b = Manager(disk.get());
  SequenceKv seq = Seq(Root(""));
  std::shared_ptr<LayeredLoad> load = b->BeginLayeredLoad(prompt, &seq);
  ASSERT_NE(load, nullptr);
  EXPECT_EQ(load->tokens(), 4 * kB);
  b->RunLayeredLoad(*load);
  EXPECT_EQ(b->FinishLayeredLoad(*load, &seq), 2 * kB);
  EXPECT_EQ(seq.chain.size(), 2u);
  EXPECT_EQ(disk->Stats().forged_dropped, 1u);
  EXPECT_EQ(b->Stats().layered_load_failures, 1u);
  EXPECT_EQ(b->TierStats()[0].load_failures, 1u);
  EXPECT_EQ(b->TierStats()[0].loaded_blocks, 2u);
  b->Release(&seq);  // the two unverified blocks are freed
  EXPECT_EQ(b->Stats().cached_blocks, 2u);
  SequenceKv again = Seq(Root(""));
  EXPECT_EQ(Prefill(*b, prompt, &again), 2 * kB);
  EXPECT_TRUE(Computed(*b, prompt, int(prompt.size()), again));
  b->Release(&again);
  EXPECT_TRUE(Valid(*b, {}).ok());
}

TEST(KvManagerLayeredLoadTest, FallsBackToPrefetchWhenItCannotBeLayered) {
  auto disk = OpenDisk("layered_fallback");
  const std::vector<int32_t> prompt = Range(60, 6 * kB + 1);
  Store(*disk, prompt, /*chunk_blocks=*/2);
  const auto none = [](KvManager& m, std::span<const int32_t> tokens) {
    SequenceKv seq = Seq(Root(""));
    const bool layered = m.BeginLayeredLoad(tokens, &seq) != nullptr;
    EXPECT_TRUE(seq.blocks.empty());
    EXPECT_TRUE(Valid(m, {}).ok());
    return !layered;
  };
  {
    // A chunk object that starts inside the DRAM prefix (blocks 2-3, with
    // 3 blocks in DRAM).
    auto b = Manager(disk.get(), 2);
    CacheRun(*b, std::span(prompt).first(3 * kB + 1), Root(""));
    EXPECT_TRUE(none(*b, prompt));
    EXPECT_EQ(b->Prefetch(prompt, Root("")).total(), 6 * kB);
  }
  {
    // A prompt that ends on a block boundary, stored whole: Prefetch loads
    // its last block too (one token is computed, not a block).
    auto b = Manager(disk.get(), 2);
    EXPECT_TRUE(none(*b, std::span(prompt).first(6 * kB)));
  }
  {
    // A tier that reads no ranges.
    kvstash::testing::HeldTier held(disk.get());
    held.Open();
    auto b = Manager(&held, 2);
    EXPECT_TRUE(none(*b, prompt));
  }
  {
    // Nothing in the tiers past DRAM.
    auto b = Manager(disk.get(), 2);
    EXPECT_TRUE(none(*b, Range(9000, 3 * kB)));
  }
  {
    // A tier codec other than raw (its objects are decoded whole).
    auto b = Manager(disk.get(), 2, 1, store::Codec::kZstd);
    EXPECT_TRUE(none(*b, prompt));
  }
}

// A Prefetch of the prefix a layered load is reading waits for it and maps
// what it named, reading nothing itself.
TEST(KvManagerLayeredLoadTest, APrefetchOfTheSamePrefixWaitsAndMapsIt) {
  auto disk = OpenDisk("layered_shared");
  const std::vector<int32_t> prompt = Range(500, 4 * kB + 1);
  Store(*disk, prompt);
  kvstash::testing::SteppedTier stepped(disk.get(), /*free_calls=*/0);
  auto b = Manager(&stepped);
  SequenceKv seq = Seq(Root(""));
  std::shared_ptr<LayeredLoad> load = b->BeginLayeredLoad(prompt, &seq);
  ASSERT_NE(load, nullptr);
  std::thread loader([&] { b->RunLayeredLoad(*load); });
  PrefixHit second;
  std::thread waiter([&] { second = b->Prefetch(prompt, Root("")); });
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (b->Stats().shared_loads == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(b->Stats().shared_loads, 1u);
  stepped.Open();
  loader.join();
  EXPECT_EQ(b->FinishLayeredLoad(*load, &seq), 4 * kB);
  waiter.join();
  EXPECT_EQ(second.dram_tokens, 4 * kB);
  EXPECT_EQ(disk->Stats().hits, 4u);  // every object read once
  b->Release(&seq);
  EXPECT_TRUE(Valid(*b, {}).ok());
}

}  // namespace
}  // namespace kvstash::kvcache
