#include "kvcache/kv_manager.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "kvcache/block_hash.h"
#include "kvcache/kv_test_util.h"

namespace kvstash::kvcache {
namespace {

using namespace testing;  // NOLINT: the helpers of kv_test_util.h
using kernels::KvFormat;
using kernels::KvType;

TEST(KvManagerTest, CreateRejectsBadOptions) {
  KvManagerOptions o;
  o.layout = SmallLayout();
  o.prefault = false;
  o.capacity_bytes = o.layout.block_bytes() - 1;
  EXPECT_EQ(KvManager::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.capacity_bytes = 8 * o.layout.block_bytes();
  // Quantized types need head_dim % 8 == 0.
  o.layout.head_dim = 12;
  o.layout.kv = {KvType::kF16, KvType::kQ8};
  const Status bad_type = KvManager::Create(o).status();
  EXPECT_EQ(bad_type.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_type.message().find("kv cache: "), std::string::npos)
      << bad_type.message();
  o.layout = SmallLayout();
  o.layout.block_tokens = 0;
  EXPECT_EQ(KvManager::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.layout = SmallLayout();
  Result<std::unique_ptr<KvManager>> m = KvManager::Create(o);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->Stats().capacity_blocks, 8u);
  EXPECT_EQ((*m)->Stats().block_bytes, o.layout.block_bytes());
  EXPECT_EQ((*m)->Stats().block_tokens, size_t(kB));
  EXPECT_EQ((*m)->Stats().kv_format, KvFormat{});
  EXPECT_EQ((*m)->Stats().capacity_tokens(), size_t(8 * kB));
  EXPECT_EQ((*m)->Stats().bytes_per_token, double(o.layout.block_bytes()) / kB);
}

// Stats name the pool's types; a compressed type holds more tokens in the
// same bytes.
TEST(KvManagerTest, StatsReportTypesAndTokenCapacity) {
  BlockLayout f16 = SmallLayout();
  f16.head_dim = 32;
  for (const KvFormat kv : {KvFormat{KvType::kF16, KvType::kF16},
                            KvFormat{KvType::kQ8, KvType::kQ4H},
                            KvFormat{KvType::kKivi2, KvType::kKivi2},
                            KvFormat{KvType::kKivi4, KvType::kQ4H}}) {
    SCOPED_TRACE(kernels::KvFormatName(kv));
    KvManagerOptions o;
    o.layout = SmallLayout(kv);
    o.layout.head_dim = 32;  // one geometry for all
    o.prefault = false;
    o.capacity_bytes = 64 * f16.block_bytes();  // 64 f16 blocks
    Result<std::unique_ptr<KvManager>> m = KvManager::Create(o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    const KvStats st = (*m)->Stats();
    EXPECT_EQ(st.kv_format, kv);
    EXPECT_EQ(st.bytes_per_token, o.layout.bytes_per_token());
    EXPECT_EQ(st.block_bytes, o.layout.block_bytes());
    EXPECT_EQ(st.capacity_blocks, o.capacity_bytes / o.layout.block_bytes());
    EXPECT_EQ(st.capacity_tokens(), st.capacity_blocks * size_t(kB));
    if (kv != KvFormat{}) {
      EXPECT_LT(st.bytes_per_token, f16.bytes_per_token());
      EXPECT_GT(st.capacity_tokens(), size_t(64 * kB));
    } else {
      EXPECT_EQ(st.capacity_tokens(), size_t(64 * kB));
    }
  }
}

TEST(KvManagerTest, SecondAdmitOfAPromptHitsItsFullBlocks) {
  std::unique_ptr<KvManager> m = MakeManager(8);
  const std::vector<int32_t> prompt = Range(10, 10);  // 2 full blocks + 2
  SequenceKv a = Seq(Root(""));
  EXPECT_EQ(Prefill(*m, prompt, &a), 0);
  EXPECT_EQ(a.blocks.size(), 3u);
  EXPECT_EQ(a.chain.size(), 2u);
  EXPECT_EQ(a.indexed, (std::vector<bool>{true, true}));
  EXPECT_TRUE(Valid(*m, {&a}).ok());
  m->Release(&a);
  EXPECT_TRUE(a.blocks.empty() && a.chain.empty() && a.indexed.empty());
  EXPECT_EQ(a.root, Root(""));
  // The partial third block went back to the free list.
  KvStats st = m->Stats();
  EXPECT_EQ(st.cached_blocks, 2u);
  EXPECT_EQ(st.free_blocks, 6u);
  EXPECT_EQ(st.used_blocks, 0u);

  EXPECT_EQ(m->Lookup(prompt, Root("")), 8);
  SequenceKv b = Seq(Root(""));
  EXPECT_EQ(m->Admit(prompt, &b), 8);
  EXPECT_EQ(b.blocks.size(), 2u);
  EXPECT_TRUE(Computed(*m, prompt, 8, b));
  EXPECT_TRUE(Valid(*m, {&b}).ok());
  st = m->Stats();
  EXPECT_EQ(st.used_blocks, 2u);
  EXPECT_EQ(st.cached_blocks, 0u);
  EXPECT_EQ(st.queried_tokens, 20u);
  EXPECT_EQ(st.hit_tokens, 8u);
  m->Release(&b);
}

// n choices of one prompt: the full blocks once, a copy of the partial one
// per choice, and every choice reads the prompt's K/V.
TEST(KvManagerTest, ForkSharesFullBlocksAndCopiesThePartialOne) {
  std::unique_ptr<KvManager> m = MakeManager(8);
  const std::vector<int32_t> prompt = Range(10, 10);  // 2 full blocks + 2
  SequenceKv parent = Seq(Root(""));
  EXPECT_EQ(Prefill(*m, prompt, &parent), 0);
  std::vector<SequenceKv> children(3, Seq(Root("")));
  for (SequenceKv& c : children) {
    ASSERT_TRUE(m->Fork(parent, 10, &c).ok());
    ASSERT_EQ(c.blocks.size(), 3u);
    EXPECT_EQ(c.blocks[0], parent.blocks[0]);
    EXPECT_EQ(c.blocks[1], parent.blocks[1]);
    EXPECT_NE(c.blocks[2], parent.blocks[2]);
    EXPECT_EQ(c.chain, parent.chain);
    EXPECT_TRUE(Computed(*m, prompt, 10, c));
  }
  EXPECT_TRUE(
      Valid(*m, {&parent, &children[0], &children[1], &children[2]}).ok());
  KvStats st = m->Stats();
  EXPECT_EQ(st.used_blocks, 2u + 4u);  // the prompt's 2, then 1 + 3 tails
  EXPECT_EQ(st.cow_copies, 3u);
  EXPECT_EQ(st.allocations, 3u + 3u);  // the prompt's blocks once
  // The pool has 8 blocks: 6 used, 2 free; a fourth and fifth fork fit, a
  // sixth does not and changes nothing.
  SequenceKv d = Seq(Root("")), e = Seq(Root("")), f = Seq(Root(""));
  ASSERT_TRUE(m->Fork(parent, 10, &d).ok());
  ASSERT_TRUE(m->Fork(parent, 10, &e).ok());
  EXPECT_EQ(m->Fork(parent, 10, &f).code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(f.blocks.empty() && f.chain.empty());
  // A block-aligned fork point copies nothing.
  SequenceKv g = Seq(Root(""));
  ASSERT_TRUE(m->Fork(parent, 8, &g).ok());
  EXPECT_EQ(g.blocks.size(), 2u);
  for (SequenceKv* s :
       {&parent, &children[0], &children[1], &children[2], &d, &e, &g}) {
    m->Release(s);
  }
  st = m->Stats();
  EXPECT_EQ(st.used_blocks, 0u);
  EXPECT_EQ(st.cached_blocks, 2u);  // the prompt's full blocks stay cached
  EXPECT_EQ(st.free_blocks, 6u);
  EXPECT_TRUE(Valid(*m, {}).ok());
}

TEST(KvManagerTest, PartialBlockIsNeverIndexed) {
  std::unique_ptr<KvManager> m = MakeManager(8);
  const std::vector<int32_t> prompt = Range(10, 7);
  CacheRun(*m, prompt, Root(""));
  EXPECT_EQ(m->Stats().cached_blocks, 1u);
  // Same 7 tokens and one more: only the first block is known.
  EXPECT_EQ(m->Lookup(Concat(prompt, {17}), Root("")), kB);
  SequenceKv s = Seq(Root(""));
  EXPECT_EQ(m->Admit(Concat(prompt, {17}), &s), kB);
  m->Release(&s);
}

TEST(KvManagerTest, BlockAlignedPromptCopiesItsLastBlock) {
  std::unique_ptr<KvManager> m = MakeManager(8);
  const std::vector<int32_t> prompt = Range(10, 8);
  CacheRun(*m, prompt, Root(""));
  SequenceKv s = Seq(Root(""));
  EXPECT_EQ(m->Admit(prompt, &s), 7);  // the last token is left to compute
  ASSERT_EQ(s.blocks.size(), 2u);
  EXPECT_EQ(s.chain.size(), 1u);
  EXPECT_EQ(m->Stats().cow_copies, 1u);
  EXPECT_EQ(m->Stats().hit_tokens, 7u);
  EXPECT_TRUE(Computed(*m, prompt, 8, s));  // the copy holds all 4 positions

  // The copy is private: the sequence overwrites position 7 and a second
  // reader of the prompt still sees the original.
  SequenceKv other = Seq(Root(""));
  EXPECT_EQ(m->Admit(Range(10, 9), &other), 8);
  EXPECT_NE(other.blocks[1], s.blocks[1]);
  EXPECT_EQ(std::memcmp(m->BlockData(other.blocks[1]),
                        m->BlockData(s.blocks[1]), m->layout().block_bytes()),
            0);
  ASSERT_TRUE(m->Reserve(8, &s).ok());
  EXPECT_EQ(s.blocks.size(), 2u);
  const std::vector<int32_t> changed = Concat(Range(10, 7), {99});
  Compute(*m, changed, 7, 8, s);
  m->Commit(changed, &s);
  EXPECT_EQ(s.indexed, (std::vector<bool>{true, true}));  // a new name
  EXPECT_TRUE(Computed(*m, prompt, 8, other));
  EXPECT_TRUE(Valid(*m, {&s, &other}).ok());
  m->Release(&s);
  m->Release(&other);
  EXPECT_TRUE(Valid(*m, {}).ok());
}

// Types with a full-precision residual (KIVI) cannot write into a sealed
// block: a prompt ending on a cached block boundary drops that block and
// recomputes its tokens (as a cold run computes them) instead of copying it.
class KvManagerResidualTest : public ::testing::TestWithParam<KvFormat> {};

INSTANTIATE_TEST_SUITE_P(
    ResidualTypes, KvManagerResidualTest,
    ::testing::Values(KvFormat{KvType::kKivi2, KvType::kKivi2},
                      KvFormat{KvType::kKivi4, KvType::kKivi4},
                      KvFormat{KvType::kKivi4, KvType::kQ4H},
                      KvFormat{KvType::kF16, KvType::kKivi2}),
    [](const auto& info) {
      return std::string(kernels::KvTypeName(info.param.k)) + "_" +
             std::string(kernels::KvTypeName(info.param.v));
    });

TEST_P(KvManagerResidualTest, BlockAlignedPromptDropsItsLastBlock) {
  const KvFormat kv = GetParam();
  std::unique_ptr<KvManager> m = MakeManager(8, {}, kv);
  const Hash128 root = Root("", kv);
  const std::vector<int32_t> prompt = Range(10, 8);
  CacheRun(*m, prompt, root);
  EXPECT_EQ(m->Lookup(prompt, root), 8);
  SequenceKv s = Seq(root);
  EXPECT_EQ(m->Admit(prompt, &s), kB);  // the whole last block is recomputed
  ASSERT_EQ(s.blocks.size(), 1u);
  EXPECT_EQ(s.chain.size(), 1u);
  KvStats st = m->Stats();
  EXPECT_EQ(st.cow_copies, 0u);
  EXPECT_EQ(st.hit_tokens, uint64_t(kB));
  EXPECT_EQ(st.cached_blocks, 1u);  // the dropped block stays cached
  EXPECT_TRUE(Computed(*m, prompt, kB, s));
  EXPECT_TRUE(Valid(*m, {&s}).ok());
  // Recomputing the block gives a private duplicate of the indexed one.
  ASSERT_TRUE(m->Reserve(8, &s).ok());
  ASSERT_EQ(s.blocks.size(), 2u);
  Compute(*m, prompt, kB, 8, s);
  m->Commit(prompt, &s);
  EXPECT_EQ(s.indexed, (std::vector<bool>{true, false}));
  EXPECT_TRUE(Computed(*m, prompt, 8, s));
  EXPECT_TRUE(Valid(*m, {&s}).ok());
  m->Release(&s);
  EXPECT_EQ(m->Lookup(prompt, root), 8);
  // A prompt that goes past the cached blocks maps them all: no block is
  // written into.
  SequenceKv t = Seq(root);
  EXPECT_EQ(m->Admit(Range(10, 9), &t), 8);
  EXPECT_EQ(m->Stats().cow_copies, 0u);
  m->Release(&t);
  EXPECT_TRUE(Valid(*m, {}).ok());
  EXPECT_EQ(m->Stats().used_blocks, 0u);
}

TEST(KvManagerTest, CopyOfAnUnchangedPromptStaysPrivate) {
  std::unique_ptr<KvManager> m = MakeManager(8);
  const std::vector<int32_t> prompt = Range(10, 4);
  CacheRun(*m, prompt, Root(""));
  SequenceKv s = Seq(Root(""));
  EXPECT_EQ(Prefill(*m, prompt, &s), 3);
  EXPECT_EQ(s.indexed, (std::vector<bool>{false}));  // duplicate of the node
  EXPECT_TRUE(Valid(*m, {&s}).ok());
  m->Release(&s);
  EXPECT_EQ(m->Stats().cached_blocks, 1u);
  EXPECT_EQ(m->Stats().free_blocks, 7u);
}

TEST(KvManagerTest, WithoutABlockToCopyTheLastSharedBlockIsRecomputed) {
  std::unique_ptr<KvManager> m = MakeManager(3);
  const std::vector<int32_t> prompt = Range(10, 8);
  CacheRun(*m, prompt, Root(""));
  SequenceKv holder = Seq(Root(""));
  ASSERT_TRUE(m->Reserve(1, &holder).ok());  // takes the last free block
  SequenceKv s = Seq(Root(""));
  EXPECT_EQ(m->Admit(prompt, &s), kB);
  EXPECT_EQ(s.blocks.size(), 1u);
  EXPECT_EQ(m->Stats().cow_copies, 0u);
  EXPECT_EQ(m->Stats().cached_blocks, 1u);
  EXPECT_TRUE(Valid(*m, {&s, &holder}).ok());
  m->Release(&s);
  m->Release(&holder);
}

TEST(KvManagerTest, OtherSaltMeansNoHit) {
  std::unique_ptr<KvManager> m = MakeManager(8);
  const std::vector<int32_t> prompt = Range(10, 9);
  CacheRun(*m, prompt, Root(""));
  EXPECT_EQ(m->Lookup(prompt, Root("tenant")), 0);
  SequenceKv s = Seq(Root("tenant"));
  EXPECT_EQ(m->Admit(prompt, &s), 0);
  m->Release(&s);
  EXPECT_EQ(m->Lookup(prompt, Root("")), 8);
}

TEST(KvManagerTest, ConcurrentColdPromptsKeepOneIndexedCopy) {
  std::unique_ptr<KvManager> m = MakeManager(8);
  const std::vector<int32_t> prompt = Range(10, 9);
  SequenceKv a = Seq(Root("")), b = Seq(Root(""));
  EXPECT_EQ(m->Admit(std::span(prompt).first(5), &a), 0);
  EXPECT_EQ(m->Admit(prompt, &b), 0);
  ASSERT_TRUE(m->Reserve(5, &a).ok());
  ASSERT_TRUE(m->Reserve(9, &b).ok());
  Compute(*m, prompt, 0, 5, a);
  Compute(*m, prompt, 0, 9, b);
  m->Commit(std::span(prompt).first(5), &a);
  m->Commit(prompt, &b);
  // b's first block duplicates a's; its second hangs under a's node.
  EXPECT_EQ(b.indexed, (std::vector<bool>{false, true}));
  EXPECT_TRUE(Valid(*m, {&a, &b}).ok());
  m->Release(&a);  // a's block is an inner node now: cached, not evictable
  EXPECT_TRUE(Valid(*m, {&b}).ok());
  EXPECT_EQ(m->Clear(), 0u);
  EXPECT_EQ(m->Lookup(prompt, Root("")), 8);
  m->Release(&b);  // b's duplicate is freed
  KvStats st = m->Stats();
  EXPECT_EQ(st.cached_blocks, 2u);
  EXPECT_EQ(st.free_blocks, 6u);
  EXPECT_EQ(m->Clear(), 2u);
  EXPECT_TRUE(Valid(*m, {}).ok());
}

// Three prompts share a head block: H+T1, H+T2, H+T3 (8 tokens each).
struct SharedHead {
  std::vector<int32_t> head = Range(100, kB);
  std::vector<int32_t> Prompt(int tail) const {
    return Concat(head, Range(200 + 10 * tail, kB));
  }
};

TEST(KvManagerTest, EvictionTakesTheOldestTailsBeforeTheSharedHead) {
  std::unique_ptr<KvManager> m = MakeManager(5);
  const SharedHead p;
  for (int t = 1; t <= 3; ++t) CacheRun(*m, p.Prompt(t), Root(""));
  EXPECT_EQ(m->Stats().cached_blocks, 4u);
  SequenceKv other = Seq(Root(""));
  ASSERT_TRUE(m->Reserve(3 * kB, &other).ok());  // 1 free + 2 evicted
  EXPECT_EQ(m->Stats().evictions, 2u);
  EXPECT_EQ(m->Lookup(p.Prompt(1), Root("")), kB);
  EXPECT_EQ(m->Lookup(p.Prompt(2), Root("")), kB);
  EXPECT_EQ(m->Lookup(p.Prompt(3), Root("")), 2 * kB);
  EXPECT_TRUE(Valid(*m, {&other}).ok());
  m->Release(&other);
}

TEST(KvManagerTest, AHitRefreshesTheWholePath) {
  std::unique_ptr<KvManager> m = MakeManager(5);
  const SharedHead p;
  for (int t = 1; t <= 3; ++t) CacheRun(*m, p.Prompt(t), Root(""));
  SequenceKv s = Seq(Root(""));
  EXPECT_EQ(m->Admit(Concat(p.Prompt(1), {7}), &s), 2 * kB);  // touches T1
  m->Release(&s);
  SequenceKv other = Seq(Root(""));
  ASSERT_TRUE(m->Reserve(3 * kB, &other).ok());  // T2, T3 go
  EXPECT_EQ(m->Lookup(p.Prompt(1), Root("")), 2 * kB);
  EXPECT_EQ(m->Lookup(p.Prompt(2), Root("")), kB);
  EXPECT_EQ(m->Lookup(p.Prompt(3), Root("")), kB);
  m->Release(&other);
}

TEST(KvManagerTest, TouchingATailRefreshesItsAncestors) {
  std::unique_ptr<KvManager> m = MakeManager(4);
  const SharedHead p;
  CacheRun(*m, p.Prompt(1), Root(""));  // H, T1
  const std::vector<int32_t> z = Range(500, kB);
  SequenceKv zs = Seq(Root(""));
  Prefill(*m, z, &zs);  // Z: newer than H's first use, held for now
  SequenceKv s = Seq(Root(""));
  m->Admit(Concat(p.Prompt(1), {7}), &s);  // refreshes T1 and H
  m->Release(&s);
  SequenceKv other = Seq(Root(""));
  ASSERT_TRUE(m->Reserve(2 * kB, &other).ok());  // free one, evicts T1
  EXPECT_EQ(m->Lookup(p.Prompt(1), Root("")), kB);
  m->Release(&zs);  // Z is cached now, older than H's refresh
  ASSERT_TRUE(m->Reserve(3 * kB, &other).ok());
  EXPECT_EQ(m->Lookup(z, Root("")), 0);
  EXPECT_EQ(m->Lookup(p.Prompt(1), Root("")), kB);
  EXPECT_TRUE(Valid(*m, {&other}).ok());
  m->Release(&other);
}

TEST(KvManagerTest, ReserveNeverTakesHeldBlocksAndIsAllOrNothing) {
  std::unique_ptr<KvManager> m = MakeManager(4);
  CacheRun(*m, Range(10, 4), Root(""));  // 1 cached
  SequenceKv a = Seq(Root(""));
  Prefill(*m, Range(50, 8), &a);  // 2 held
  SequenceKv b = Seq(Root(""));
  const Status s = m->Reserve(3 * kB, &b);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("need 3 more blocks, 2 available"),
            std::string::npos)
      << s.message();
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_EQ(m->Stats().cached_blocks, 1u);  // nothing evicted for nothing
  EXPECT_EQ(m->Stats().evictions, 0u);
  EXPECT_TRUE(Valid(*m, {&a, &b}).ok());
  ASSERT_TRUE(m->Reserve(2 * kB, &b).ok());
  EXPECT_EQ(m->Stats().evictions, 1u);
  EXPECT_TRUE(Computed(*m, Range(50, 8), 8, a));
  EXPECT_EQ(m->Reserve(3 * kB, &b).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(b.blocks.size(), 2u);
  ASSERT_TRUE(m->Reserve(2 * kB, &b).ok());  // already covered
  EXPECT_TRUE(Valid(*m, {&a, &b}).ok());
  m->Release(&a);
  m->Release(&b);
}

TEST(KvManagerTest, ReserveCountsBlocksFreedByEvictingAChain) {
  std::unique_ptr<KvManager> m = MakeManager(3);
  CacheRun(*m, Range(10, 8), Root(""));  // H -> T: only T is evictable
  SequenceKv s = Seq(Root(""));
  ASSERT_TRUE(m->Reserve(3 * kB, &s).ok());
  EXPECT_EQ(m->Stats().evictions, 2u);
  EXPECT_TRUE(Valid(*m, {&s}).ok());
  m->Release(&s);
}

TEST(KvManagerTest, ClearDropsOnlyUnreferencedBlocks) {
  std::unique_ptr<KvManager> m = MakeManager(8);
  CacheRun(*m, Range(10, 8), Root(""));
  SequenceKv held = Seq(Root(""));
  Prefill(*m, Range(50, 9), &held);
  EXPECT_EQ(m->Clear(), 2u);
  EXPECT_EQ(m->Lookup(Range(10, 8), Root("")), 0);
  EXPECT_EQ(m->Lookup(Range(50, 9), Root("")), 8);
  KvStats st = m->Stats();
  EXPECT_EQ(st.used_blocks, 3u);
  EXPECT_EQ(st.cached_blocks, 0u);
  EXPECT_EQ(st.free_blocks, 5u);
  EXPECT_EQ(st.evictions, 0u);
  m->Release(&held);
  EXPECT_EQ(m->Clear(), 2u);
  EXPECT_EQ(m->Stats().free_blocks, 8u);
}

TEST(KvManagerTest, ValidateNamesABrokenTable) {
  std::unique_ptr<KvManager> m = MakeManager(4);
  SequenceKv a = Seq(Root(""));
  Prefill(*m, Range(10, 5), &a);
  SequenceKv forged = a;  // a second holder the pool does not know of
  const Status s = Valid(*m, {&a, &forged});
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_NE(s.message().find("refcount"), std::string::npos) << s.message();
  EXPECT_FALSE(Valid(*m, {}).ok());
  m->Release(&a);
}

TEST(KvManagerTest, ThreadsShareOneManager) {
  std::unique_ptr<KvManager> m = MakeManager(24);
  const SharedHead p;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m, &p, t] {
      std::mt19937 rng(static_cast<uint32_t>(t));
      for (int i = 0; i < 200; ++i) {
        const std::vector<int32_t> prompt =
            Concat(p.Prompt(int(rng() % 3)), Range(int32_t(rng() % 4), 3));
        SequenceKv s = Seq(Root(""));
        const int cached = m->Admit(prompt, &s);
        EXPECT_TRUE(Computed(*m, prompt, cached, s));
        if (m->Reserve(int(prompt.size()), &s).ok()) {
          Compute(*m, prompt, cached, int(prompt.size()), s);
          m->Commit(prompt, &s);
          EXPECT_TRUE(Computed(*m, prompt, int(prompt.size()), s));
        }
        m->Release(&s);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_TRUE(Valid(*m, {}).ok());
  EXPECT_EQ(m->Stats().used_blocks, 0u);
  EXPECT_GT(m->Stats().hit_tokens, 0u);
}

// Rows of a compacted prefix (PublishRows, AdmitRows): a document whose
// rows a policy kept, in 3 blocks named by their rows chain.
struct Rows {
  std::vector<int32_t> doc = Range(10, 13);
  Hash128 root = RowsRoot(Root(""), "policy=knorm;ratio=0.5;merge=0");
  std::vector<Hash128> chain = RowsChain(root, doc, 3);
  std::vector<Hash128> Head(size_t n) const {
    return {chain.begin(), chain.begin() + ptrdiff_t(n)};
  }
};

// Publishing indexes the blocks and gives the publisher a copy of the
// (partial) last one; a reader maps the same blocks and, with copy_last, its
// own copy of the last; writing into the copies leaves the shared block as
// it was; after release the chain stays cached.
TEST(KvManagerRowsTest, AdmitRowsMapsPublishedBlocksAndCopiesTheLast) {
  std::unique_ptr<KvManager> m = MakeManager(16);
  const Rows r;
  SequenceKv a = CompactedSeq(*m, Root(""), 3, /*seed=*/1);
  const std::vector<BlockId> published = a.blocks;
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/true, &a));
  ASSERT_EQ(a.blocks.size(), 3u);
  EXPECT_EQ(a.blocks[0], published[0]);
  EXPECT_EQ(a.blocks[1], published[1]);
  EXPECT_NE(a.blocks[2], published[2]);
  EXPECT_TRUE(HasRows(*m, a.blocks[2], 1, 2));
  EXPECT_EQ(a.chain, r.Head(2));
  EXPECT_EQ(a.indexed, (std::vector<bool>{true, true}));
  EXPECT_TRUE(m->HoldsRows(r.chain));
  EXPECT_TRUE(Valid(*m, {&a}).ok());
  KvStats st = m->Stats();
  EXPECT_EQ(st.rows_published, 1u);
  EXPECT_EQ(st.cow_copies, 1u);
  EXPECT_EQ(st.used_blocks, 3u);
  EXPECT_EQ(st.cached_blocks, 1u);  // the published last block

  SequenceKv b = Seq(Root(""));
  ASSERT_TRUE(m->AdmitRows(r.root, r.chain, /*copy_last=*/true, &b));
  EXPECT_TRUE(b.compacted);
  ASSERT_EQ(b.blocks.size(), 3u);
  EXPECT_EQ(b.blocks[0], published[0]);
  EXPECT_EQ(b.blocks[1], published[1]);
  EXPECT_NE(b.blocks[2], published[2]);
  EXPECT_NE(b.blocks[2], a.blocks[2]);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(HasRows(*m, b.blocks[i], 1, i));
  EXPECT_EQ(b.chain, r.Head(2));
  EXPECT_EQ(b.indexed, (std::vector<bool>{true, true}));
  EXPECT_TRUE(Valid(*m, {&a, &b}).ok());

  SequenceKv c = Seq(Root(""));
  ASSERT_TRUE(m->AdmitRows(r.root, r.chain, /*copy_last=*/false, &c));
  EXPECT_EQ(c.blocks, published);
  EXPECT_EQ(c.chain, r.chain);
  EXPECT_EQ(c.indexed, (std::vector<bool>{true, true, true}));
  EXPECT_TRUE(Valid(*m, {&a, &b, &c}).ok());
  st = m->Stats();
  EXPECT_EQ(st.rows_hits, 2u);
  EXPECT_EQ(st.cow_copies, 2u);

  // a and b go on writing rows into their copies.
  std::memset(m->BlockData(a.blocks[2]), 0xa5, m->layout().block_bytes());
  std::memset(m->BlockData(b.blocks[2]), 0x5a, m->layout().block_bytes());
  EXPECT_TRUE(HasRows(*m, published[2], 1, 2));

  m->Release(&a);
  m->Release(&b);
  m->Release(&c);
  EXPECT_TRUE(Valid(*m, {}).ok());
  st = m->Stats();
  EXPECT_EQ(st.used_blocks, 0u);
  EXPECT_EQ(st.cached_blocks, 3u);
  EXPECT_EQ(st.free_blocks, 13u);
  EXPECT_EQ(st.used_blocks + st.cached_blocks + st.free_blocks,
            st.capacity_blocks);
  EXPECT_TRUE(m->HoldsRows(r.chain));
}

// Only the same transform, namespace and prefix name the rows; a chain
// longer than what is held is not mapped in part; and the positions' chain
// of the same tokens never meets the rows.
TEST(KvManagerRowsTest, RowsAreMappedOnlyUnderTheirOwnName) {
  std::unique_ptr<KvManager> m = MakeManager(16);
  const Rows r;
  SequenceKv a = CompactedSeq(*m, Root(""), 3, /*seed=*/2);
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/false, &a));
  m->Release(&a);
  ASSERT_EQ(m->Stats().cached_blocks, 3u);

  const Hash128 other_policy =
      RowsRoot(Root(""), "policy=knorm;ratio=0.75;merge=0");
  const Hash128 other_tenant =
      RowsRoot(Root("tenant"), "policy=knorm;ratio=0.5;merge=0");
  const std::vector<std::pair<Hash128, std::vector<Hash128>>> others = {
      {other_policy, RowsChain(other_policy, r.doc, 3)},
      {other_tenant, RowsChain(other_tenant, r.doc, 3)},
      {r.root, RowsChain(r.root, Concat(r.doc, {1}), 3)},
      {r.root, RowsChain(r.root, r.doc, 4)},  // one block past the held ones
  };
  for (const auto& [root, chain] : others) {
    EXPECT_FALSE(m->HoldsRows(chain));
    SequenceKv s = Seq(Root(""));
    EXPECT_FALSE(m->AdmitRows(root, chain, /*copy_last=*/true, &s));
    EXPECT_TRUE(s.blocks.empty() && s.chain.empty() && s.indexed.empty());
    EXPECT_FALSE(s.compacted);
    EXPECT_TRUE(Valid(*m, {&s}).ok());
  }
  KvStats st = m->Stats();
  EXPECT_EQ(st.rows_hits, 0u);
  EXPECT_EQ(st.used_blocks, 0u);
  EXPECT_EQ(st.cached_blocks, 3u);

  EXPECT_EQ(m->Lookup(r.doc, Root("")), 0);
  SequenceKv t = Seq(Root(""));
  EXPECT_EQ(m->Admit(r.doc, &t), 0);
  EXPECT_TRUE(t.blocks.empty());
  m->Release(&t);
  EXPECT_EQ(m->Stats().hit_tokens, 0u);
}

// A second sequence that publishes the same rows keeps its blocks private
// (named, not indexed; its last block is already private, so no copy is
// made): readers map the first publisher's blocks and nothing leaks.
TEST(KvManagerRowsTest, PublishingTheSameRowsTwiceKeepsOneIndexedCopy) {
  std::unique_ptr<KvManager> m = MakeManager(16);
  const Rows r;
  SequenceKv a = CompactedSeq(*m, Root(""), 3, /*seed=*/3);
  SequenceKv b = CompactedSeq(*m, Root(""), 3, /*seed=*/3);
  const std::vector<BlockId> a_blocks = a.blocks, b_blocks = b.blocks;
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/false, &a));
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/true, &b));
  EXPECT_EQ(b.blocks, b_blocks);
  EXPECT_EQ(b.chain, r.chain);
  EXPECT_EQ(b.indexed, (std::vector<bool>{false, false, false}));
  EXPECT_EQ(m->Stats().cow_copies, 0u);
  EXPECT_TRUE(Valid(*m, {&a, &b}).ok());

  SequenceKv c = Seq(Root(""));
  ASSERT_TRUE(m->AdmitRows(r.root, r.chain, /*copy_last=*/false, &c));
  EXPECT_EQ(c.blocks, a_blocks);
  EXPECT_TRUE(Valid(*m, {&a, &b, &c}).ok());
  m->Release(&b);  // its duplicates are freed
  m->Release(&a);
  m->Release(&c);
  EXPECT_TRUE(Valid(*m, {}).ok());
  const KvStats st = m->Stats();
  EXPECT_EQ(st.used_blocks, 0u);
  EXPECT_EQ(st.cached_blocks, 3u);
  EXPECT_EQ(st.free_blocks, 13u);
}

