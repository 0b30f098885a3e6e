#include "store/leaf_lru.h"

#include "base/check.h"

namespace kvstash::store {

LeafFirstLru::Entry& LeafFirstLru::At(const Hash128& key) {
  const auto it = entries_.find(key);
  KV_CHECK_MSG(it != entries_.end(), "key not in the LRU");
  return it->second;
}

const LeafFirstLru::Entry& LeafFirstLru::At(const Hash128& key) const {
  const auto it = entries_.find(key);
  KV_CHECK_MSG(it != entries_.end(), "key not in the LRU");
  return it->second;
}

void LeafFirstLru::Unlist(const Hash128& key, const Entry& e) {
  leaves_.erase(OrderOf(key, e));
  if (options_.track_all) all_.erase(OrderOf(key, e));
}

void LeafFirstLru::List(const Hash128& key, const Entry& e) {
  if (WantsLeaf(key, e)) leaves_.insert(OrderOf(key, e));
  if (options_.track_all) all_.insert(OrderOf(key, e));
}

void LeafFirstLru::Retick(const Hash128& key, Entry& e, uint64_t tick) {
  Unlist(key, e);
  e.tick = tick;
  List(key, e);
}

void LeafFirstLru::Insert(const Hash128& key,
                          const std::optional<Hash128>& parent) {
  KV_CHECK_MSG(parent != key, "an LRU entry cannot be its own parent");
  const auto [it, inserted] = entries_.try_emplace(key);
  KV_CHECK_MSG(inserted, "key already in the LRU");
  it->second.tick = ++clock_;
  it->second.parent = parent;
  List(key, it->second);
  if (parent) AddChild(*parent);
}

void LeafFirstLru::Erase(const Hash128& key) {
  const auto it = entries_.find(key);
  KV_CHECK_MSG(it != entries_.end(), "key not in the LRU");
  Unlist(key, it->second);
  const std::optional<Hash128> parent = it->second.parent;
  entries_.erase(it);
  if (parent) DropChild(*parent);
}

void LeafFirstLru::Touch(const Hash128& key) { Retick(key, At(key), ++clock_); }

void LeafFirstLru::TouchPath(const Hash128& key) {
  const uint64_t tick = ++clock_;
  for (std::optional<Hash128> k = key; k; k = At(*k).parent) {
    Retick(*k, At(*k), tick);
  }
}

void LeafFirstLru::AddChild(const Hash128& parent) {
  if (children_[parent]++ > 0) return;
  if (auto it = entries_.find(parent); it != entries_.end()) {
    leaves_.erase(OrderOf(parent, it->second));
  }
}

void LeafFirstLru::DropChild(const Hash128& parent) {
  const auto it = children_.find(parent);
  KV_CHECK_MSG(it != children_.end(), "dropping a child never added");
  if (--it->second > 0) return;
  children_.erase(it);
  if (auto e = entries_.find(parent); e != entries_.end()) {
    if (WantsLeaf(parent, e->second)) {
      leaves_.insert(OrderOf(parent, e->second));
    }
  }
}

void LeafFirstLru::SetPinned(const Hash128& key, bool pinned) {
  Entry& e = At(key);
  if (e.pinned == pinned) return;
  Unlist(key, e);
  e.pinned = pinned;
  List(key, e);
}

std::optional<Hash128> LeafFirstLru::OldestLeaf() const {
  if (leaves_.empty()) return std::nullopt;
  return Hash128{.lo = leaves_.begin()->lo, .hi = leaves_.begin()->hi};
}

std::optional<Hash128> LeafFirstLru::Oldest() const {
  KV_CHECK(options_.track_all);
  if (all_.empty()) return std::nullopt;
  return Hash128{.lo = all_.begin()->lo, .hi = all_.begin()->hi};
}

uint64_t LeafFirstLru::last_used(const Hash128& key) const {
  return At(key).tick;
}

int64_t LeafFirstLru::children(const Hash128& key) const {
  At(key);
  const auto it = children_.find(key);
  return it == children_.end() ? 0 : it->second;
}

bool LeafFirstLru::is_leaf(const Hash128& key) const {
  return leaves_.contains(OrderOf(key, At(key)));
}

}  // namespace kvstash::store
