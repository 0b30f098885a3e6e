#include "kvcache/prefix_index.h"

#include <string>
#include <unordered_set>

#include "base/check.h"

namespace kvstash::kvcache {

const PrefixIndex::Node* PrefixIndex::Find(const Hash128& hash) const {
  const auto it = nodes_.find(hash);
  return it == nodes_.end() ? nullptr : &it->second;
}

PrefixIndex::Node* PrefixIndex::Mutable(const Hash128& hash) {
  const auto it = nodes_.find(hash);
  KV_CHECK_MSG(it != nodes_.end(), "hash not in the prefix index");
  return &it->second;
}

bool PrefixIndex::ShouldBeEvictable(const Node& n) const {
  return n.children == 0 && pool_->refcount(n.block) == 0;
}

void PrefixIndex::UpdateEvictable(Node* n) {
  const bool want = ShouldBeEvictable(*n);
  if (want == n->evictable) return;
  if (want) {
    lru_.insert(KeyOf(*n));
  } else {
    lru_.erase(KeyOf(*n));
  }
  n->evictable = want;
}

void PrefixIndex::Insert(const Hash128& hash, BlockId block,
                         const std::optional<Hash128>& parent) {
  Node* parent_node = parent ? Mutable(*parent) : nullptr;
  const auto [it, inserted] = nodes_.try_emplace(hash);
  KV_CHECK_MSG(inserted, "hash already in the prefix index");
  Node& n = it->second;
  n.hash = hash;
  n.block = block;
  n.parent = parent_node;
  n.last_access = ++clock_;
  UpdateEvictable(&n);
  if (parent_node != nullptr) {
    ++parent_node->children;
    UpdateEvictable(parent_node);
  }
}

void PrefixIndex::Touch(const Hash128& hash) {
  const uint64_t tick = ++clock_;
  for (Node* n = Mutable(hash); n != nullptr; n = n->parent) {
    if (n->evictable) {
      lru_.erase(KeyOf(*n));
      n->last_access = tick;
      lru_.insert(KeyOf(*n));
    } else {
      n->last_access = tick;
    }
  }
}

void PrefixIndex::MarkInTiers(const Hash128& hash, uint8_t tiers) {
  Mutable(hash)->in_tiers |= tiers;
}

void PrefixIndex::SyncEvictable(const Hash128& hash) {
  UpdateEvictable(Mutable(hash));
}

std::optional<PrefixIndex::Evicted> PrefixIndex::PopLru() {
  if (lru_.empty()) return std::nullopt;
  const LruKey& oldest = *lru_.begin();
  const Hash128 hash{oldest.lo, oldest.hi};
  return Evicted{hash, Erase(hash)};
}

BlockId PrefixIndex::Erase(const Hash128& hash) {
  const auto it = nodes_.find(hash);
  KV_CHECK_MSG(it != nodes_.end(), "hash not in the prefix index");
  Node& n = it->second;
  KV_CHECK_MSG(n.evictable, "erasing a referenced or inner index node");
  lru_.erase(KeyOf(n));
  const BlockId block = n.block;
  Node* parent = n.parent;
  nodes_.erase(it);
  if (parent != nullptr) {
    --parent->children;
    UpdateEvictable(parent);
  }
  return block;
}

size_t PrefixIndex::ReclaimableCount() const {
  // A node is pinned when its block or a descendant's is referenced.
  std::unordered_set<const Node*> pinned;
  for (const auto& [hash, node] : nodes_) {
    if (pool_->refcount(node.block) == 0) continue;
    for (const Node* n = &node; n != nullptr; n = n->parent) {
      if (!pinned.insert(n).second) break;  // the rest is pinned already
    }
  }
  return nodes_.size() - pinned.size();
}

void PrefixIndex::ForEachNode(
    const std::function<void(const Node&)>& fn) const {
  for (const auto& [hash, node] : nodes_) fn(node);
}

Status PrefixIndex::Validate() const {
  std::unordered_map<const Node*, int32_t> children;
  for (const auto& [hash, n] : nodes_) {
    const std::string name = "prefix index node " + hash.Hex();
    if (n.hash != hash) {
      return Status::Internal(name + ": stored under another hash");
    }
    if (n.parent != nullptr) {
      if (Find(n.parent->hash) != n.parent) {
        return Status::Internal(name + ": parent not in the index");
      }
      ++children[n.parent];
    }
  }
  size_t evictable = 0;
  for (const auto& [hash, n] : nodes_) {
    const std::string name = "prefix index node " + hash.Hex();
    const auto it = children.find(&n);
    if (n.children != (it == children.end() ? 0 : it->second)) {
      return Status::Internal(name + ": child count " +
                              std::to_string(n.children) + " is wrong");
    }
    if (n.evictable != ShouldBeEvictable(n)) {
      return Status::Internal(name + ": evictable flag " +
                              std::to_string(n.evictable) +
                              " disagrees with refcount and children");
    }
    if (n.evictable) {
      if (!lru_.contains(KeyOf(n))) {
        return Status::Internal(name + ": evictable but not in the LRU set");
      }
      ++evictable;
    }
  }
  if (evictable != lru_.size()) {
    return Status::Internal("prefix index: LRU set holds " +
                            std::to_string(lru_.size()) + " entries for " +
                            std::to_string(evictable) + " evictable nodes");
  }
  return Status::OK();
}

}  // namespace kvstash::kvcache
