// PrefixIndex: the radix tree of cached blocks, keyed by block hash.
//
// A node stands for one named block h_i (block_hash.h) resident in the pool;
// its parent is the node of h_{i-1} (none for the first block of a chain, the
// children of h_0). Because h_i names the whole prefix up to block i, a hit on
// h_i implies a hit on every ancestor, and the index always holds a node's
// ancestors (Insert requires the parent, eviction takes leaves only).
//
// Reference counts live in the BlockPool alone. A node is *evictable* when its
// block's refcount is 0 and it has no children; the order is a LeafFirstLru
// (store/leaf_lru.h, a referenced block pinned): last access is a logical
// clock, refreshed for a node and all its ancestors by Touch, so PopLru takes
// the least recently used unreferenced leaf and a shared head outlives the
// tails below it. Whoever moves a node's refcount across 0 calls
// SyncEvictable(hash) so the order stays exact.
//
// Not thread-safe: KvManager serializes every call.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "base/hash.h"
#include "base/status.h"
#include "kvcache/block_pool.h"
#include "store/leaf_lru.h"

namespace kvstash::kvcache {

class PrefixIndex {
 public:
  // Tokens of a chain's first block kept for display (SetHead).
  static constexpr size_t kHeadTokens = 16;
  // Chain ends Hottest chooses from (the most hit ones CountHit saw).
  static constexpr size_t kHotCandidates = 64;

  struct Node {
    Hash128 hash;
    BlockId block = -1;
    Node* parent = nullptr;  // null for a child of h_0
    // Bit t set: the block is stored in (or queued for) the KvManager's tier
    // t, so it need not be written there again.
    uint8_t in_tiers = 0;
    // Admits that mapped this block (CountHit); never below a child's.
    uint64_t hits = 0;
    // For a child of h_0: the first tokens of its block (SetHead), the
    // chain's first words; empty elsewhere.
    uint8_t head_len = 0;
    std::array<int32_t, kHeadTokens> head{};
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
  size_t evictable_count() const { return lru_.leaf_count(); }

  // The node named `hash`, or null. Stable until that node is erased.
  const Node* Find(const Hash128& hash) const;
  // Of an indexed node: its children, the logical clock of its last Insert
  // or Touch, whether it is evictable.
  int64_t children(const Node& n) const { return lru_.children(n.hash); }
  uint64_t last_access(const Node& n) const { return lru_.last_used(n.hash); }
  bool evictable(const Node& n) const { return lru_.is_leaf(n.hash); }

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

  // Counts a hit on node `hash` and on each of its ancestors (a request
  // mapped the chain up to it). REQUIRES (checked): `hash` is indexed.
  void CountHit(const Hash128& hash);
  // Keeps the first kHeadTokens of `tokens` (its block's) as node `hash`'s
  // head. REQUIRES (checked): `hash` is indexed.
  void SetHead(const Hash128& hash, std::span<const int32_t> tokens);

  // The ends of the k most hit chains: nodes with hits > 0 and no child hit
  // as often (the longest chain of that count), most hits first, then most
  // recent; among the paths of the kHotCandidates chain ends CountHit kept
  // (a chain hit less often than all of those is left out). Bounded work:
  // at most kHotCandidates paths, never the whole index.
  struct Hot {
    const Node* node;
    size_t depth;      // blocks in its chain (1 for a child of h_0)
    const Node* root;  // its chain's first node (holds the head)
  };
  std::vector<Hot> Hottest(size_t k) const;

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
  Node* Mutable(const Hash128& hash);
  // Pins node `n` in lru_ while its block is referenced.
  void UpdatePinned(const Node& n);

  const BlockPool* pool_;
  std::unordered_map<Hash128, Node, Hash128Hasher> nodes_;
  store::LeafFirstLru lru_;  // the nodes, their tree, their order
  // Ends of hit chains (CountHit), at most kHotCandidates: where Hottest
  // looks, so that it never walks the whole index.
  std::vector<Hash128> hot_;
};

}  // namespace kvstash::kvcache
