#include "kvcache/prefix_index.h"

#include <gtest/gtest.h>

#include <vector>

namespace kvstash::kvcache {
namespace {

// A chain of named blocks as the manager would build it: each node's block
// is allocated from the pool (refcount 1) before it is inserted.
class PrefixIndexTest : public ::testing::Test {
 protected:
  PrefixIndexTest()
      : pool_(std::move(BlockPool::Create(64, 16, false)).value()),
        index_(pool_.get()) {}

  static Hash128 H(uint64_t n) { return {n, 0}; }

  // Inserts node H(n) under H(parent) (0: a child of h_0), holding a block.
  BlockId Add(uint64_t n, uint64_t parent) {
    const BlockId b = pool_->Allocate();
    KV_CHECK(b >= 0);
    index_.Insert(H(n), b,
                  parent == 0 ? std::nullopt : std::optional(H(parent)));
    return b;
  }
  void Unref(uint64_t n) {
    const BlockId b = index_.Find(H(n))->block;
    if (pool_->DecRef(b) == 0) index_.SyncEvictable(H(n));
  }
  void Ref(uint64_t n) {
    const BlockId b = index_.Find(H(n))->block;
    if (pool_->IncRef(b) == 1) index_.SyncEvictable(H(n));
  }
  // Evicts everything; returns the names in eviction order.
  std::vector<uint64_t> Drain() {
    std::vector<uint64_t> order;
    while (auto e = index_.PopLru()) {
      pool_->Free(e->block);
      order.push_back(e->hash.lo);
      EXPECT_TRUE(index_.Validate().ok());
    }
    return order;
  }

  std::unique_ptr<BlockPool> pool_;
  PrefixIndex index_;
};

TEST_F(PrefixIndexTest, InsertFindAndTree) {
  const BlockId a = Add(1, 0);
  const BlockId b = Add(2, 1);
  Add(3, 1);
  ASSERT_NE(index_.Find(H(2)), nullptr);
  EXPECT_EQ(index_.Find(H(2))->block, b);
  EXPECT_EQ(index_.Find(H(2))->parent, index_.Find(H(1)));
  EXPECT_EQ(index_.Find(H(1))->block, a);
  EXPECT_EQ(index_.Find(H(1))->parent, nullptr);
  EXPECT_EQ(index_.children(*index_.Find(H(1))), 2);
  EXPECT_EQ(index_.Find(H(9)), nullptr);
  EXPECT_EQ(index_.size(), 3u);
  EXPECT_TRUE(index_.Validate().ok());
}

TEST_F(PrefixIndexTest, ReferencedNodesAndInnerNodesAreNotEvictable) {
  Add(1, 0);
  Add(2, 1);
  EXPECT_EQ(index_.evictable_count(), 0u);
  EXPECT_FALSE(index_.PopLru().has_value());
  Unref(1);  // unreferenced, but has a child
  EXPECT_EQ(index_.evictable_count(), 0u);
  Unref(2);
  EXPECT_EQ(index_.evictable_count(), 1u);
  Ref(2);  // a hit takes it back out
  EXPECT_EQ(index_.evictable_count(), 0u);
  EXPECT_TRUE(index_.Validate().ok());
  EXPECT_EQ(index_.ReclaimableCount(), 0u);
  Unref(2);
  EXPECT_EQ(index_.ReclaimableCount(), 2u);
}

TEST_F(PrefixIndexTest, EvictsLeastRecentlyUsedLeavesFirst) {
  // 1 -> 2 -> 3 and 1 -> 4; 5 alone.
  Add(1, 0);
  Add(2, 1);
  Add(3, 2);
  Add(4, 1);
  Add(5, 0);
  for (uint64_t n = 1; n <= 5; ++n) Unref(n);
  index_.Touch(H(3));  // refreshes 3, 2 and 1: 4 and 5 are older now
  // Leaves by age: 4, 5, then 3; evicting 4 and 3 exposes 2, then 1.
  EXPECT_EQ(Drain(), (std::vector<uint64_t>{4, 5, 3, 2, 1}));
  EXPECT_EQ(index_.size(), 0u);
  EXPECT_EQ(pool_->free_count(), 16u);
}

TEST_F(PrefixIndexTest, TouchRefreshesAncestors) {
  Add(1, 0);
  Add(2, 1);
  Add(5, 0);  // younger than 1, referenced for now
  Unref(1);
  Unref(2);
  index_.Touch(H(2));  // 1 is now younger than 5
  const std::optional<PrefixIndex::Evicted> first = index_.PopLru();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->hash, H(2));
  pool_->Free(first->block);
  Unref(5);
  EXPECT_EQ(Drain(), (std::vector<uint64_t>{5, 1}));
}

TEST_F(PrefixIndexTest, SharedHeadOutlivesItsTails) {
  Add(1, 0);
  Add(2, 1);
  Add(3, 1);
  Add(7, 0);
  for (uint64_t n : {1, 2, 3, 7}) Unref(n);
  index_.Touch(H(7));
  index_.Touch(H(2));
  index_.Touch(H(3));
  // 1 was touched through both tails, so it goes after them, and after 7.
  EXPECT_EQ(Drain(), (std::vector<uint64_t>{7, 2, 3, 1}));
}

TEST_F(PrefixIndexTest, EraseDetachesFromParent) {
  Add(1, 0);
  Add(2, 1);
  Unref(2);
  pool_->Free(index_.Erase(H(2)));
  EXPECT_EQ(index_.Find(H(2)), nullptr);
  EXPECT_EQ(index_.children(*index_.Find(H(1))), 0);
  EXPECT_EQ(index_.evictable_count(), 0u);  // 1 is still referenced
  Unref(1);
  EXPECT_EQ(index_.evictable_count(), 1u);
  EXPECT_TRUE(index_.Validate().ok());
}

TEST_F(PrefixIndexTest, ReclaimableCountSkipsAncestorsOfReferencedNodes) {
  // 1 -> 2 -> 3 with only 3 referenced: nothing can be reclaimed.
  Add(1, 0);
  Add(2, 1);
  Add(3, 2);
  Add(4, 0);
  Unref(1);
  Unref(2);
  Unref(4);
  EXPECT_EQ(index_.evictable_count(), 1u);
  EXPECT_EQ(index_.ReclaimableCount(), 1u);
  Unref(3);
  EXPECT_EQ(index_.ReclaimableCount(), 4u);
}

TEST_F(PrefixIndexTest, DeathOnMisuse) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Add(1, 0);
  EXPECT_DEATH(Add(1, 0), "already in the prefix index");
  EXPECT_DEATH(Add(2, 9), "not in the prefix index");
  EXPECT_DEATH(index_.Erase(H(1)), "referenced or inner");
}

}  // namespace
}  // namespace kvstash::kvcache
