// BlockPool: the memory of the paged KV cache and the reference counts of its
// blocks.
//
// One mapping of HugePages (base/huge_pages.h: 2 MiB aligned, advised to
// transparent huge pages), the arena, is cut into `capacity()` blocks of
// `block_bytes()` (see block_layout.h). The arena never moves or shrinks, so
// data(id) is stable for the pool's lifetime.
//
// Each block is either on the free list (refcount 0) or off it: then its
// refcount counts the sequences holding it, and a block with refcount 0 off
// the free list is owned by whoever took it (the prefix index keeps such
// blocks cached). Allocate hands out a block holding one reference; Free takes
// back only a block nobody references, and aborts otherwise (KV_CHECK, on in
// every build): a running sequence's block is never recycled under it.
//
// Not thread-safe: KvManager serializes every call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/huge_pages.h"
#include "base/status.h"

namespace kvstash::kvcache {

using BlockId = int32_t;

class BlockPool {
 public:
  // Alignment of the arena (one x86-64 huge page).
  static constexpr size_t kArenaAlign = HugePages::kHugePageBytes;

  // A pool of `n_blocks` blocks of `block_bytes` each, all free. With
  // `prefault`, every page of the arena is touched now. REQUIRES:
  // block_bytes > 0, n_blocks > 0. ResourceExhausted when the arena cannot be
  // mapped.
  static Result<std::unique_ptr<BlockPool>> Create(size_t block_bytes,
                                                   BlockId n_blocks,
                                                   bool prefault);
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  BlockId capacity() const { return BlockId(refs_.size()); }
  size_t block_bytes() const { return block_bytes_; }
  size_t free_count() const { return free_.size(); }
  // Blocks with refcount > 0.
  size_t used_count() const { return used_; }
  // The free list, next block to hand out last.
  std::span<const BlockId> free_list() const { return free_; }

  // Takes a block off the free list, with refcount 1; -1 when none is free.
  BlockId Allocate();
  // Returns a block to the free list. REQUIRES (checked): refcount 0 and not
  // already free.
  void Free(BlockId id);
  // Return the new refcount. REQUIRES (checked): the block is not free;
  // for DecRef, refcount > 0.
  int IncRef(BlockId id);
  int DecRef(BlockId id);

  int refcount(BlockId id) const { return refs_[size_t(id)]; }
  bool is_free(BlockId id) const { return is_free_[size_t(id)] != 0; }
  // Start of block `id`'s bytes. REQUIRES: 0 <= id < capacity().
  uint8_t* data(BlockId id) const { return arena_ + size_t(id) * block_bytes_; }

 private:
  BlockPool(std::unique_ptr<HugePages> arena, size_t block_bytes,
            BlockId n_blocks);
  void CheckId(BlockId id) const;

  std::unique_ptr<HugePages> pages_;
  uint8_t* arena_;  // pages_->data()
  size_t block_bytes_;
  std::vector<int32_t> refs_;     // [capacity]
  std::vector<uint8_t> is_free_;  // [capacity]: 1 while on free_
  std::vector<BlockId> free_;     // stack; Allocate pops the back
  size_t used_ = 0;
};

}  // namespace kvstash::kvcache
