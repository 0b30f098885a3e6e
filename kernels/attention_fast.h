// Fast attention: the SIMD counterpart of Attention (kernels/attention.h),
// chosen at run time for the CPU (Highway targets from SSSE3 to AVX-512).
//
// One pass over the K/V of a kv head serves up to kAttentionPassRows rows,
// each the query of one (token, head): the heads of a group for one token
// (AttentionFast), or for several consecutive tokens of a sequence
// (AttentionFastTokens), so that every K and V row is loaded once for all of
// them. Larger requests take several passes. Positions go in tiles of 32: the
// scores of a tile are computed with vector dot products over head_dim,
// folded into an online softmax (running max and sum per row, accumulators
// rescaled when the max grows), and the tile's values are accumulated into
// `out`, which serves as the f32 accumulator; the rows of the next tile are
// prefetched meanwhile. A token's last, partial tile is taken by its own rows
// alone. Nothing of size n_ctx is kept and nothing allocated.
//
// Quantized K/V are read as they are stored, never decoded to memory: codes
// are widened in registers; a per-token scale multiplies the codes of a key
// and is folded into a value's weight; a KIVI key run's per-channel scales
// are folded into the query once per run (q . (min + s * c) = (q * s) . c +
// q . min). Tiles hold runs of one (K type, V type) pair: a tile also ends
// where the types change (a KIVI sequence's own block is f16).
//
// Accuracy: the same f32 inputs as Attention (K/V rows decoded as
// KvDecodeRow does, KIVI's min + scale * code with one FMA), sums in
// another order (with FMA, scales applied per group or folded as above),
// exp from Highway (<= 1 ulp off std::exp). With
// |v| <= 1 and scores |scale * q.k| up to 23, measured |out - exact| <= 1.3e-6
// and |out - Attention| <= 5e-6 (the reference's own error is the larger);
// both grow with the range of the scores. The tests hold it to 1e-5 max |v|.
//
// Determinism: on one CPU target, the output of a (token, head) depends only
// on its query, its n_ctx and the K/V: not on how the positions are split
// into runs (where runs of other types begin does matter), nor on the other
// heads and tokens computed beside it. So
// AttentionFastTokens gives every row bit for bit what AttentionFast gives
// for that token alone.
#pragma once

#include <cstddef>
#include <span>

#include "kernels/attention.h"

namespace kvstash::kernels {

// The (token, head) rows that one pass over the K/V holds: callers that group
// the tokens of a sequence fill a pass with kAttentionPassRows / n_q tokens.
inline constexpr size_t kAttentionPassRows = 16;

// For each query head h < n_q:
//   out[h] = sum_{t < n_ctx} softmax_t(scale * dot(q[h], k_t)) * v_t
// q: [n_q][head_dim], out: [n_q][head_dim]. Does not allocate; safe to call
// from several threads with disjoint `out`.
// REQUIRES: every run's types support head_dim; 0 < n_ctx <= total tokens
// in `runs`; out does not overlap q or the K/V.
void AttentionFast(const float* q, size_t n_q, size_t head_dim,
                   std::span<const KvRun> runs, size_t n_ctx, float scale,
                   float* out);

// Causal attention of n_tokens tokens of one sequence, token j over its first
// n_ctx[j] positions. For each j < n_tokens and head h < n_q:
//   out[j * out_stride + h * head_dim ..] (head_dim floats) =
//     AttentionFast of q[j * q_stride + h * head_dim ..] over n_ctx[j]
// bit for bit. Does not allocate; safe to call from several threads with
// disjoint `out`.
// REQUIRES: every run's types support head_dim; n_ctx non-decreasing;
// 0 < n_ctx[j] <= total tokens in `runs`; out does not overlap q or the K/V.
void AttentionFastTokens(const float* q, size_t q_stride, size_t n_tokens,
                         size_t n_q, size_t head_dim,
                         std::span<const KvRun> runs, const size_t* n_ctx,
                         float scale, float* out, size_t out_stride);

}  // namespace kvstash::kernels
