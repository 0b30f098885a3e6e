// LocalKvCache: one sequence's private cache (generate, perplexity, eval,
// bench): an arena of blocks of the same layout the shared pool uses, read
// and written through a PagedKvView (engine/paged_kv_view.h), so a sequence
// computed here gives the same bits as in the server.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "base/huge_pages.h"
#include "base/status.h"
#include "engine/kv_compaction.h"
#include "engine/kv_view.h"
#include "kernels/block_layout.h"
#include "kernels/kv_format.h"

namespace kvstash {

class PagedKvView;
struct KvResidual;

// Rewrites a group of consecutive full blocks in place (each the bytes of
// BlockLayout: all layers, K and V) as a store would give them back when
// they are stored as one object, and returns the bytes they were stored as:
// e.g. a tier codec's encode + decode (apps/ wires store/kv_codec.h), so
// that tools can measure what a lossy store costs.
using BlockTransform =
    std::function<Result<size_t>(std::span<uint8_t* const> blocks)>;

// One sequence's K/V in a private arena of ceil(capacity / block_tokens)
// blocks of `layout`. Writes to distinct (layer, pos) may run concurrently;
// otherwise thread-compatible. Tokens evicted by Compact free rows at the
// end of the arena: capacity() grows by the rows dropped.
class LocalKvCache final : public CompactableKv {
 public:
  // REQUIRES: layout.Check() is empty; capacity > 0.
  LocalKvCache(const kernels::BlockLayout& layout, int capacity);
  // The model's geometry with 16-token blocks.
  LocalKvCache(int n_layers, int n_kv_heads, int head_dim, int capacity,
               kernels::KvFormat format = {});
  ~LocalKvCache() override;

  int capacity() const override;
  kernels::KvFormat format() const override;
  int read_window() const override;
  const kernels::BlockLayout& layout() const { return layout_; }
  // Bytes of K and V stored per position (all layers, scales included).
  double bytes_per_position() const { return layout_.bytes_per_token(); }
  // Bytes of the block arena.
  size_t arena_bytes() const { return blocks_.size() * layout_.block_bytes(); }
  void BeginWrite(int begin, int end) override;
  void Write(int layer, int pos, const float* k, const float* v) override;
  void Seal(int layer, int begin, int end) override;
  void Read(int layer, int kv_head, int n,
            std::vector<kernels::KvRun>* runs) const override;
  int Rows(int layer, int kv_head, int n) const override;
  Status Compact(int n, const KvSelection& selection) override;
  int BlocksHeld(int n) const override;
  const KvCompaction& compaction() const { return compaction_; }
  // Forgets every position (and any compaction): the next pass starts at 0.
  void Clear();

  // Applies `transform` to each group of `group` blocks [k group, (k + 1)
  // group) that is full at `after` positions but was not at `before`, as if
  // each group had been written to a store as one object and read back;
  // returns the bytes they were stored as. Call between forward passes.
  // REQUIRES: 0 <= before <= after <= capacity(); group >= 1; not compacted.
  Result<size_t> TransformFilledBlocks(int before, int after, int group,
                                       const BlockTransform& transform);

 private:
  kernels::BlockLayout layout_;
  int capacity_;  // positions before any compaction
  KvCompaction compaction_;
  std::unique_ptr<HugePages> pages_;  // the arena
  std::vector<int32_t> blocks_;
  std::unique_ptr<KvResidual> residual_;
  std::unique_ptr<PagedKvView> view_;
};

}  // namespace kvstash
