#include "store/leaf_lru.h"

#include <gtest/gtest.h>

namespace kvstash::store {
namespace {

Hash128 K(uint64_t i) { return Hash128{i, i * 7 + 1}; }

// A chain a <- b <- c and a branch a <- d: tails go first, a parent becomes
// a leaf when its last child goes, and a path touch refreshes ancestors.
TEST(LeafFirstLruTest, TailsBeforeHeadsAndPathsRefreshTogether) {
  LeafFirstLru lru;
  lru.Insert(K(1), std::nullopt);
  lru.Insert(K(2), K(1));
  lru.Insert(K(3), K(2));
  lru.Insert(K(4), K(1));
  EXPECT_EQ(lru.size(), 4u);
  EXPECT_EQ(lru.leaf_count(), 2u);  // 3 and 4
  EXPECT_FALSE(lru.is_leaf(K(1)));
  EXPECT_EQ(lru.children(K(1)), 2);
  EXPECT_EQ(lru.OldestLeaf(), K(3));  // inserted before 4
  lru.TouchPath(K(3));                // 3, 2, 1 now newer than 4
  EXPECT_EQ(lru.OldestLeaf(), K(4));
  EXPECT_EQ(lru.last_used(K(1)), lru.last_used(K(3)));
  lru.Erase(K(4));
  EXPECT_EQ(lru.OldestLeaf(), K(3));
  lru.Erase(K(3));
  EXPECT_EQ(lru.OldestLeaf(), K(2));
  lru.Erase(K(2));
  EXPECT_EQ(lru.OldestLeaf(), K(1));
  lru.Erase(K(1));
  EXPECT_EQ(lru.OldestLeaf(), std::nullopt);
}

// Pinned entries and outside children are never leaves; Touch refreshes one
// entry; track_all orders every entry.
TEST(LeafFirstLruTest, PinsOutsideChildrenAndOldest) {
  LeafFirstLru lru(LeafFirstLru::Options{.track_all = true});
  lru.Insert(K(1), std::nullopt);
  lru.Insert(K(2), std::nullopt);
  lru.SetPinned(K(1), true);
  EXPECT_EQ(lru.OldestLeaf(), K(2));
  lru.AddChild(K(2));  // e.g. an object of its chain still being written
  EXPECT_EQ(lru.OldestLeaf(), std::nullopt);
  EXPECT_EQ(lru.Oldest(), K(1));
  lru.DropChild(K(2));
  lru.SetPinned(K(1), false);
  EXPECT_EQ(lru.OldestLeaf(), K(1));
  lru.Touch(K(1));
  EXPECT_EQ(lru.OldestLeaf(), K(2));
  EXPECT_EQ(lru.Oldest(), K(2));
  // A count before its key is an entry: the entry arrives as a non-leaf.
  lru.AddChild(K(9));
  lru.Insert(K(9), std::nullopt);
  EXPECT_FALSE(lru.is_leaf(K(9)));
}

}  // namespace
}  // namespace kvstash::store