// Pool pressure evicts the rows chain leaf first; then the chain is no
// longer held, and a sequence publishing it again indexes only the missing
// leaf, under the surviving head.
TEST(KvManagerRowsTest, EvictionTakesTheRowsLeafFirst) {
  std::unique_ptr<KvManager> m = MakeManager(7);
  const Rows r;
  SequenceKv a = CompactedSeq(*m, Root(""), 3, /*seed=*/4);
  const std::vector<BlockId> a_blocks = a.blocks;
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/false, &a));
  m->Release(&a);
  SequenceKv other = Seq(Root(""));
  ASSERT_TRUE(m->Reserve(5 * kB, &other).ok());  // 4 free + 1 evicted
  EXPECT_EQ(m->Stats().evictions, 1u);
  EXPECT_FALSE(m->HoldsRows(r.chain));
  EXPECT_TRUE(m->HoldsRows(r.Head(2)));
  SequenceKv s = Seq(Root(""));
  EXPECT_FALSE(m->AdmitRows(r.root, r.chain, /*copy_last=*/false, &s));
  EXPECT_TRUE(s.blocks.empty());
  EXPECT_TRUE(Valid(*m, {&other, &s}).ok());
  m->Release(&other);

  SequenceKv b = CompactedSeq(*m, Root(""), 3, /*seed=*/5);
  const BlockId b_last = b.blocks[2];
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/true, &b));
  EXPECT_EQ(b.indexed, (std::vector<bool>{false, false}));  // + a copy
  EXPECT_NE(b.blocks[2], b_last);
  EXPECT_TRUE(Valid(*m, {&b}).ok());
  ASSERT_TRUE(m->AdmitRows(r.root, r.chain, /*copy_last=*/false, &s));
  EXPECT_EQ(s.blocks, (std::vector<BlockId>{a_blocks[0], a_blocks[1], b_last}));
  EXPECT_TRUE(HasRows(*m, s.blocks[2], 5, 2));
  EXPECT_TRUE(Valid(*m, {&b, &s}).ok());
  m->Release(&b);
  m->Release(&s);

  ASSERT_TRUE(m->Reserve(7 * kB, &other).ok());  // the whole chain goes
  EXPECT_FALSE(m->HoldsRows(r.Head(1)));
  EXPECT_TRUE(Valid(*m, {&other}).ok());
  m->Release(&other);
}

