// PrefixIndex: the radix tree of cached blocks, keyed by block hash.
//
// A node stands for one named block h_i (block_hash.h) resident in the pool;
// its parent is the node of h_{i-1} (none for the first block of a chain, the
// children of h_0). Because h_i names the whole prefix up to block i, a hit on
// h_i implies a hit on every ancestor, and the index always holds a node's
// ancestors (Insert requires the parent, eviction takes leaves only).
//
// Reference counts live in the BlockPool alone. A node is *evictable* when its
// block's refcount is 0 and it has no children; the evictable nodes are kept
// ordered by last access (a logical clock, refreshed for a node and all its
// ancestors by Touch), so PopLru takes the least recently used unreferenced
// leaf and a shared head outlives the tails below it. Whoever moves a node's
// refcount across 0 calls SyncEvictable(hash) so the order stays exact.
//
// Not thread-safe: KvManager serializes every call.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <unordered_map>

#include "base/hash.h"
#include "base/status.h"
#include "kvcache/block_pool.h"

namespace kvstash::kvcache {

class PrefixIndex {
 public:
  struct Node {
    Hash128 hash;
    BlockId block = -1;
    Node* parent = nullptr;  // null for a child of h_0
    int32_t children = 0;
    uint64_t last_access = 0;  // logical clock of the last Insert or Touch
    // Reserved for retention policies (TTL, pinning, workflow priorities);
    // always 0 today, and eviction is plain LRU.
    int32_t priority = 0;
    bool evictable = false;  // in the LRU set
    // Bit t set: the block is stored in (or queued for) the KvManager's tier
    // t, so it need not be written there again.
    uint8_t in_tiers = 0;
  };

  struct Evicted {
    Hash128 hash;
    BlockId block;
  };

  // `pool` supplies the refcounts and must outlive the index.
  explicit PrefixIndex(const BlockPool* pool) : pool_(pool) {}
  PrefixIndex(const PrefixIndex&) = delete;
  PrefixIndex& operator=(const PrefixIndex&) = delete;

  size_t size() const { return nodes_.size(); }
  size_t evictable_count() const { return lru_.size(); }

  // The node named `hash`, or null. Stable until that node is erased.
  const Node* Find(const Hash128& hash) const;

  // Adds node `hash` for `block`, under `parent` (nullopt: a child of h_0),
  // with a fresh access tick. REQUIRES (checked): `hash` is not indexed and
  // `parent` is. The caller owns `block` until the node is evicted or erased.
  void Insert(const Hash128& hash, BlockId block,
              const std::optional<Hash128>& parent);

  // Refreshes the last access of node `hash` and of all its ancestors.
  // REQUIRES (checked): `hash` is indexed.
  void Touch(const Hash128& hash);

  // Sets bits `tiers` in node `hash`'s in_tiers. REQUIRES (checked): `hash`
  // is indexed.
  void MarkInTiers(const Hash128& hash, uint8_t tiers);

  // Re-reads the refcount of node `hash`'s block: call after it moved
  // between 0 and nonzero. REQUIRES (checked): `hash` is indexed.
  void SyncEvictable(const Hash128& hash);

  // Removes the least recently used evictable node and returns it (its block
  // now belongs to the caller); nullopt when nothing is evictable. Its parent
  // may become evictable.
  std::optional<Evicted> PopLru();

  // Removes node `hash` and returns its block. REQUIRES (checked): the node
  // is evictable.
  BlockId Erase(const Hash128& hash);

  // How many blocks repeated PopLru calls could reclaim now: the nodes with
  // no referenced block in their subtree. O(size()).
  size_t ReclaimableCount() const;

  void ForEachNode(const std::function<void(const Node&)>& fn) const;

  // Checks the tree: every parent indexed, child counts exact, the LRU set
  // equal to the unreferenced leaves with matching ticks. Internal error
  // naming the first broken fact.
  Status Validate() const;

 private:
  // Key of an evictable node in lru_: oldest first, hash as the tie-break.
  struct LruKey {
    uint64_t tick;
    uint64_t hi;
    uint64_t lo;
    auto operator<=>(const LruKey&) const = default;
  };
  static LruKey KeyOf(const Node& n) {
    return {n.last_access, n.hash.hi, n.hash.lo};
  }

  Node* Mutable(const Hash128& hash);
  bool ShouldBeEvictable(const Node& n) const;
  // Brings n's membership in lru_ in line with ShouldBeEvictable.
  void UpdateEvictable(Node* n);

  const BlockPool* pool_;
  std::unordered_map<Hash128, Node, Hash128Hasher> nodes_;
  std::set<LruKey> lru_;
  uint64_t clock_ = 0;
};

}  // namespace kvstash::kvcache
