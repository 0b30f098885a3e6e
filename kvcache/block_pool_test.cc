#include "kvcache/block_pool.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <set>

namespace kvstash::kvcache {
namespace {

std::unique_ptr<BlockPool> MakePool(size_t block_bytes, BlockId n,
                                    bool prefault = false) {
  Result<std::unique_ptr<BlockPool>> pool =
      BlockPool::Create(block_bytes, n, prefault);
  KV_CHECK(pool.ok());
  return std::move(pool).value();
}

TEST(BlockPoolTest, ArenaIsHugePageAlignedAndWritable) {
  for (const bool prefault : {false, true}) {
    std::unique_ptr<BlockPool> pool = MakePool(3000, 1000, prefault);
    EXPECT_EQ(
        reinterpret_cast<uintptr_t>(pool->data(0)) % BlockPool::kArenaAlign,
        0u);
    EXPECT_EQ(pool->data(7), pool->data(0) + 7 * 3000);
    std::memset(pool->data(0), 0xab, 3000 * 1000);
    EXPECT_EQ(pool->data(999)[2999], 0xab);
  }
}

TEST(BlockPoolTest, AllocatesUntilExhausted) {
  std::unique_ptr<BlockPool> pool = MakePool(64, 5);
  EXPECT_EQ(pool->capacity(), 5);
  EXPECT_EQ(pool->block_bytes(), 64u);
  std::set<BlockId> got;
  for (int i = 0; i < 5; ++i) {
    const BlockId id = pool->Allocate();
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 5);
    EXPECT_TRUE(got.insert(id).second);
    EXPECT_EQ(pool->refcount(id), 1);
    EXPECT_FALSE(pool->is_free(id));
  }
  EXPECT_EQ(pool->Allocate(), -1);
  EXPECT_EQ(pool->free_count(), 0u);
  EXPECT_EQ(pool->used_count(), 5u);
}

TEST(BlockPoolTest, FreedBlockIsReusedFirst) {
  std::unique_ptr<BlockPool> pool = MakePool(64, 4);
  const BlockId a = pool->Allocate();
  const BlockId b = pool->Allocate();
  EXPECT_EQ(pool->DecRef(a), 0);
  pool->Free(a);
  EXPECT_TRUE(pool->is_free(a));
  EXPECT_EQ(pool->free_count(), 3u);
  EXPECT_EQ(pool->Allocate(), a);
  EXPECT_NE(a, b);
}

TEST(BlockPoolTest, RefcountsCountHolders) {
  std::unique_ptr<BlockPool> pool = MakePool(64, 2);
  const BlockId a = pool->Allocate();
  EXPECT_EQ(pool->IncRef(a), 2);
  EXPECT_EQ(pool->IncRef(a), 3);
  EXPECT_EQ(pool->DecRef(a), 2);
  EXPECT_EQ(pool->used_count(), 1u);
  EXPECT_EQ(pool->DecRef(a), 1);
  EXPECT_EQ(pool->DecRef(a), 0);
  // Unreferenced but not freed: the owner (the index) keeps it cached.
  EXPECT_EQ(pool->used_count(), 0u);
  EXPECT_FALSE(pool->is_free(a));
  EXPECT_EQ(pool->IncRef(a), 1);
  EXPECT_EQ(pool->used_count(), 1u);
}

TEST(BlockPoolDeathTest, FreeingAReferencedBlockAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::unique_ptr<BlockPool> pool = MakePool(64, 2);
  const BlockId a = pool->Allocate();
  EXPECT_DEATH(pool->Free(a), "freeing a block a sequence holds");
  pool->IncRef(a);
  pool->DecRef(a);
  EXPECT_DEATH(pool->Free(a), "freeing a block a sequence holds");
}

TEST(BlockPoolDeathTest, MisuseOfFreeBlocksAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::unique_ptr<BlockPool> pool = MakePool(64, 2);
  const BlockId a = pool->Allocate();
  pool->DecRef(a);
  pool->Free(a);
  EXPECT_DEATH(pool->Free(a), "block freed twice");
  EXPECT_DEATH(pool->IncRef(a), "referencing a free block");
  EXPECT_DEATH(pool->DecRef(a), "releasing an unreferenced block");
}

}  // namespace
}  // namespace kvstash::kvcache