// Without a block for the copy of the last block, PublishRows publishes
// nothing and AdmitRows maps nothing; without copy_last both succeed.
TEST(KvManagerRowsTest, WithoutABlockForTheCopyNothingIsPublishedOrMapped) {
  std::unique_ptr<KvManager> m = MakeManager(3);
  const Rows r;
  SequenceKv a = CompactedSeq(*m, Root(""), 3, /*seed=*/6);
  const std::vector<BlockId> a_blocks = a.blocks;
  EXPECT_FALSE(m->PublishRows(r.root, r.chain, /*copy_last=*/true, &a));
  EXPECT_EQ(a.blocks, a_blocks);
  EXPECT_TRUE(a.chain.empty() && a.indexed.empty());
  EXPECT_FALSE(m->HoldsRows(r.Head(1)));
  EXPECT_EQ(m->Stats().rows_published, 0u);
  EXPECT_TRUE(Valid(*m, {&a}).ok());
  ASSERT_TRUE(m->PublishRows(r.root, r.chain, /*copy_last=*/false, &a));

  SequenceKv b = Seq(Root(""));
  EXPECT_FALSE(m->AdmitRows(r.root, r.chain, /*copy_last=*/true, &b));
  EXPECT_TRUE(b.blocks.empty() && b.chain.empty() && b.indexed.empty());
  EXPECT_FALSE(b.compacted);
  EXPECT_EQ(m->Stats().rows_hits, 0u);
  EXPECT_TRUE(Valid(*m, {&a, &b}).ok());
  ASSERT_TRUE(m->AdmitRows(r.root, r.chain, /*copy_last=*/false, &b));
  EXPECT_EQ(b.blocks, a_blocks);
  EXPECT_TRUE(Valid(*m, {&a, &b}).ok());
  m->Release(&a);
  m->Release(&b);
  EXPECT_EQ(m->Stats().cached_blocks, 3u);
}

