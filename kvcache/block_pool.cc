#include "kvcache/block_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "base/check.h"

namespace kvstash::kvcache {

namespace {

size_t RoundUp(size_t n, size_t align) {
  return (n + align - 1) / align * align;
}

// Maps `bytes` (a multiple of kArenaAlign) of anonymous memory starting at a
// kArenaAlign boundary: over-maps by one alignment and unmaps the slack on
// both sides. nullptr on failure.
uint8_t* MapAligned(size_t bytes) {
  const size_t align = BlockPool::kArenaAlign;
  void* raw = mmap(nullptr, bytes + align, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = RoundUp(start, align);
  const size_t head = aligned - start;
  if (head > 0) munmap(raw, head);
  munmap(reinterpret_cast<void*>(aligned + bytes), align - head);
  return reinterpret_cast<uint8_t*>(aligned);
}

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
  const size_t arena_bytes =
      RoundUp(block_bytes * size_t(n_blocks), kArenaAlign);
  uint8_t* arena = MapAligned(arena_bytes);
  if (arena == nullptr) {
    return Status::ResourceExhausted("kv block pool: cannot map " +
                                     std::to_string(arena_bytes) +
                                     " bytes: " + std::strerror(errno));
  }
  // Huge pages are an optimization: a kernel without THP refuses, and the
  // arena works the same on 4 KiB pages.
  madvise(arena, arena_bytes, MADV_HUGEPAGE);
  if (prefault) Prefault(arena, arena_bytes);
  return std::unique_ptr<BlockPool>(
      new BlockPool(arena, arena_bytes, block_bytes, n_blocks));
}

BlockPool::BlockPool(uint8_t* arena, size_t arena_bytes, size_t block_bytes,
                     BlockId n_blocks)
    : arena_(arena),
      arena_bytes_(arena_bytes),
      block_bytes_(block_bytes),
      refs_(size_t(n_blocks), 0),
      is_free_(size_t(n_blocks), 1),
      free_(size_t(n_blocks)) {
  // Block 0 is handed out first.
  for (BlockId i = 0; i < n_blocks; ++i) free_[size_t(i)] = n_blocks - 1 - i;
}

BlockPool::~BlockPool() { munmap(arena_, arena_bytes_); }

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
