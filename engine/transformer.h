// Transformer: the forward pass of the Llama family (llama, qwen2) over a
// batch of sequences. A call processes, for each sequence of the batch, a span
// of tokens at consecutive positions of that sequence: a prefill chunk of a
// prompt, or one token of a decode. All the tokens of the batch go through
// every projection together as one matrix-matrix product (each weight is read
// once per step, whatever the number of sequences); attention is per
// sequence, over its own KvView.
//
//   x = embed(token)
//   per layer:  h = RMSNorm(x); q,k,v = h·Wq,Wk,Wv (+ biases for qwen2);
//               RoPE(q, k); store k,v through the KvView;
//               x += Wo · attention(q, K/V of positions [0, pos])  (causal,
//               GQA) h = RMSNorm(x); x += Wdown · (silu(h·Wgate) * (h·Wup))
//   logits = RMSNorm(x) · Wout
//
// The products and attention run on the fast kernels (kernels/*_fast.h),
// split over the rows of each matrix and over (kv head, tile of consecutive
// tokens of a sequence) pairs across the workers of a ThreadPool. K/V are
// reached only through KvView. Scratch buffers are owned by the Transformer
// and grow to the largest batch seen, so steady-state decode allocates
// nothing. Not thread-safe: one Transformer per sequence being computed at a
// time; the Model and the pool may be shared with other Transformers used
// one after another.
//
// Results do not depend on batching: a token's logits and K/V are computed by
// the same operations whatever else is in the batch (the kernels are
// batch-invariant), so a sequence computed alone or among others, in one
// chunk or several, gives bit-identical output.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/kv_compaction.h"
#include "engine/kv_view.h"
#include "model/model.h"

namespace kvstash {

class Transformer {
 public:
  // `pool` may be null (everything runs on the calling thread); it must
  // outlive the Transformer.
  explicit Transformer(const Model& model, ThreadPool* pool = nullptr);
  ~Transformer();

  const Model& model() const { return model_; }

  enum class Logits { kNone, kLast, kAll };

  // One sequence's share of a batched step.
  struct BatchEntry {
    std::span<const int32_t> tokens;  // at positions [pos, pos + size)
    int pos = 0;
    KvView* kv = nullptr;  // holds positions [0, pos) already
    Logits logits = Logits::kLast;
    // Sees the entry's queries (token eviction policies); may be null.
    QueryObserver* queries = nullptr;
  };

  // Runs every entry, storing the K/V of its tokens through its KvView, and
  // writes logits rows ([vocab] each) in batch order: one row for kLast,
  // tokens.size() rows for kAll, none for kNone. InvalidArgument for an empty
  // batch or entry, a null view, two entries sharing a view, or a token id
  // outside the vocabulary; OutOfRange when an entry's positions exceed its
  // view.
  Status Forward(std::span<const BatchEntry> batch, float* logits);

  // One sequence: Forward({{tokens, pos, &kv, all_logits ? kAll : kLast,
  // queries}}).
  Status Forward(std::span<const int32_t> tokens, int pos, KvView& kv,
                 bool all_logits, float* logits,
                 QueryObserver* queries = nullptr);

 private:
  struct Product {
    const WeightMatrix* w;
    float* y;  // [n][w->rows]
  };
  struct Buffers;

  void EnsureScratch(size_t n);
  // y = W x for every product, x: [n][cols] shared by all; one ParallelFor.
  void Project(const float* x, size_t n, std::span<const Product> products);
  // Runs fn(begin, end) over [0, n) split across the pool.
  template <typename Fn>
  void ForRanges(size_t n, const Fn& fn);
  Status Check(std::span<const BatchEntry> batch) const;
  void Attend(int layer, std::span<const BatchEntry> batch, size_t n);

  const Model& model_;
  ThreadPool* pool_;
  std::unique_ptr<Buffers> buf_;
};

}  // namespace kvstash