// The path a server takes: prefill, compact with Rewrite (13 positions into
// rows that fill 2 blocks), publish; the positions stay cached under their
// own chain beside the rows.
TEST(KvManagerRowsTest, ARewrittenSequencePublishesItsRows) {
  std::unique_ptr<KvManager> m = MakeManager(16);
  const Rows r;
  SequenceKv a = Seq(Root(""));
  Prefill(*m, r.doc, &a);  // 4 blocks, 3 full
  auto compact = [&](std::span<const BlockId>, std::span<const BlockId> to) {
    for (size_t i = 0; i < to.size(); ++i) FillRows(*m, to[i], 7, i);
    return Status::OK();
  };
  ASSERT_TRUE(m->Rewrite(4, 2, compact, &a).ok());
  ASSERT_TRUE(a.compacted);
  ASSERT_EQ(a.blocks.size(), 2u);
  const std::vector<Hash128> chain = RowsChain(r.root, r.doc, 2);
  ASSERT_TRUE(m->PublishRows(r.root, chain, /*copy_last=*/true, &a));
  SequenceKv b = Seq(Root(""));
  ASSERT_TRUE(m->AdmitRows(r.root, chain, /*copy_last=*/true, &b));
  EXPECT_EQ(b.blocks[0], a.blocks[0]);
  EXPECT_TRUE(HasRows(*m, b.blocks[0], 7, 0));
  EXPECT_TRUE(HasRows(*m, b.blocks[1], 7, 1));
  EXPECT_TRUE(Valid(*m, {&a, &b}).ok());
  m->Release(&a);
  m->Release(&b);
  EXPECT_TRUE(Valid(*m, {}).ok());
  EXPECT_EQ(m->Stats().cached_blocks, 3u + 2u);
  EXPECT_EQ(m->Lookup(r.doc, Root("")), 3 * kB);
  EXPECT_TRUE(m->HoldsRows(chain));
}

