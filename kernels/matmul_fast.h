// Fast products of a weight matrix with activations: the SIMD counterparts of
// MatMul (kernels/matmul.h), chosen at run time for the CPU (Highway targets
// from SSSE3 to AVX-512, plus AVX-512 VNNI and BF16 dot products where the CPU
// has them). A caller splits the rows of W across threads and calls
// MatMulRows once per range; the activations are prepared once, before that.
//
// Float weights: each tile of up to 4 rows x 6 tokens keeps one vector
// accumulator per (row, token), so a weight vector is loaded once per 6
// tokens. Columns are summed in fixed chunks (4 KiB of activations per token),
// and a batch walks blocks of rows x tokens whose chunk of weights and
// activations stays in L2; f16 (and bf16 without AVX512_BF16) weights are
// widened to f32 once per such block, not once per tile.
// Quantized weights with AVX-512 VNNI: per block, the exact integer dot
// product of weights and quantized activations is scaled into an f32 sum,
// 32 rows at a time on the vector lanes. A batch packs 32 rows x 1024 columns
// of weights into a transposed panel that every token then reads from L1; one
// to three tokens (decode) read the rows as stored and reduce in registers,
// with the same results. The K-quants (q4_k, q5_k, q6_k) work the same way
// on blocks of 32 elements (the super-block's sub-block scales and mins are
// decoded to f32 per block into the panel, or into a small table per tile of
// rows for decode); without VNNI, a portable kernel decodes one block of 32 per
// step.
//
// Accuracy against MatMul (S = sum_i |W[r,i] x[t,i]|):
//   f32, f16: f32 products and sums in another order: within the usual
//     (cols + 1) 2^-24 S of a float sum, and below 1e-5 S in the tests.
//   bf16: where the CPU has AVX512_BF16 the activations are rounded to bf16
//     (relative error <= 2^-8 each), so |error| <= (2^-8 + 1e-5) S; elsewhere
//     as f32.
//   q8_0, q4_0: the activations are quantized like Q8_0 (per block b of 32:
//     d_b = max|x|/127 stored as f32, q = round-half-even(x * (1 / d_b))), and
//     integer dot products are scaled per block (with VNNI:
//     acc = fma(float(dot_b), d_w,b * d_b, acc) over the blocks in order), so
//     |error| <= sum_b (d_b / 2) sum_{i in b} |W[r,i]| + 1e-5 S.
//   q4_k, q5_k, q6_k: the activations are quantized per block of 32 as for
//     q8_0 (the same d_b and q), and each block's exact integer dot products
//     are scaled in f32 by the weights' sub-block scales ws = d * s (rounded
//     as DequantizeRow rounds them), minus the mins wm = dmin * m (q4_k,
//     q5_k) times the block's activation sum; so
//     |error| <= sum_b (d_b / 2) sum_{i in b} |W[r,i]| + 1e-5 (S + M), where
//     M = sum_i wm(i) |x[t,i]| (wm(i): the min of i's sub-block; M = 0 for
//     q6_k) bounds the f32 rounding of ws * q, which can exceed |W[r,i]| by
//     up to wm. (ggml quantizes the activations per super-block of 256,
//     Q8_K, and combines the sub-blocks in integers: one step per 256
//     elements, a larger first term. Steps per 32 cost f32 operations per
//     block; measured, decode stays bound by memory bandwidth and batches
//     run at about q4_0's speed, so the more accurate form is kept.)
//
// Determinism: on one CPU target, y[t][r] is computed by the same operations
// whatever n, t's place in the batch and the row range, so results do not
// depend on batching or on how rows are split across threads.
#pragma once

#include <cstddef>

#include "kernels/dtype.h"

