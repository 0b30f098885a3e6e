// Scaled dot-product attention of query heads over cached keys and values.
//
// The K/V of one (layer, kv_head) are handed over as runs: each run holds the
// keys and values of consecutive positions, contiguous as [n_tokens][head_dim].
// A contiguous cache gives one run; a paged cache gives one run per block. The
// runs together cover positions 0.. in order. Grouped-query attention: the
// `n_q` query heads that share one kv head are computed together.
#pragma once

#include <cstddef>
#include <span>

namespace kvstash::kernels {

struct KvRun {
  const float* k;  // [n_tokens][head_dim]
  const float* v;  // [n_tokens][head_dim]
  size_t n_tokens;
};

// For each query head h < n_q:
//   out[h] = sum_{t < n_ctx} softmax_t(scale * dot(q[h], k_t)) * v_t
// q: [n_q][head_dim], out: [n_q][head_dim], scores: scratch of n_ctx floats.
// REQUIRES: 0 < n_ctx <= total tokens in `runs`.
void Attention(const float* q, size_t n_q, size_t head_dim,
               std::span<const KvRun> runs, size_t n_ctx, float scale,
               float* scores, float* out);

}  // namespace kvstash::kernels
