// The narrow interface through which the forward pass reaches the attention
// keys and values of a sequence, and the private cache of one sequence.
//
// KvView is all the engine knows of the KV cache: store the K/V of one token
// at a position, and read the K/V a query at position n - 1 attends to, for
// one (layer, kv head), as runs of consecutive positions (kernels::KvRun, in
// the types of kernels/kv_format.h). A forward pass over positions [begin,
// end) of a sequence calls BeginWrite(begin, end) once, then per layer the
// Writes of those positions, Seal(layer, begin, end), and the Reads.
//
// Types with a full-precision residual (KIVI) are written to an f16 copy of
// the block being filled and quantized into the block when it is full
// (Seal); a query sees its own block at full precision and every earlier
// block quantized, however the positions were split into passes. Queries in
// one aligned window of read_window() positions read the same runs.
//
// LocalKvCache is one sequence's private cache (generate, perplexity, eval,
// bench): an arena of blocks of the same layout the shared pool uses, read
// and written through a PagedKvView (engine/paged_kv_view.h), so a sequence
// computed here gives the same bits as in the server.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "kernels/attention.h"
#include "kernels/block_layout.h"
#include "kernels/kv_format.h"

namespace kvstash {

class KvView {
 public:
  virtual ~KvView() = default;

  // Positions this view can hold: valid positions are [0, capacity()).
  virtual int capacity() const = 0;

  // The types K and V are stored in.
  virtual kernels::KvFormat format() const = 0;

  // Queries at positions p and p' read the same runs (up to their own
  // lengths) when p / read_window() == p' / read_window(); 0 when every Read
  // is a prefix of the same runs.
  virtual int read_window() const { return 0; }

  // Announces the positions [begin, end) the next Writes will cover; called
  // once per forward pass, before them. REQUIRES: 0 <= begin < end <=
  // capacity() and positions [0, begin) were written by earlier passes.
  virtual void BeginWrite(int begin, int end) = 0;

  // Stores the keys and values of the token at `pos` in `layer`.
  // k, v: [n_kv_heads][head_dim] f32, in the model's basis (a rotated type
  // rotates them itself). Calls for distinct (layer, pos) may run
  // concurrently. REQUIRES: pos within the last BeginWrite.
  virtual void Write(int layer, int pos, const float* k, const float* v) = 0;

  // Ends the Writes of `layer` for the positions of the last BeginWrite:
  // blocks that became full are put in their final form. Called once per
  // layer, after its Writes and before its Reads.
  virtual void Seal(int layer, int begin, int end) = 0;

  // Replaces `runs` with the K/V that a query at position n - 1 attends to:
  // positions [0, n) of (layer, kv_head), in position order. The pointers
  // stay valid until the next Write. Safe to call concurrently (with other
  // Reads). REQUIRES: 0 < n <= capacity(), and every position < n was
  // written (and sealed, for its layer).
  virtual void Read(int layer, int kv_head, int n,
                    std::vector<kernels::KvRun>* runs) const = 0;
};

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
// otherwise thread-compatible.
class LocalKvCache final : public KvView {
 public:
  // REQUIRES: layout.Check() is empty; capacity > 0.
  LocalKvCache(const kernels::BlockLayout& layout, int capacity);
  // The model's geometry with 16-token blocks.
  LocalKvCache(int n_layers, int n_kv_heads, int head_dim, int capacity,
               kernels::KvFormat format = {});
  ~LocalKvCache() override;

  int capacity() const override { return capacity_; }
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

  // Applies `transform` to each group of `group` blocks [k group, (k + 1)
  // group) that is full at `after` positions but was not at `before`, as if
  // each group had been written to a store as one object and read back;
  // returns the bytes they were stored as. Call between forward passes.
  // REQUIRES: 0 <= before <= after <= capacity(); group >= 1.
  Result<size_t> TransformFilledBlocks(int before, int after, int group,
                                       const BlockTransform& transform);

 private:
  kernels::BlockLayout layout_;
  int capacity_;
  std::unique_ptr<uint8_t[]> arena_;
  std::vector<int32_t> blocks_;
  std::unique_ptr<KvResidual> residual_;
  std::unique_ptr<PagedKvView> view_;
};

}  // namespace kvstash
