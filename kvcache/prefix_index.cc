#include "kvcache/prefix_index.h"

#include <algorithm>
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

void PrefixIndex::UpdatePinned(const Node& n) {
  lru_.SetPinned(n.hash, pool_->refcount(n.block) != 0);
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
  lru_.Insert(hash, parent);
  UpdatePinned(n);
}

void PrefixIndex::Touch(const Hash128& hash) { lru_.TouchPath(hash); }

void PrefixIndex::MarkInTiers(const Hash128& hash, uint8_t tiers) {
  Mutable(hash)->in_tiers |= tiers;
}

void PrefixIndex::SyncEvictable(const Hash128& hash) {
  UpdatePinned(*Mutable(hash));
}

std::optional<PrefixIndex::Evicted> PrefixIndex::PopLru() {
  const std::optional<Hash128> oldest = lru_.OldestLeaf();
  if (!oldest) return std::nullopt;
  return Evicted{*oldest, Erase(*oldest)};
}

BlockId PrefixIndex::Erase(const Hash128& hash) {
  const auto it = nodes_.find(hash);
  KV_CHECK_MSG(it != nodes_.end(), "hash not in the prefix index");
  KV_CHECK_MSG(lru_.is_leaf(hash), "erasing a referenced or inner index node");
  const BlockId block = it->second.block;
  lru_.Erase(hash);
  nodes_.erase(it);
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

void PrefixIndex::CountHit(const Hash128& hash) {
  Node* const deepest = Mutable(hash);
  for (Node* n = deepest; n != nullptr; n = n->parent) ++n->hits;
  // The chain's end joins the candidates (a bounded heavy-hitters list):
  // in a free slot, else in place of the one with the fewest hits (or of
  // one evicted since) when it has at least as many.
  size_t weakest = 0;
  uint64_t fewest = UINT64_MAX;
  for (size_t i = 0; i < hot_.size(); ++i) {
    if (hot_[i] == hash) return;
    const Node* n = Find(hot_[i]);
    const uint64_t hits = n == nullptr ? 0 : n->hits;
    if (hits < fewest) {
      fewest = hits;
      weakest = i;
    }
  }
  if (hot_.size() < kHotCandidates) {
    hot_.push_back(hash);
  } else if (deepest->hits >= fewest) {
    hot_[weakest] = hash;
  }
}

void PrefixIndex::SetHead(const Hash128& hash,
                          std::span<const int32_t> tokens) {
  Node* n = Mutable(hash);
  n->head_len = uint8_t(std::min(tokens.size(), kHeadTokens));
  std::copy_n(tokens.begin(), n->head_len, n->head.begin());
}

std::vector<PrefixIndex::Hot> PrefixIndex::Hottest(size_t k) const {
  if (k == 0) return {};
  // The paths of the candidates; a node with a child on them hit as often
  // is covered: a longer chain stands for it. At most kHotCandidates x
  // depth nodes, shared heads visited once.
  std::unordered_map<const Node*, bool> covered;
  for (const Hash128& h : hot_) {
    const Node* child = nullptr;
    for (const Node* n = Find(h); n != nullptr; child = n, n = n->parent) {
      const auto [it, fresh] = covered.try_emplace(n, false);
      if (child != nullptr && child->hits == n->hits) it->second = true;
      if (!fresh) break;
    }
  }
  // The k best by (hits, last access), kept as a min-heap.
  const auto better = [this](const Node* a, const Node* b) {
    return a->hits != b->hits ? a->hits > b->hits
                              : last_access(*a) > last_access(*b);
  };
  std::vector<const Node*> top;
  for (const auto& [n, is_covered] : covered) {
    if (n->hits == 0 || is_covered) continue;
    if (top.size() < k) {
      top.push_back(n);
      std::push_heap(top.begin(), top.end(), better);
    } else if (better(n, top.front())) {
      std::pop_heap(top.begin(), top.end(), better);
      top.back() = n;
      std::push_heap(top.begin(), top.end(), better);
    }
  }
  std::sort(top.begin(), top.end(), better);
  std::vector<Hot> hot;
  for (const Node* n : top) {
    Hot h{n, 1, n};
    while (h.root->parent != nullptr) {
      h.root = h.root->parent;
      ++h.depth;
    }
    hot.push_back(h);
  }
  return hot;
}

void PrefixIndex::ForEachNode(
    const std::function<void(const Node&)>& fn) const {
  for (const auto& [hash, node] : nodes_) fn(node);
}

Status PrefixIndex::Validate() const {
  std::unordered_map<const Node*, int64_t> child_count;
  for (const auto& [hash, n] : nodes_) {
    const std::string name = "prefix index node " + hash.Hex();
    if (n.hash != hash) {
      return Status::Internal(name + ": stored under another hash");
    }
    if (n.parent != nullptr) {
      if (Find(n.parent->hash) != n.parent) {
        return Status::Internal(name + ": parent not in the index");
      }
      ++child_count[n.parent];
    }
  }
  size_t evictable_nodes = 0;
  for (const auto& [hash, n] : nodes_) {
    const std::string name = "prefix index node " + hash.Hex();
    if (!lru_.contains(hash)) {
      return Status::Internal(name + ": not in the LRU");
    }
    const auto it = child_count.find(&n);
    if (children(n) != (it == child_count.end() ? 0 : it->second)) {
      return Status::Internal(name + ": child count " +
                              std::to_string(children(n)) + " is wrong");
    }
    const bool should = children(n) == 0 && pool_->refcount(n.block) == 0;
    if (evictable(n) != should) {
      return Status::Internal(name + ": evictable flag " +
                              std::to_string(evictable(n)) +
                              " disagrees with refcount and children");
    }
    evictable_nodes += should;
  }
  if (evictable_nodes != lru_.leaf_count() || nodes_.size() != lru_.size()) {
    return Status::Internal("prefix index: LRU holds " +
                            std::to_string(lru_.size()) + " entries and " +
                            std::to_string(lru_.leaf_count()) + " leaves for " +
                            std::to_string(nodes_.size()) + " nodes, " +
                            std::to_string(evictable_nodes) + " evictable");
  }
  return Status::OK();
}

}  // namespace kvstash::kvcache
