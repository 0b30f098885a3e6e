#include "engine/local_kv_cache.h"

#include <string>

#include "base/check.h"
#include "engine/paged_kv_view.h"

namespace kvstash {

LocalKvCache::LocalKvCache(const kernels::BlockLayout& layout, int capacity)
    : layout_(layout), capacity_(capacity) {
  KV_CHECK_MSG(layout.Check().empty(), layout.Check().c_str());
  KV_CHECK(capacity > 0);
  const int n_blocks =
      (capacity + layout.block_tokens - 1) / layout.block_tokens;
  // In huge pages, as the server's BlockPool: decode reads every position.
  Result<std::unique_ptr<HugePages>> arena = HugePages::Map(
      size_t(n_blocks) * layout.block_bytes(), /*reserve=*/false);
  KV_CHECK_MSG(arena.ok(), arena.status().ToString().c_str());
  pages_ = std::move(arena).value();
  blocks_.resize(size_t(n_blocks));
  for (int i = 0; i < n_blocks; ++i) blocks_[size_t(i)] = i;
  residual_ = std::make_unique<KvResidual>();
  view_ = std::make_unique<PagedKvView>(layout_, pages_->data(), blocks_,
                                        residual_.get(), &compaction_);
}

LocalKvCache::LocalKvCache(int n_layers, int n_kv_heads, int head_dim,
                           int capacity, kernels::KvFormat format)
    : LocalKvCache(
          kernels::BlockLayout{n_layers, n_kv_heads, head_dim, 16, format},
          capacity) {}

LocalKvCache::~LocalKvCache() = default;

int LocalKvCache::capacity() const {
  if (!compaction_.compacted()) return capacity_;
  return capacity_ + compaction_.end - compaction_.MaxRows(compaction_.end);
}

kernels::KvFormat LocalKvCache::format() const { return layout_.kv; }

int LocalKvCache::read_window() const { return view_->read_window(); }

void LocalKvCache::BeginWrite(int begin, int end) {
  KV_CHECK(begin >= 0 && begin < end && end <= capacity());
  view_->BeginWrite(begin, end);
}

void LocalKvCache::Write(int layer, int pos, const float* k, const float* v) {
  KV_DCHECK(pos >= 0 && pos < capacity());
  view_->Write(layer, pos, k, v);
}

void LocalKvCache::Seal(int layer, int begin, int end) {
  view_->Seal(layer, begin, end);
}

void LocalKvCache::Read(int layer, int kv_head, int n,
                        std::vector<kernels::KvRun>* runs) const {
  KV_DCHECK(n > 0 && n <= capacity());
  view_->Read(layer, kv_head, n, runs);
}

int LocalKvCache::Rows(int layer, int kv_head, int n) const {
  return view_->Rows(layer, kv_head, n);
}

Status LocalKvCache::Compact(int n, const KvSelection& selection) {
  if (n <= 0 || n > capacity()) {
    return Status::InvalidArgument("compact: " + std::to_string(n) +
                                   " positions outside the cache");
  }
  return CompactRows(layout_, pages_->data(), blocks_, blocks_, n, selection,
                     &compaction_);
}

void LocalKvCache::Clear() {
  compaction_ = KvCompaction();
  residual_->Reset();
}

int LocalKvCache::BlocksHeld(int n) const {
  return compaction_.BlocksHeld(n, layout_.block_tokens);
}

Result<size_t> LocalKvCache::TransformFilledBlocks(
    int before, int after, int group, const BlockTransform& transform) {
  KV_CHECK(0 <= before && before <= after && after <= capacity_ && group >= 1 &&
           !compaction_.compacted());
  const int span = group * layout_.block_tokens;  // positions per group
  size_t stored = 0;
  std::vector<uint8_t*> blocks;
  for (int g = before / span; g < after / span; ++g) {
    blocks.clear();
    for (int b = g * group; b < (g + 1) * group; ++b) {
      blocks.push_back(pages_->data() +
                       size_t(blocks_[size_t(b)]) * layout_.block_bytes());
    }
    KV_ASSIGN_OR_RETURN(const size_t n, transform(blocks));
    stored += n;
  }
  return stored;
}

}  // namespace kvstash
