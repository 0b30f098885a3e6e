// Scaled dot-product attention of query heads over cached keys and values.
//
// The K/V of one (layer, kv_head) are handed over as runs: each run holds the
// keys and values of consecutive positions, as one K run and one V run of a
// KV block (kernels/block_layout.h: [run params][n_tokens rows], in the run's
// own KvTypes, kernels/kv_format.h). A paged cache gives one run per block;
// the runs of one sequence may differ in type (a KIVI sequence's own block is
// its f16 residual). The runs together cover positions 0.. in order.
// Grouped-query attention: the `n_q` query heads that share one kv head are
// computed together. Queries and outputs are in the stored basis: for
// KvRotated types the caller rotates them (KvRotate).
//
// Attention is the scalar reference; AttentionFast (kernels/attention_fast.h)
// is the SIMD version.
#pragma once

#include <cstddef>
#include <span>

#include "kernels/kv_format.h"

namespace kvstash::kernels {

struct KvRun {
  const void* k;  // K run: [run params][n_tokens rows] of k_type
  const void* v;  // V run: [run params][n_tokens rows] of v_type
  size_t n_tokens;
  KvType k_type = KvType::kF16;
  KvType v_type = KvType::kF16;
};

// For each query head h < n_q:
//   out[h] = sum_{t < n_ctx} softmax_t(scale * dot(q[h], k_t)) * v_t
// q: [n_q][head_dim], out: [n_q][head_dim], scores: scratch of n_ctx floats.
// K/V rows are decoded to f32 (KvDecodeRow); all arithmetic is f32, in
// position order.
// REQUIRES: 0 < n_ctx <= total tokens in `runs`; head_dim <= 512.
void Attention(const float* q, size_t n_q, size_t head_dim,
               std::span<const KvRun> runs, size_t n_ctx, float scale,
               float* scores, float* out);

}  // namespace kvstash::kernels