// Random admits, steps (prefill chunks, then decode), commits, releases and
// clears over sequences with shared prefixes in a pool so small that nearly
// every allocation evicts. Every operation is followed by Validate and by a
// check that every live sequence still sees the K/V it computed.
class KvManagerRandomTest : public ::testing::TestWithParam<KvFormat> {};

INSTANTIATE_TEST_SUITE_P(
    KvTypes, KvManagerRandomTest,
    ::testing::Values(KvFormat{KvType::kF16, KvType::kF16},
                      KvFormat{KvType::kQ8, KvType::kQ4H},
                      KvFormat{KvType::kKivi4, KvType::kKivi2}),
    [](const auto& info) {
      return std::string(kernels::KvTypeName(info.param.k)) + "_" +
             std::string(kernels::KvTypeName(info.param.v));
    });

TEST_P(KvManagerRandomTest, RandomOperationsKeepEveryFact) {
  constexpr int kSeqs = 5, kPool = 14, kMaxLen = 40, kOps = 4000;
  const KvFormat kv = GetParam();
  const bool residual = kernels::KvHasResidual(kv);
  std::unique_ptr<KvManager> m = MakeManager(kPool, {}, kv);
  std::mt19937 rng(12345);
  auto rand = [&rng](int n) { return int(rng() % uint32_t(n)); };
  std::vector<std::vector<int32_t>> bases(3);
  for (std::vector<int32_t>& b : bases) {
    for (int i = 0; i < 24; ++i) b.push_back(rand(3));
  }
  const Hash128 roots[2] = {Root("", kv), Root("tenant", kv)};

  // Besides the tag, each run stamps the positions it computes with its own
  // id (in V): a run that wrote into a block another run can see would
  // overwrite a stamp even where it stores the same tag.
  struct Sim {
    SequenceKv kv;
    std::vector<int32_t> tokens;
    uint64_t run = 0;
    int own_from = 0;  // positions [own_from, done) were computed by `run`
    int done = 0;
    bool active = false;
  };
  uint64_t runs = 0;
  auto intact = [&m](const Sim& s) {
    for (int p = s.own_from; p < s.done; ++p) {
      uint64_t stamp;
      std::memcpy(&stamp, Slot(*m, s.kv, p, kernels::KvSide::kV),
                  sizeof(stamp));
      if (stamp != s.run) return false;
    }
    return Computed(*m, s.tokens, s.done, s.kv);
  };
  std::vector<Sim> sims(kSeqs);
  std::vector<const SequenceKv*> live;
  for (const Sim& s : sims) live.push_back(&s.kv);

  auto start = [&](Sim& s) {
    const std::vector<int32_t>& base = bases[size_t(rand(3))];
    s.tokens.assign(base.begin(), base.begin() + rand(25));
    for (int n = rand(9); n > 0 || s.tokens.empty(); --n) {
      s.tokens.push_back(rand(3));
    }
    s.kv.root = roots[rand(2)];
    const int n = int(s.tokens.size());
    const int known = m->Lookup(s.tokens, s.kv.root);
    s.done = m->Admit(s.tokens, &s.kv);
    s.own_from = s.done;
    s.run = ++runs;
    // A block-aligned prompt cached whole: copy-on-write (n - 1), or the
    // last block dropped (n - kB: always for residual types).
    ASSERT_TRUE(residual && known == n ? s.done == n - kB
                                       : s.done == std::min(known, n - 1) ||
                                             (known == n && s.done == n - kB))
        << "lookup " << known << " admit " << s.done << " of " << n;
    s.active = true;
  };
  auto step = [&](Sim& s) {
    const int target = std::min(s.done + 1 + rand(6), kMaxLen);
    while (int(s.tokens.size()) < target) s.tokens.push_back(rand(3));
    const std::vector<BlockId> before = s.kv.blocks;
    const Status st = m->Reserve(target, &s.kv);
    if (!st.ok()) {
      ASSERT_EQ(st.code(), StatusCode::kResourceExhausted);
      ASSERT_EQ(s.kv.blocks, before);
      return;
    }
    Compute(*m, s.tokens, s.done, target, s.kv);
    for (int p = s.done; p < target; ++p) {
      std::memcpy(Slot(*m, s.kv, p, kernels::KvSide::kV), &s.run,
                  sizeof(s.run));
    }
    s.done = target;
    m->Commit(std::span(s.tokens).first(size_t(s.done)), &s.kv);
  };
  auto release = [&](Sim& s) {
    m->Release(&s.kv);
    s.active = false;
  };

  for (int op = 0; op < kOps; ++op) {
    Sim& s = sims[size_t(rand(kSeqs))];
    const int r = rand(100);
    if (r == 0) {
      m->Clear();
    } else if (!s.active) {
      start(s);
    } else if (r < 15 || s.done >= kMaxLen) {
      release(s);
    } else {
      step(s);
    }
    if (HasFatalFailure()) return;
    const Status v = m->Validate(live);
    ASSERT_TRUE(v.ok()) << "op " << op << ": " << v.ToString();
    for (const Sim& t : sims) {
      if (t.active) {
        ASSERT_TRUE(intact(t)) << "op " << op;
      }
    }
  }
  const KvStats mid = m->Stats();
  EXPECT_GT(mid.evictions, 100u);
  EXPECT_GT(mid.hit_tokens, 0u);
  if (residual) {
    EXPECT_EQ(mid.cow_copies, 0u);
  } else {
    EXPECT_GT(mid.cow_copies, 0u);
  }
  for (Sim& s : sims) release(s);
  ASSERT_TRUE(m->Validate({}).ok());  // every refcount is 0
  const KvStats st = m->Stats();
  EXPECT_EQ(st.used_blocks, 0u);
  EXPECT_EQ(st.used_blocks + st.cached_blocks + st.free_blocks, size_t(kPool));
}

