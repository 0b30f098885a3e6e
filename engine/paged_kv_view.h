// PagedKvView: a sequence's K/V in fixed-size blocks of a shared pool, seen
// through its block table (paged attention).
//
// Position p lives in block blocks[p / B] at token p % B, laid out as
// kernels::BlockLayout says; a Read returns one run per block. Types stored
// per token (f32, f16, bf16, q8, q4, q4h) are encoded into the block as each
// token is written. Types with a residual (KIVI) are written to the
// sequence's KvResidual (f16 copies of the blocks being written) and sealed
// into the block by Seal when the block is full; a Read for a query in block
// b returns blocks < b from the pool and block b from the residual, so the
// query sees its own block at full precision (read_window() = B). A
// sequence whose tokens were evicted is seen through its KvCompaction: a
// position's row in each (layer, head) is where the compaction put it.
//
// The view owns nothing: the arena, the block table and the residual belong
// to the KV cache manager and the sequence, and must outlive the view and
// stay unchanged while a forward pass uses it (except the residual, which the
// view maintains). The caller guarantees that the blocks written through the
// view are not visible to other sequences (copy-on-write happens before, in
// kvcache::KvManager) and that a block with a residual type is never
// entered half-written (KvManager does not copy-on-write such blocks).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "engine/kv_compaction.h"
#include "engine/kv_view.h"
#include "kernels/block_layout.h"

namespace kvstash {

// The full-precision copies a sequence keeps of the blocks being written
// while its layout has residual types: blocks [first, first + count) of the
// block table, each laid out as layout.residual_layout() (f16). Owned by the
// sequence (one per sequence); empty between sequences.
struct KvResidual {
  int first = 0;
  int count = 0;
  std::vector<uint8_t> data;

  void Reset() {
    first = 0;
    count = 0;
  }
};

class PagedKvView final : public KvView {
 public:
  // `arena` is the start of block 0; block b starts at arena + b *
  // layout.block_bytes(). capacity() = blocks.size() * block_tokens.
  // `residual` is needed (non-null) when KvHasResidual(layout.kv);
  // `compaction` (may be null: none) is the sequence's, read at each call.
  // REQUIRES: layout.Check() is empty.
  PagedKvView(const kernels::BlockLayout& layout, uint8_t* arena,
              std::span<const int32_t> blocks, KvResidual* residual = nullptr,
              const KvCompaction* compaction = nullptr);

  // Called with each layer in Seal, before the layer's Reads: a layered
  // load's wait for that layer of the blocks it is filling
  // (kvcache::LayeredLoad::AwaitLayer). Must not touch the view.
  using LayerGate = std::function<void(int layer)>;
  void SetLayerGate(LayerGate gate) { gate_ = std::move(gate); }

  int capacity() const override;
  kernels::KvFormat format() const override { return layout_.kv; }
  int read_window() const override;
  void BeginWrite(int begin, int end) override;
  void Write(int layer, int pos, const float* k, const float* v) override;
  void Seal(int layer, int begin, int end) override;
  void Read(int layer, int kv_head, int n,
            std::vector<kernels::KvRun>* runs) const override;
  int Rows(int layer, int kv_head, int n) const override;

 private:
  uint8_t* Block(int index) const {
    return arena_ + size_t(blocks_[index]) * block_bytes_;
  }
  // The residual copy of block `index` (held: first <= index < first+count).
  uint8_t* ResidualBlock(int index) const;

  kernels::BlockLayout layout_;
  kernels::BlockLayout residual_layout_;
  size_t block_bytes_;
  uint8_t* arena_;
  std::span<const int32_t> blocks_;
  KvResidual* residual_;
  const KvCompaction* compaction_;
  bool has_residual_;
  LayerGate gate_;
};

}  // namespace kvstash
