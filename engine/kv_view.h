// The narrow interface through which the forward pass reaches the attention
// keys and values of a sequence.
//
// KvView is all the engine knows of the KV cache: store the K/V of one token
// at a position, and read the K/V a query at position n - 1 attends to, for
// one (layer, kv head), as runs of consecutive positions (kernels::KvRun, in
// the types of kernels/kv_format.h), or of the rows it kept of them once
// tokens were evicted (Rows, engine/kv_compaction.h). A forward pass over
// positions [begin, end) of a sequence calls BeginWrite(begin, end) once,
// then per layer the Writes of those positions, Seal(layer, begin, end), and
// the Reads.
//
// Types with a full-precision residual (KIVI) are written to an f16 copy of
// the block being filled and quantized into the block when it is full
// (Seal); a query sees its own block at full precision and every earlier
// block quantized, however the positions were split into passes. Queries in
// one aligned window of read_window() positions read the same runs.
#pragma once

#include <vector>

#include "kernels/attention.h"
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

  // The rows of (layer, kv_head) a query at position n - 1 attends to: n,
  // unless tokens were evicted (engine/kv_compaction.h); Read returns that
  // many rows.
  virtual int Rows(int layer, int kv_head, int n) const { return n; }
};

}  // namespace kvstash