// The dashboard's hottest prefixes: per-node hit counts, the longest chain
// of each count, its first tokens, most hits first.
TEST(KvManagerTest, HottestPrefixesCountHitsPerChain) {
  std::unique_ptr<KvManager> m = MakeManager(16);
  EXPECT_TRUE(m->HottestPrefixes(4).empty());
  // Two prompts sharing their first block, 3 and 2 full blocks long.
  const std::vector<int32_t> head = Range(100, kB);
  const std::vector<int32_t> a = Concat(head, Range(10, 2 * kB + 1));
  const std::vector<int32_t> b = Concat(head, Range(50, kB + 1));
  CacheRun(*m, a, Root(""));
  EXPECT_TRUE(m->HottestPrefixes(4).empty());  // a cold run hits nothing
  CacheRun(*m, b, Root(""));                   // hits the shared head
  std::vector<HotPrefix> hot = m->HottestPrefixes(4);
  ASSERT_EQ(hot.size(), 1u);
  EXPECT_EQ(hot[0].hits, 1u);
  EXPECT_EQ(hot[0].tokens, size_t(kB));
  EXPECT_EQ(hot[0].first_tokens, head);
  for (int i = 0; i < 3; ++i) CacheRun(*m, a, Root(""));
  CacheRun(*m, b, Root(""));
  // head: 5 hits; a's chain 3 (its first two blocks are covered by its
  // third, hit as often); b's chain 1.
  hot = m->HottestPrefixes(4);
  ASSERT_EQ(hot.size(), 3u);
  EXPECT_EQ(hot[0].hits, 5u);
  EXPECT_EQ(hot[0].tokens, size_t(kB));
  EXPECT_EQ(hot[1].hits, 3u);
  EXPECT_EQ(hot[1].tokens, size_t(3 * kB));
  EXPECT_EQ(hot[2].hits, 1u);
  EXPECT_EQ(hot[2].tokens, size_t(2 * kB));
  for (const HotPrefix& p : hot) {
    EXPECT_EQ(p.first_tokens, head);
    EXPECT_FALSE(p.in_use);
    EXPECT_EQ(p.in_tiers, 0);
  }
  ASSERT_EQ(m->HottestPrefixes(1).size(), 1u);
  EXPECT_EQ(m->HottestPrefixes(1)[0].hits, 5u);
  // A chain a sequence holds is in use.
  SequenceKv held = Seq(Root(""));
  EXPECT_EQ(m->Admit(a, &held), 3 * kB);
  hot = m->HottestPrefixes(2);
  ASSERT_EQ(hot.size(), 2u);
  EXPECT_EQ(hot[1].hits, 4u);
  EXPECT_EQ(hot[1].tokens, size_t(3 * kB));
  EXPECT_TRUE(hot[1].in_use);
  m->Release(&held);
  // Eviction forgets them.
  m->Clear();
  EXPECT_TRUE(m->HottestPrefixes(4).empty());
  EXPECT_TRUE(Valid(*m, {}).ok());
}

// Hottest looks at a bounded list of chain ends, yet a chain that becomes
// the hottest after many others were hit gets in.
TEST(KvManagerTest, HottestPrefixesFindALateHotChainAmongMany) {
  std::unique_ptr<KvManager> m = MakeManager(512);
  const auto prompt = [](int i) { return Range(1000 * (i + 1), kB + 1); };
  for (int i = 0; i < 200; ++i) {
    CacheRun(*m, prompt(i), Root(""));
    CacheRun(*m, prompt(i), Root(""));  // one hit each
  }
  for (int r = 0; r < 3; ++r) CacheRun(*m, prompt(150), Root(""));
  const std::vector<HotPrefix> hot = m->HottestPrefixes(3);
  ASSERT_EQ(hot.size(), 3u);
  EXPECT_EQ(hot[0].hits, 4u);
  EXPECT_EQ(hot[0].first_tokens, Range(151000, kB));
  EXPECT_EQ(hot[1].hits, 1u);
}

}  // namespace
}  // namespace kvstash::kvcache
