// Token eviction inside a sequence's cache: which rows of each (layer, kv
// head) a compressed sequence still holds, and the hooks through which a
// compression policy (compress/) sees the forward pass and compacts a cache.
//
// Rows. A cache stores, per (layer, kv head), one row of K and one of V per
// kept token, rows in position order, row r in block r / B at token r % B
// (kernels/block_layout.h). Uncompressed, row r holds position r. Compaction
// keeps a subset of the rows of positions [0, end) per (layer, kv head), each
// (layer, head) its own subset and its own count kept[l][h], moved down to
// rows [0, kept[l][h]) in position order; a position p >= end is then stored
// at row kept[l][h] + (p - end) of every head. Keys are stored after RoPE, so
// attention over the kept rows needs neither their positions nor a mask: a
// query at position n - 1 attends to rows [0, Rows(l, h, n)). Compacting
// again (every N decode steps) applies the same rule to the current rows.
// The blocks past the longest (layer, head) are free.
//
// Only per-token types can be compacted (a row moves with its scales); types
// with a residual or per-channel run params (KIVI) cannot.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/kv_view.h"
#include "kernels/block_layout.h"

namespace kvstash {

// The rows a compacted sequence holds (see the header comment). Empty (end
// == 0): not compacted, row = position.
struct KvCompaction {
  int end = 0;                // positions [0, end) were compacted
  std::vector<int32_t> kept;  // [layer * n_kv_heads + kv_head]: their rows

  bool compacted() const { return end > 0; }
  // Rows of (layer, kv head) a query at position n - 1 attends to.
  // REQUIRES: n >= end.
  int Rows(int index, int n) const {
    return end == 0 ? n : kept[size_t(index)] + (n - end);
  }
  // The most rows any (layer, head) holds for positions [0, n).
  int MaxRows(int n) const;
  // The blocks of `block_tokens` rows those need.
  int BlocksHeld(int n, int block_tokens) const {
    return (MaxRows(n) + block_tokens - 1) / block_tokens;
  }
  // The rows kept of positions [0, end), averaged over (layer, head).
  // REQUIRES: compacted().
  double MeanKept() const;
};

// What a compaction keeps: per (layer, kv head) the rows (ascending, each <
// the rows that (layer, head) holds), and replacement K/V for some kept rows
// (merging folds evicted tokens into kept ones).
struct KvSelection {
  struct RowUpdate {
    int32_t layer = 0, kv_head = 0, row = 0;  // a kept row, before compaction
    std::vector<float> k, v;                  // [head_dim] each, model basis
  };
  std::vector<std::vector<int32_t>> rows;  // [layer * n_kv_heads + kv_head]
  std::vector<RowUpdate> updates;
};

// Empty when `format` can be compacted, else why not.
std::string KvCompactionSupports(const kernels::KvFormat& format);

// Applies `selection` to the rows of positions [0, n) of a sequence whose
// blocks are `from` in `arena` (block b at arena + b * block_bytes): writes
// each (layer, head)'s kept rows, in order, to rows [0, kept) of the blocks
// `to` (which may be `from` itself: compaction in place; else fresh blocks,
// so that blocks other sequences share are never written), encodes the
// updates into their kept rows there, zeroes every other row of those blocks
// up to row ceil(n / B) * B (nothing evicted, or left in a fresh block by an
// earlier holder, stays readable: compacted blocks may be stored and
// shared), and sets `compaction` to end = n and the kept counts. `to` must hold
// the most rows kept. InvalidArgument when the selection does not fit the
// layout (wrong number of lists, rows unsorted or out of range, an update of a
// row not kept), `to` is too short, or the format cannot be compacted; nothing
// is changed then.
Status CompactRows(const kernels::BlockLayout& layout, uint8_t* arena,
                   std::span<const int32_t> from, std::span<const int32_t> to,
                   int n, const KvSelection& selection,
                   KvCompaction* compaction);

// A KV cache whose tokens can be evicted.
class CompactableKv : public KvView {
 public:
  // Keeps of positions [0, n) (all written) the rows `selection` names; see
  // CompactRows. Between forward passes only.
  virtual Status Compact(int n, const KvSelection& selection) = 0;
  // Blocks the sequence needs for positions [0, n).
  virtual int BlocksHeld(int n) const = 0;
};

// Receives the queries of a forward pass (after RoPE, in the model's basis,
// [n_heads][head_dim] f32) of each token of one sequence, per layer, before
// attention. Observe calls for distinct (layer, pos) may run concurrently.
class QueryObserver {
 public:
  virtual ~QueryObserver() = default;
  // Called once per forward pass, before its Observes.
  virtual void BeginPass(int begin, int end) = 0;
  virtual void Observe(int layer, int pos, const float* q) = 0;
};

// A compression policy bound to one sequence at a time: it observes the
// forward passes of positions [0, n) and then evicts tokens of the cache.
class KvCompressor {
 public:
  virtual ~KvCompressor() = default;
  // Forgets what was observed (a new sequence starts).
  virtual void Reset() = 0;
  // To attach to the forward passes before Compress (may be null).
  virtual QueryObserver* observer() = 0;
  // How many of the last positions before the compression point it must
  // see computed (their queries): 0 none, -1 all. A cache that maps a
  // prefix must leave at least these to compute.
  virtual int observed_tail() const = 0;
  // The most rows any (layer, kv head) keeps when positions [0, n) are
  // compressed: the room a cache that compacts into fresh blocks reserves.
  // For a prefix_only compressor every (layer, head) keeps exactly that many.
  virtual int MaxRowsKept(int n) const = 0;
  // Whether what it keeps of positions [0, n) depends on their tokens alone
  // (not on queries of later positions), with the same count kept by every
  // (layer, head): then the compacted rows of a document can be stored and
  // reused by later prompts that start with it (see CompressionPoint).
  virtual bool prefix_only() const = 0;
  // Evicts tokens of positions [0, n) of `kv` (all written and observed).
  virtual Status Compress(CompactableKv& kv, int n) = 0;
  // Positions between compressions after the first (0: compress once); see
  // RecompressDue.
  virtual int every() const = 0;
  // Evicts tokens of positions [0, n) of `kv`, compacted already, keeping
  // budgets[layer * n_kv_heads + kv_head] rows of each pair (the first
  // compaction's kept counts: a fixed budget). `budgets` may be the cache's
  // own KvCompaction::kept: it is copied before the cache changes.
  virtual Status Recompress(CompactableKv& kv, int n,
                            std::span<const int32_t> budgets) = 0;
};

// Where a prompt of `n_prompt` tokens is compressed. A prefix_only
// compressor compresses the document, `context` positions (the caller's
// boundary, e.g. a chat's messages before the last; used when in
// [1, n_prompt)), else the prompt before its last token, and the positions
// after it are computed over the compacted rows: so a later prompt with the
// same document finds the same compacted rows. Other compressors score with
// the prompt's last queries and compress the whole prompt once it is
// computed (n_prompt).
int CompressionPoint(const KvCompressor& compressor, int n_prompt,
                     int context = 0);

// Whether a cache compacted as `compaction`, holding positions [0, n), is
// due to be compressed again: compressor.every() positions (> 0) written
// since its last compaction. Then Recompress(kv, n, compaction.kept).
// Checked between forward passes, before computing position n (generate,
// eval and the server agree when their passes end at the same positions).
bool RecompressDue(const KvCompressor& compressor,
                   const KvCompaction& compaction, int n);

}  // namespace kvstash
