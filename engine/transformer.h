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
// K/V are reached only through KvView. Scratch buffers are owned by the
// Transformer and grow to the largest batch seen. Not thread-safe: one
// Transformer per thread of forward passes; the Model may be shared.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "engine/kv_cache.h"
#include "model/model.h"

namespace kvstash {

class Transformer {
 public:
  explicit Transformer(const Model& model);

  const Model& model() const { return model_; }

  // Runs `tokens` at positions [pos, pos + tokens.size()), storing their K/V
  // in `kv` (which must already hold positions [0, pos)). Writes the logits
  // of every token ([n][vocab]) when `all_logits`, else only those of the
  // last token ([vocab]). InvalidArgument for an empty span or a token id
  // outside the vocabulary; OutOfRange when the positions exceed kv.
  Status Forward(std::span<const int32_t> tokens, int pos, KvView& kv,
                 bool all_logits, float* logits);

 private:
  void EnsureScratch(size_t n);
  void Attend(int layer, size_t n, int pos, const KvView& kv);

  const Model& model_;
  size_t scratch_tokens_ = 0;
  // Activations of the current batch, [n][width] each.
  std::vector<float> x_;       // residual stream [n][dim]
  std::vector<float> xb_;      // normed input [n][dim]
  std::vector<float> q_;       // [n][q_dim]
  std::vector<float> k_;       // [n][kv_dim]
  std::vector<float> v_;       // [n][kv_dim]
  std::vector<float> att_;     // attention output [n][q_dim]
  std::vector<float> proj_;    // output projections [n][dim]
  std::vector<float> gate_;    // [n][ffn_dim]
  std::vector<float> up_;      // [n][ffn_dim]
  std::vector<float> scores_;  // attention scores [max positions]
  std::vector<kernels::KvRun> runs_;
};

}  // namespace kvstash
