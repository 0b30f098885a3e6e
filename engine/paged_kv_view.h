// PagedKvView: a sequence's K/V in fixed-size blocks of a shared pool, seen
// through its block table (paged attention).
//
// Position p lives in block blocks[p / B] at token p % B, laid out as
// kernels::BlockLayout says; a Read of positions [0, n) returns one run per
// block. The view owns nothing: the arena and the block table belong to the
// KV cache manager and the sequence, and must outlive the view and stay
// unchanged while a forward pass uses it. The caller guarantees that the
// blocks written through the view are not visible to other sequences
// (copy-on-write happens before, in kvcache::KvManager).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/kv_cache.h"
#include "kernels/block_layout.h"

namespace kvstash {

class PagedKvView final : public KvView {
 public:
  // `arena` is the start of block 0; block b starts at arena + b *
  // layout.block_bytes(). capacity() = blocks.size() * block_tokens.
  // REQUIRES: kernels::IsAttentionKvType(layout.kv_type).
  PagedKvView(const kernels::BlockLayout& layout, uint8_t* arena,
              std::span<const int32_t> blocks);

  int capacity() const override;
  kernels::DType kv_type() const override { return layout_.kv_type; }
  void Write(int layer, int pos, const float* k, const float* v) override;
  void Read(int layer, int kv_head, int n,
            std::vector<kernels::KvRun>* runs) const override;

 private:
  uint8_t* Block(int index) const {
    return arena_ + size_t(blocks_[index]) * block_bytes_;
  }

  kernels::BlockLayout layout_;
  size_t block_bytes_;
  uint8_t* arena_;
  std::span<const int32_t> blocks_;
};

}  // namespace kvstash