namespace kvstash::kernels {

// Bytes of the buffer PrepareActivations fills for `n` tokens of `cols`
// activations, for weights of type `wt`.
size_t PreparedActivationBytes(DType wt, size_t cols, size_t n);

// Converts x ([n][cols] f32) into the form MatMulRows reads for weights of type
// `wt`: for f32 and f16 weights f32 copies in rows padded past a multiple of
// 4 KiB (so that a tile's token rows do not share L1 cache sets); bf16 copies
// for bf16 weights; for q8_0 and q4_0 weights Q8_0-like int8
// blocks [n][cols], then the int32 sum of each block's int8 values
// [n][cols / 32], then the f32 scales [n][cols / 32]; for q4_k, q5_k and
// q6_k weights the same int8 blocks [n][cols], then the int32 sums of each
// 16 int8 values [n][cols / 16], the f32 scales [n][cols / 32] and each
// block's int8 sum as f32 [n][cols / 32] (for all quantized types, what
// follows the int8 values starts at the next multiple of 64 bytes). The
// result does not depend on the CPU target.
// REQUIRES: `prepared` holds PreparedActivationBytes(wt, cols, n) bytes and is
// 64-byte aligned; cols > 0; cols % DTypeBlockElems(wt) == 0; x is finite.
void PrepareActivations(DType wt, const float* x, size_t cols, size_t n,
                        void* prepared);

// y[t * ldy + r] = dot(W[r, :], x[t, :]) for r in [row_begin, row_end) and
// t < n; other elements of y are not touched. W has rows of `cols` elements of
// type `wt` with stride RowBytes(wt, cols); `prepared` is what
// PrepareActivations(wt, x, cols, n, prepared) wrote. Does not allocate; safe
// to call from several threads on disjoint row ranges.
// REQUIRES: cols > 0; cols % DTypeBlockElems(wt) == 0; row_begin <= row_end
// <= ldy; y does not overlap w, x or prepared.
void MatMulRows(DType wt, const void* w, size_t cols, const float* x,
                const void* prepared, size_t n, size_t row_begin,
                size_t row_end, float* y, size_t ldy);

// Interleaved rows: the layout of a weight matrix that this CPU's decode
// reads fastest, where one exists. For the K-quants with AVX-512 VNNI, rows
// are interleaved 16 at a time, super-block by super-block, with the quants
// of the 16 rows side by side as one vector load holds them and the
// sub-block scales (and mins) one per row, unpacked to bytes (bytes per row
// and super-block: q4_k 148 where it stores 144, q5_k 180 for 176, q6_k 212
// for 210). The rows as stored make the decode kernel reduce every
// block's products across the lanes of a vector (most of its work);
// interleaved, the products land on one lane per row and each thread reads
// one sequential stream. Results are bit for bit those of MatMulRows on the
// rows as stored, for any n and row range.
inline constexpr size_t kInterleavedRows = 16;

// True when MatMulInterleavedRows reads interleaved rows of `wt` on this CPU
// (q4_k, q5_k, q6_k with AVX-512 VNNI); callers keep the rows as stored
// otherwise.
bool UsesInterleavedRows(DType wt);

// Bytes of `rows` x `cols` weights of type `wt` interleaved.
// REQUIRES: wt is q4_k, q5_k or q6_k; rows % kInterleavedRows == 0;
// cols % 256 == 0.
size_t InterleavedBytes(DType wt, size_t rows, size_t cols);

// Writes the interleaved form of W (`rows` rows of `cols` elements of `wt`,
// as stored) to `out`, which holds InterleavedBytes(wt, rows, cols) bytes.
// REQUIRES: as InterleavedBytes.
void InterleaveRows(DType wt, const void* w, size_t rows, size_t cols,
                    void* out);

// MatMulRows for W interleaved by InterleaveRows: the same y, bit for bit.
// REQUIRES: UsesInterleavedRows(wt); w 64-byte aligned; row_begin and
// row_end multiples of kInterleavedRows; otherwise as MatMulRows.
void MatMulInterleavedRows(DType wt, const void* w, size_t cols,
                           const void* prepared, size_t n, size_t row_begin,
                           size_t row_end, float* y, size_t ldy);

}  // namespace kvstash::kernels
