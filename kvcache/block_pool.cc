#include "kvcache/block_pool.h"

#include <unistd.h>

#include "base/check.h"

namespace kvstash::kvcache {

namespace {

// Faults in every page now, so the first use of a block costs no fault.
void Prefault(uint8_t* arena, size_t bytes) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  volatile uint8_t* p = arena;
  for (size_t off = 0; off < bytes; off += page) p[off] = 0;
}

}  // namespace

Result<std::unique_ptr<BlockPool>> BlockPool::Create(size_t block_bytes,
                                                     BlockId n_blocks,
                                                     bool prefault) {
  KV_CHECK(block_bytes > 0 && n_blocks > 0);
  Result<std::unique_ptr<HugePages>> arena =
      HugePages::Map(block_bytes * size_t(n_blocks), /*reserve=*/false);
  if (!arena.ok()) return arena.status().WithPrefix("kv block pool");
  if (prefault) Prefault((*arena)->data(), (*arena)->bytes());
  return std::unique_ptr<BlockPool>(
      new BlockPool(std::move(arena).value(), block_bytes, n_blocks));
}

BlockPool::BlockPool(std::unique_ptr<HugePages> arena, size_t block_bytes,
                     BlockId n_blocks)
    : pages_(std::move(arena)),
      arena_(pages_->data()),
      block_bytes_(block_bytes),
      refs_(size_t(n_blocks), 0),
      is_free_(size_t(n_blocks), 1),
      free_(size_t(n_blocks)) {
  // Block 0 is handed out first.
  for (BlockId i = 0; i < n_blocks; ++i) free_[size_t(i)] = n_blocks - 1 - i;
}

BlockPool::~BlockPool() = default;

void BlockPool::CheckId(BlockId id) const {
  KV_CHECK(id >= 0 && id < capacity());
}

BlockId BlockPool::Allocate() {
  if (free_.empty()) return -1;
  const BlockId id = free_.back();
  free_.pop_back();
  is_free_[size_t(id)] = 0;
  KV_CHECK(refs_[size_t(id)] == 0);
  refs_[size_t(id)] = 1;
  ++used_;
  return id;
}

void BlockPool::Free(BlockId id) {
  CheckId(id);
  KV_CHECK_MSG(refs_[size_t(id)] == 0, "freeing a block a sequence holds");
  KV_CHECK_MSG(!is_free_[size_t(id)], "block freed twice");
  is_free_[size_t(id)] = 1;
  free_.push_back(id);
}

int BlockPool::IncRef(BlockId id) {
  CheckId(id);
  KV_CHECK_MSG(!is_free_[size_t(id)], "referencing a free block");
  if (refs_[size_t(id)]++ == 0) ++used_;
  return refs_[size_t(id)];
}

int BlockPool::DecRef(BlockId id) {
  CheckId(id);
  KV_CHECK_MSG(refs_[size_t(id)] > 0, "releasing an unreferenced block");
  if (--refs_[size_t(id)] == 0) --used_;
  return refs_[size_t(id)];
}

}  // namespace kvstash::kvcache
