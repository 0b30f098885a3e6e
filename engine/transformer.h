// Transformer: the forward pass of the Llama family (llama, qwen2) over one
// sequence. A call processes a span of tokens at consecutive positions in one
// batched pass: every projection is a matrix-matrix product over all the
// tokens (prefill), and a single token is the same call with n = 1 (decode).
//
//   x = embed(token)
//   per layer:  h = RMSNorm(x); q,k,v = h·Wq,Wk,Wv (+ biases for qwen2);
//               RoPE(q, k); store k,v through the KvView;
//               x += Wo · attention(q, K/V of positions [0, pos])  (causal, GQA)
//               h = RMSNorm(x); x += Wdown · (silu(h·Wgate) * (h·Wup))
//   logits = RMSNorm(x) · Wout
//
// The products and attention run on the fast kernels (kernels/*_fast.h),
// split over the rows of each matrix and over (kv head, token) pairs across
// the workers of a ThreadPool. K/V are reached only through KvView. Scratch
// buffers are owned by the Transformer and grow to the largest batch seen, so
// steady-state decode allocates nothing. Not thread-safe: one Transformer per
// sequence being computed at a time; the Model and the pool may be shared
// with other Transformers used one after another.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/kv_cache.h"
#include "model/model.h"

namespace kvstash {

class Transformer {
 public:
  // `pool` may be null (everything runs on the calling thread); it must
  // outlive the Transformer.
  explicit Transformer(const Model& model, ThreadPool* pool = nullptr);
  ~Transformer();

  const Model& model() const { return model_; }

  // Runs `tokens` at positions [pos, pos + tokens.size()), storing their K/V
  // in `kv` (which must already hold positions [0, pos)). Writes the logits
  // of every token ([n][vocab]) when `all_logits`, else only those of the
  // last token ([vocab]). InvalidArgument for an empty span or a token id
  // outside the vocabulary; OutOfRange when the positions exceed kv.
  Status Forward(std::span<const int32_t> tokens, int pos, KvView& kv,
                 bool all_logits, float* logits);

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
  void Attend(int layer, size_t n, int pos, const KvView& kv);

  const Model& model_;
  ThreadPool* pool_;
  std::unique_ptr<Buffers> buf_;
};

}  // namespace kvstash
