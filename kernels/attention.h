// Scaled dot-product attention of query heads over cached keys and values.
//
// The K/V of one (layer, kv_head) are handed over as runs: each run holds the
// keys and values of consecutive positions, contiguous as [n_tokens][head_dim]
// elements of the cache's KV type (f32, f16 or bf16). A contiguous cache gives
// one run; a paged cache gives one run per block. The runs together cover
// positions 0.. in order. Grouped-query attention: the `n_q` query heads that
// share one kv head are computed together.
//
// Attention is the scalar reference; AttentionFast (kernels/attention_fast.h)
// is the SIMD version.
#pragma once

#include <cstddef>
#include <span>

#include "kernels/dtype.h"

namespace kvstash::kernels {

struct KvRun {
  const void* k;  // [n_tokens][head_dim] of the cache's KV type
  const void* v;  // [n_tokens][head_dim] of the cache's KV type
  size_t n_tokens;
};

// Whether the attention kernels accept K/V stored as `t`: f32, f16, bf16.
inline bool IsAttentionKvType(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

// For each query head h < n_q:
//   out[h] = sum_{t < n_ctx} softmax_t(scale * dot(q[h], k_t)) * v_t
// q: [n_q][head_dim], out: [n_q][head_dim], scores: scratch of n_ctx floats.
// K/V elements are widened to f32 exactly; all arithmetic is f32.
// REQUIRES: IsAttentionKvType(kv_type); 0 < n_ctx <= total tokens in `runs`.
void Attention(const float* q, size_t n_q, size_t head_dim, DType kv_type,
               std::span<const KvRun> runs, size_t n_ctx, float scale,
               float* scores, float* out);

}  // namespace kvstash::kernels
