// LeafFirstLru: the eviction order of blocks named along hash chains, shared
// by the DRAM prefix index (kvcache/prefix_index.h) and the disk tier
// (store/disk_tier.h).
//
// Entries are keys (block hashes), each with a recency tick from a logical
// clock. A key has children: the entries inserted under it as parent, plus
// those its owner counts from outside (AddChild: an object queued but not yet
// stored); a count may exist before its key is an entry, and outlives it
// until dropped. An entry is a *leaf* while it has no children and is not
// pinned (a block in use); OldestLeaf is the least recently used leaf, so a
// chain loses its tail before its head, and evicting a leaf may make its
// parent one, which then competes by its own recency. Touch refreshes one
// entry; TouchPath refreshes an entry and every ancestor with one tick (a hit
// on a prefix is a hit on all of it). Ties (same tick) go to the smaller key,
// (hi, lo). With track_all, Oldest gives the least recently used entry of
// all, for an owner whose children may form no leaf at all. It lives in
// store/ because kvcache/ sits above store/ and both need it; it knows
// nothing of blocks, files or refcounts. Not thread-safe: the owner
// serializes calls.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <unordered_map>

#include "base/hash.h"

namespace kvstash::store {

class LeafFirstLru {
 public:
  struct Options {
    bool track_all = false;  // keep the order of every entry (Oldest)
  };
  LeafFirstLru() = default;
  explicit LeafFirstLru(Options options) : options_(options) {}

  size_t size() const { return entries_.size(); }
  size_t leaf_count() const { return leaves_.size(); }
  bool contains(const Hash128& key) const { return entries_.contains(key); }

  // Adds `key` as the most recently used entry, as a child of `parent`
  // (nullopt: of none). REQUIRES (checked): key absent, parent != key.
  void Insert(const Hash128& key, const std::optional<Hash128>& parent);
  // Removes `key`; its parent (if any) loses a child. REQUIRES (checked):
  // key present.
  void Erase(const Hash128& key);

  // Makes `key` (present, checked) the most recently used.
  void Touch(const Hash128& key);
  // Makes `key` (present, checked) and its ancestors the most recently used,
  // with one tick.
  void TouchPath(const Hash128& key);

  // A child of `parent` that is not an entry under it (see above).
  void AddChild(const Hash128& parent);
  void DropChild(const Hash128& parent);  // REQUIRES (checked): counted

  // A pinned entry is never a leaf. REQUIRES (checked): key present.
  void SetPinned(const Hash128& key, bool pinned);

  std::optional<Hash128> OldestLeaf() const;
  // REQUIRES (checked): track_all.
  std::optional<Hash128> Oldest() const;

  // Of a present key (checked): its tick, children, whether it is a leaf.
  uint64_t last_used(const Hash128& key) const;
  int64_t children(const Hash128& key) const;
  bool is_leaf(const Hash128& key) const;

 private:
  struct Entry {
    uint64_t tick = 0;
    std::optional<Hash128> parent;
    bool pinned = false;
  };
  // Oldest first; the key breaks ties.
  struct Order {
    uint64_t tick;
    uint64_t hi;
    uint64_t lo;
    auto operator<=>(const Order&) const = default;
  };
  static Order OrderOf(const Hash128& key, const Entry& e) {
    return {e.tick, key.hi, key.lo};
  }
  bool WantsLeaf(const Hash128& key, const Entry& e) const {
    return !e.pinned && !children_.contains(key);
  }
  Entry& At(const Hash128& key);
  const Entry& At(const Hash128& key) const;
  // Takes `e` out of the ordered sets, and puts it back.
  void Unlist(const Hash128& key, const Entry& e);
  void List(const Hash128& key, const Entry& e);
  void Retick(const Hash128& key, Entry& e, uint64_t tick);

  Options options_;
  std::unordered_map<Hash128, Entry, Hash128Hasher> entries_;
  std::unordered_map<Hash128, int64_t, Hash128Hasher> children_;  // > 0
  std::set<Order> leaves_;
  std::set<Order> all_;  // with track_all only
  uint64_t clock_ = 0;   // the latest tick given out
};

}  // namespace kvstash::store
