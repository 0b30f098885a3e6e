// Highway compiles this file once per CPU target (foreach_target.h) and picks
// one at run time. Each weight type has a "kernel": a small struct that loads
// one step of a weight row (W) and of an activation row (X) in compute form
// and multiplies them into an accumulator (Mac), which is reduced to a float
// by the sum of its lanes (SumLanes), or by the kernel's own Reduce where it
// has one. One driver (Tile) runs any kernel over a tile of rows x tokens.
//
// On the AVX3_DL target (AVX-512 with VNNI, enabled by HWY_WANT_AVX3_DL) the
// quantized types use vpdpbusd and bf16 uses vdpbf16ps (when the CPU has
// AVX512_BF16), written with intrinsics; every other target uses the portable
// kernels. Highway 1.0.3 has neither instruction as an op.

#include "kernels/matmul_fast.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "base/check.h"
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "kernels/dtype.h"

#ifndef KVSTASH_KERNELS_MATMUL_FAST_SHARED_
#define KVSTASH_KERNELS_MATMUL_FAST_SHARED_

namespace kvstash::kernels::matmul_fast {

// Prepared bf16 activation rows are zero-padded to a multiple of this, one
// AVX-512 vector of bf16, so that the kernels never load a partial row.
inline constexpr size_t kBf16RowPad = 32;

inline size_t Bf16RowStride(size_t cols) {
  return (cols + kBf16RowPad - 1) / kBf16RowPad * kBf16RowPad;
}

// Prepared activations for f32 and f16 weights: f32 rows of this stride, so
// that the rows of the tokens of a tile do not all fall into the same L1
// cache sets (as rows a multiple of 4 KiB apart would; RunCopiedChunks does
// the same for rows of weights).
inline size_t FloatRowStride(size_t cols) { return (cols + 15) / 16 * 16 + 16; }

// Prepared quantized activations: int8 [n][cols], then at these offsets the
// int32 sums of each block's int8 values [n][cols / kQuantBlock] and the f32
// scales [n][cols / kQuantBlock].
inline size_t QuantSumsOffset(size_t cols, size_t n) {
  return (n * cols + 63) / 64 * 64;
}
inline size_t QuantScalesOffset(size_t cols, size_t n) {
  return QuantSumsOffset(cols, n) + n * (cols / kQuantBlock) * sizeof(int32_t);
}

// Prepared activations for K-quant weights: int8 [n][cols] as above, then at
// these offsets the int32 sums of each kKSumElems int8 values
// [n][cols / kKSumElems], the f32 scales [n][cols / kQuantBlock] and the
// sums of each block's int8 values as f32 [n][cols / kQuantBlock].
inline constexpr size_t kKSumElems = 16;
inline size_t KScalesOffset(size_t cols, size_t n) {
  return QuantSumsOffset(cols, n) + n * (cols / kKSumElems) * sizeof(int32_t);
}
inline size_t KBlockSumsOffset(size_t cols, size_t n) {
  return KScalesOffset(cols, n) + n * (cols / kQuantBlock) * sizeof(float);
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block (the
// packing described in dtype.h).
inline void KScaleMin(const uint8_t* scales, size_t j, int* scale, int* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = (scales[j + 4] & 0xF) | (scales[j - 4] >> 6) << 4;
    *min = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4;
  }
}

// One tile of Q4_K rows interleaved (InterleaveRows): kInterleavedRows rows
// of one super-block, laid out so that a vector load holds the same 4
// quant bytes of each of the 16 rows (rows on the 32-bit lanes, as the
// quantized panels hold them), and the sub-block scales and mins as bytes,
// one per row. 148 bytes per row and super-block, where Q4_K has 144.
struct Q4KTile {
  // [pair p][group g][row r][k]: byte qs[32 p + 4 g + k] of row r's block:
  // element 4 g + k of sub-block 2 p in the low nibble, of 2 p + 1 in the
  // high nibble.
  uint8_t qs[4][8][kInterleavedRows][4];
  uint16_t d[kInterleavedRows];        // f16
  uint16_t dmin[kInterleavedRows];     // f16
  uint8_t scale[8][kInterleavedRows];  // sub-block j's 6-bit scale, by row
  uint8_t min[8][kInterleavedRows];    // and min
};
static_assert(sizeof(Q4KTile) == kInterleavedRows * 148);
static_assert(sizeof(Q4KTile) % 64 == 0);

// The same for Q5_K, with the 5th bits: bit j of qh[g][r][k] is that of
// element 4 g + k of sub-block j. 180 bytes per row and super-block, where
// Q5_K has 176.
struct Q5KTile {
  uint8_t qs[4][8][kInterleavedRows][4];
  uint8_t qh[8][kInterleavedRows][4];
  uint16_t d[kInterleavedRows];
  uint16_t dmin[kInterleavedRows];
  uint8_t scale[8][kInterleavedRows];
  uint8_t min[8][kInterleavedRows];
};
static_assert(sizeof(Q5KTile) == kInterleavedRows * 180);
static_assert(sizeof(Q5KTile) % 64 == 0);

// The same for Q6_K: 212 bytes per row and super-block, where Q6_K has 210.
// Element 4 g + k of block 4 h + c (h < 2, c < 4; dtype.h's element
// 128 h + 32 c + 4 g + k) has its low 4 bits in ql[h][c % 2][g][r][k] (the
// low nibble for c < 2, the high one for c >= 2) and its high 2 bits in bits
// 2c, 2c + 1 of qh[h][g][r][k].
struct Q6KTile {
  uint8_t ql[2][2][8][kInterleavedRows][4];
  uint8_t qh[2][8][kInterleavedRows][4];
  float d[kInterleavedRows];           // the f16 d, widened
  int8_t scale[16][kInterleavedRows];  // sub-block (16 elements) scales
};
static_assert(sizeof(Q6KTile) == kInterleavedRows * 212);
static_assert(sizeof(Q6KTile) % 64 == 0);

// The bytes of the quants at the start of a tile (what follows: the scales).
template <class Tile>
constexpr size_t TileQuantBytes() {
  if constexpr (std::is_same_v<Tile, Q4KTile>) {
    return sizeof(Tile::qs);
  } else if constexpr (std::is_same_v<Tile, Q5KTile>) {
    return sizeof(Tile::qs) + sizeof(Tile::qh);
  } else {
    return sizeof(Tile::ql) + sizeof(Tile::qh);
  }
}

// Columns are summed in chunks of 4 KiB of activations per token (1024 f32,
// 2048 bf16 or 4096 int8 elements): y[t][r] is the sum, in chunk order, of
// the reduced dot product of each chunk. The chunks depend on cols and the
// kernel only, so results do not depend on the loop order; a tile's
// activations stay in L1 while its rows stream past.
inline constexpr size_t kChunkActivationBytes = 4096;

// A batch is computed in blocks of rows x tokens whose weights and activations
// for one chunk (these many bytes each) stay in L2 (1 MiB per core on the
// target machine) while the block's tiles pass over them.
inline constexpr size_t kRowBlockBytes = 256 << 10;
inline constexpr size_t kTokenBlockBytes = 256 << 10;

}  // namespace kvstash::kernels::matmul_fast

#endif  // KVSTASH_KERNELS_MATMUL_FAST_SHARED_

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_fast.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
#if HWY_TARGET == HWY_AVX3_DL
// Highway's AVX3_DL target string lacks these; both are used below only after
// a run-time check. 256-bit vpdpbusd is avoided: with AVX-VNNI also enabled,
// GCC emits its VEX form, which AVX-512 VNNI CPUs without AVX-VNNI lack.
#pragma GCC push_options
#pragma GCC target("avx512vnni,avx512bf16")
#endif
namespace kvstash::kernels::HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using namespace kvstash::kernels::matmul_fast;  // NOLINT(build/namespaces)

using DF = hn::ScalableTag<float>;

// Rows x tokens per tile: the accumulators must fit the register file (32
// vector registers with AVX-512, 16 below).
#if HWY_MAX_BYTES >= 64
constexpr size_t kFloatRows = 4, kFloatTokens = 6;
constexpr size_t kQuantRows = 4, kQuantTokens = 3;
#elif HWY_MAX_BYTES == 32
constexpr size_t kFloatRows = 3, kFloatTokens = 3;
constexpr size_t kQuantRows = 2, kQuantTokens = 2;
#else
constexpr size_t kFloatRows = 2, kFloatTokens = 2;
constexpr size_t kQuantRows = 2, kQuantTokens = 2;
#endif

HWY_INLINE float HalfToFloat(const uint16_t* bits) {
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh1;
  return hn::GetLane(hn::PromoteTo(
      d1, hn::LoadU(dh1, reinterpret_cast<const hwy::float16_t*>(bits))));
}

// ------------------------------------------------------- sums of lanes

// The sum of the lanes of each of acc[0, N), into sums[0, N): with AVX-512,
// every vector by the same tree (lanes i + 8, then + 4, + 2, + 1), computed
// for 16 vectors at a time with the vectors interleaved at each level (45
// shuffles and adds per 16, where one SumOfLanes each took 8 per vector:
// the reductions of a float tile cost 7-17% of 1b f16 pp512 on the Zen 5
// host). The tree does not depend on N, so a sum is the same bits whether
// it was reduced alone (decode) or in a tile (a batch).
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
// out[i] = x + y for the two shuffles x, y of in[2 i] and in[2 i + 1] by
// kFirst and kSecond (of 128-bit blocks when kBlocks, else of the lanes of
// each block), for i < ceil(n / 2); an odd last input pairs with itself.
template <size_t n, bool kBlocks, int kFirst, int kSecond>
HWY_INLINE void FoldPairs(const __m512* in, __m512* out) {
#pragma GCC unroll 8
  for (size_t i = 0; i < (n + 1) / 2; ++i) {
    const __m512 a = in[2 * i], b = in[std::min(2 * i + 1, n - 1)];
    if constexpr (kBlocks) {
      out[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, kFirst),
                             _mm512_shuffle_f32x4(a, b, kSecond));
    } else {
      out[i] = _mm512_add_ps(_mm512_shuffle_ps(a, b, kFirst),
                             _mm512_shuffle_ps(a, b, kSecond));
    }
  }
}

template <size_t N>
HWY_INLINE void SumLanesOf16(const hn::Vec<DF>* acc, float* sums) {
  static_assert(N >= 1 && N <= 16);
  constexpr size_t n1 = (N + 1) / 2, n2 = (n1 + 1) / 2, n3 = (n2 + 1) / 2;
  __m512 v[N], p[n1], q[n2], r[n3], s[1];
#pragma GCC unroll 16
  for (size_t i = 0; i < N; ++i) v[i] = acc[i].raw;
  // Level 1: a's 256-bit halves added, beside b's.
  FoldPairs<N, true, _MM_SHUFFLE(1, 0, 1, 0), _MM_SHUFFLE(3, 2, 3, 2)>(v, p);
  // Level 2: each 256-bit sum's 128-bit halves added; four vectors' sums.
  FoldPairs<n1, true, _MM_SHUFFLE(2, 0, 2, 0), _MM_SHUFFLE(3, 1, 3, 1)>(p, q);
  // Level 3: lanes 0 + 2 and 1 + 3 of each 128-bit sum.
  FoldPairs<n2, false, _MM_SHUFFLE(1, 0, 1, 0), _MM_SHUFFLE(3, 2, 3, 2)>(q, r);
  // Level 4: the two lanes left; lane 4 j + m holds vector j + 4 m.
  FoldPairs<n3, false, _MM_SHUFFLE(2, 0, 2, 0), _MM_SHUFFLE(3, 1, 3, 1)>(r, s);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s[0]);
#pragma GCC unroll 16
  for (size_t i = 0; i < N; ++i) sums[i] = lanes[i % 4 * 4 + i / 4];
}

template <size_t N>
HWY_INLINE void SumLanes(const hn::Vec<DF>* acc, float* sums) {
  if constexpr (N > 16) {
    SumLanesOf16<16>(acc, sums);
    SumLanes<N - 16>(acc + 16, sums + 16);
  } else {
    SumLanesOf16<N>(acc, sums);
  }
}
#else
template <size_t N>
HWY_INLINE void SumLanes(const hn::Vec<DF>* acc, float* sums) {
  for (size_t i = 0; i < N; ++i) {
    sums[i] = hn::GetLane(hn::SumOfLanes(DF(), acc[i]));
  }
}
#endif

// Reduces acc[0, N) of kernel K into sums: by the kernel's Reduce, or by
// SumLanes for a kernel that has none (its sum is the sum of the lanes).
template <class K, size_t N>
HWY_INLINE void ReduceAll(const K& k, const typename K::Acc* acc, float* sums) {
  if constexpr (requires { k.Reduce(acc[0]); }) {
    for (size_t i = 0; i < N; ++i) sums[i] = k.Reduce(acc[i]);
  } else {
    SumLanes<N>(acc, sums);
  }
}

// ---------------------------------------------------------------- the driver

// Steps [step_begin, step_end) of a row, plus the partial last step if
// `tail`. The first chunk of a row stores its sum in y, later ones add theirs.
struct Chunk {
  size_t step_begin;
  size_t step_end;
  bool tail;
  bool first;
};

// acc[r][t] = Mac(acc[r][t], w[r], load_x(t)) for one step.
template <size_t kR, size_t kT, class K, class W, class LoadX>
HWY_INLINE void MacTile(const K& k, typename K::Acc (&acc)[kR][kT],
                        const W (&w)[kR], const LoadX& load_x) {
#pragma GCC unroll 8
  for (size_t t = 0; t < kT; ++t) {
    const typename K::X x = load_x(t);
#pragma GCC unroll 8
    for (size_t r = 0; r < kR; ++r) acc[r][t] = k.Mac(acc[r][t], w[r], x);
  }
}

// y[t * ldy + r] (+)= dot over chunk c of (row r, token t0 + t) for r < kR,
// t < kT, where row r starts at w + r * row_bytes. Every (r, t) goes through
// the same operations whatever kR and kT are.
template <size_t kR, size_t kT, class K>
HWY_INLINE void Tile(const K& k, const uint8_t* w, size_t row_bytes, size_t t0,
                     const Chunk& c, float* y, size_t ldy) {
  typename K::Acc acc[kR][kT];
#pragma GCC unroll 8
  for (size_t r = 0; r < kR; ++r) {
#pragma GCC unroll 8
    for (size_t t = 0; t < kT; ++t) acc[r][t] = k.Zero();
  }
  typename K::W wv[kR];
  for (size_t s = c.step_begin; s < c.step_end; ++s) {
#pragma GCC unroll 8
    for (size_t r = 0; r < kR; ++r) wv[r] = k.LoadW(w + r * row_bytes, s);
    MacTile(k, acc, wv, [&](size_t t) { return k.LoadX(t0 + t, s); });
  }
  if (c.tail) {
#pragma GCC unroll 8
    for (size_t r = 0; r < kR; ++r) wv[r] = k.LoadWTail(w + r * row_bytes);
    MacTile(k, acc, wv, [&](size_t t) { return k.LoadXTail(t0 + t); });
  }
  float sums[kR * kT];
  ReduceAll<K, kR * kT>(k, &acc[0][0], sums);
#pragma GCC unroll 8
  for (size_t r = 0; r < kR; ++r) {
#pragma GCC unroll 8
    for (size_t t = 0; t < kT; ++t) {
      float& out = y[t * ldy + r];
      out = c.first ? sums[r * kT + t] : out + sums[r * kT + t];
    }
  }
}

// Splits a row of `steps` whole steps (plus a partial one if `tail`) into
// chunks of K::kChunkElems elements.
template <class K>
class Chunks {
 public:
  explicit Chunks(const K& k)
      : steps_(k.steps),
        tail_(k.has_tail),
        count_(std::max<size_t>(
            1, (k.steps + (k.has_tail ? 1 : 0) + kPerChunk - 1) / kPerChunk)) {}
  size_t count() const { return count_; }
  Chunk operator[](size_t c) const {
    return Chunk{std::min(steps_, c * kPerChunk),
                 std::min(steps_, (c + 1) * kPerChunk),
                 tail_ && c + 1 == count_, c == 0};
  }

 private:
  static constexpr size_t kPerChunk = K::kChunkElems / K::kStepElems;
  static_assert(K::kChunkElems % K::kStepElems == 0);
  size_t steps_;
  bool tail_;
  size_t count_;
};

// Chunks [c_begin, c_end) of rows [r_begin, r_end) for the nt <= kT tokens
// from t0, row tile by row tile.
template <class K, size_t kT = K::kTokens>
void TokenTile(const K& k, const uint8_t* w, size_t row_bytes, size_t r_begin,
               size_t r_end, size_t t0, size_t nt, const Chunks<K>& chunks,
               size_t c_begin, size_t c_end, float* y, size_t ldy) {
  if constexpr (kT > 1) {
    if (nt < kT) {
      return TokenTile<K, kT - 1>(k, w, row_bytes, r_begin, r_end, t0, nt,
                                  chunks, c_begin, c_end, y, ldy);
    }
  }
  float* y_t0 = y + t0 * ldy;
  size_t r = r_begin;
  for (; r + K::kRows <= r_end; r += K::kRows) {
    for (size_t c = c_begin; c < c_end; ++c) {
      Tile<K::kRows, kT>(k, w + r * row_bytes, row_bytes, t0, chunks[c],
                         y_t0 + r, ldy);
    }
  }
  for (; r < r_end; ++r) {
    for (size_t c = c_begin; c < c_end; ++c) {
      Tile<1, kT>(k, w + r * row_bytes, row_bytes, t0, chunks[c], y_t0 + r,
                  ldy);
    }
  }
}

// Calls block(rb, re, tb, te, c) for the blocks of a batch: rows [rb, re) in
// blocks of block_rows, tokens [tb, te) in blocks whose chunk of activations
// stays in L2, and for each such block chunk c after chunk.
template <class K, class Block>
void ForEachBatchBlock(size_t row_begin, size_t row_end, size_t n,
                       size_t block_rows, size_t chunk_count,
                       const Block& block) {
  const size_t block_tokens =
      std::max(K::kTokens, kTokenBlockBytes / kChunkActivationBytes /
                               K::kTokens * K::kTokens);
  for (size_t rb = row_begin; rb < row_end; rb += block_rows) {
    const size_t re = std::min(row_end, rb + block_rows);
    for (size_t tb = 0; tb < n; tb += block_tokens) {
      const size_t te = std::min(n, tb + block_tokens);
      for (size_t c = 0; c < chunk_count; ++c) block(rb, re, tb, te, c);
    }
  }
}

template <class K>
void RunKernel(const K& k, const uint8_t* w, size_t row_bytes, size_t cols,
               size_t n, size_t row_begin, size_t row_end, float* y,
               size_t ldy) {
  const Chunks<K> chunks(k);
  if (n <= K::kTokens) {
    // One token tile: each row tile streams through its rows once.
    TokenTile(k, w, row_bytes, row_begin, row_end, 0, n, chunks, 0,
              chunks.count(), y, ldy);
    return;
  }
  // A batch: for each block of rows x tokens, chunk after chunk, the token
  // tiles pass over the block's rows.
  const size_t chunk_bytes = row_bytes * std::min(cols, K::kChunkElems) / cols;
  const size_t block_rows =
      std::max(K::kRows, kRowBlockBytes / chunk_bytes / K::kRows * K::kRows);
  ForEachBatchBlock<K>(
      row_begin, row_end, n, block_rows, chunks.count(),
      [&](size_t rb, size_t re, size_t tb, size_t te, size_t c) {
        for (size_t t0 = tb; t0 < te; t0 += K::kTokens) {
          TokenTile(k, w, row_bytes, rb, re, t0, std::min(K::kTokens, te - t0),
                    chunks, c, c + 1, y, ldy);
        }
      });
}

// Weight rows stream from DRAM in tiles of K::kRows rows. Each kernel's
// LoadW asks for the same columns of the next row tile (`ahead` bytes on)
// while it loads this one, so that the next tile's DRAM latency overlaps this
// tile's work. A prefetch past the end of the matrix is harmless.
HWY_INLINE void PrefetchNextTile(const void* p, size_t ahead) {
  hwy::Prefetch(static_cast<const uint8_t*>(p) + ahead);
}

// ----------------------------------------------------------- float kernels

// Weights of float type T (float, hwy::float16_t, hwy::bfloat16_t) widened to
// f32, times f32 activations, with FMA.
template <typename T>
struct WidenKernel {
  static constexpr size_t kRows = kFloatRows;
  static constexpr size_t kTokens = kFloatTokens;
  static constexpr size_t kLanes = HWY_LANES(float);
  static constexpr size_t kStepElems = kLanes;
  static constexpr size_t kChunkElems = kChunkActivationBytes / sizeof(float);
  using W = hn::Vec<DF>;
  using X = hn::Vec<DF>;
  using Acc = hn::Vec<DF>;

  // x: [n] rows of `cols` activations, `x_stride` floats apart.
  WidenKernel(const float* x, size_t cols, size_t x_stride)
      : x(x),
        x_stride(x_stride),
        cols(cols),
        steps(cols / hn::Lanes(DF())),
        has_tail(cols % hn::Lanes(DF()) != 0) {}

  static W Widen(const T* p) {
    if constexpr (std::is_same_v<T, float>) {
      return hn::LoadU(DF(), p);
    } else {
      return hn::PromoteTo(DF(), hn::LoadU(hn::Rebind<T, DF>(), p));
    }
  }
  W LoadW(const uint8_t* row, size_t s) const {
    const T* p = reinterpret_cast<const T*>(row) + s * hn::Lanes(DF());
    PrefetchNextTile(p, prefetch_ahead);
    return Widen(p);
  }
  W LoadWTail(const uint8_t* row) const {
    return WidenTail(reinterpret_cast<const T*>(row) + steps * hn::Lanes(DF()));
  }
  // The partial last step of a row, from its first element `p`, zero-padded.
  W WidenTail(const T* p) const {
    HWY_ALIGN T buf[kLanes] = {};
    std::memcpy(buf, p, (cols - steps * hn::Lanes(DF())) * sizeof(T));
    return Widen(buf);
  }
  X LoadX(size_t t, size_t s) const {
    return hn::LoadU(DF(), x + t * x_stride + s * hn::Lanes(DF()));
  }
  X LoadXTail(size_t t) const {
    HWY_ALIGN float buf[kLanes] = {};
    const size_t done = steps * hn::Lanes(DF());
    std::memcpy(buf, x + t * x_stride + done, (cols - done) * sizeof(float));
    return hn::Load(DF(), buf);
  }
  Acc Zero() const { return hn::Zero(DF()); }
  Acc Mac(Acc acc, W w, X xv) const { return hn::MulAdd(w, xv, acc); }

  const float* x;
  size_t x_stride;
  size_t cols;
  size_t steps;  // whole vectors per row
  bool has_tail;
  size_t prefetch_ahead = kRows * cols * sizeof(T);  // one row tile
};

// Decode (one token) for float weights: the operations of Tile<kR, 1> on
// each (row, chunk), hence the same bits, with more rows at a time (more
// weight streams in flight) and one prefetch per cache line of each row,
// for the row's own bytes this far on: on the Zen 5 host, 1 KiB ahead in the
// row read 1.15-1.25x the weights per second of prefetching the next tile's
// rows (the quantized decode tiles, whose prefetches cover shorter rows,
// measured better with the next tile).
constexpr size_t kFloatDecodeAhead = 1024;
#if HWY_MAX_BYTES >= 64
constexpr size_t kFloatDecodeRows = 8;
#else
constexpr size_t kFloatDecodeRows = 4;
#endif

template <size_t kR, typename T>
HWY_INLINE void WidenDecodeTile(const WidenKernel<T>& k, const uint8_t* w,
                                size_t row_bytes, const Chunk& c, float* y) {
  constexpr size_t kLanes = WidenKernel<T>::kLanes;
  constexpr size_t kStepsPerLine =
      std::max<size_t>(1, 64 / (kLanes * sizeof(T)));
  const DF df;
  const T* rows[kR];
  hn::Vec<DF> acc[kR];
#pragma GCC unroll 8
  for (size_t r = 0; r < kR; ++r) {
    rows[r] = reinterpret_cast<const T*>(w + r * row_bytes);
    acc[r] = hn::Zero(df);
  }
  size_t s = c.step_begin;
  const auto step = [&](size_t s) {
    const hn::Vec<DF> x = hn::LoadU(df, k.x + s * kLanes);
#pragma GCC unroll 8
    for (size_t r = 0; r < kR; ++r) {
      acc[r] =
          hn::MulAdd(WidenKernel<T>::Widen(rows[r] + s * kLanes), x, acc[r]);
    }
  };
  for (; s + kStepsPerLine <= c.step_end; s += kStepsPerLine) {
#pragma GCC unroll 8
    for (size_t r = 0; r < kR; ++r) {
      PrefetchNextTile(rows[r] + s * kLanes, kFloatDecodeAhead);
    }
#pragma GCC unroll 4
    for (size_t i = 0; i < kStepsPerLine; ++i) step(s + i);
  }
  for (; s < c.step_end; ++s) step(s);
  if (c.tail) {
    const hn::Vec<DF> x = k.LoadXTail(0);
#pragma GCC unroll 8
    for (size_t r = 0; r < kR; ++r) {
      acc[r] = hn::MulAdd(k.LoadWTail(w + r * row_bytes), x, acc[r]);
    }
  }
  float sums[kR];
  ReduceAll<WidenKernel<T>, kR>(k, acc, sums);
#pragma GCC unroll 8
  for (size_t r = 0; r < kR; ++r) y[r] = c.first ? sums[r] : y[r] + sums[r];
}

template <typename T>
void RunWidenDecode(const WidenKernel<T>& k, const uint8_t* w, size_t row_bytes,
                    size_t row_begin, size_t row_end, float* y) {
  const Chunks<WidenKernel<T>> chunks(k);
  size_t r = row_begin;
  for (; r + kFloatDecodeRows <= row_end; r += kFloatDecodeRows) {
    for (size_t c = 0; c < chunks.count(); ++c) {
      WidenDecodeTile<kFloatDecodeRows>(k, w + r * row_bytes, row_bytes,
                                        chunks[c], y + r);
    }
  }
  for (; r < row_end; ++r) {
    for (size_t c = 0; c < chunks.count(); ++c) {
      WidenDecodeTile<1>(k, w + r * row_bytes, row_bytes, chunks[c], y + r);
    }
  }
}

// WidenKernel<T> over copies of one chunk of its weights: `row` points at a
// copied row whose first element is that of step `base`. The copies hold the
// row's elements from there to the chunk's end (its last, partial step
// included), so every product is the one WidenKernel<T> makes.
template <typename T>
struct CopiedChunkKernel : WidenKernel<T> {
  using Base = WidenKernel<T>;
  using Base::Base;
  typename Base::W LoadW(const uint8_t* row, size_t s) const {
    return Base::Widen(reinterpret_cast<const T*>(row) +
                       (s - base) * hn::Lanes(DF()));
  }
  typename Base::W LoadWTail(const uint8_t* row) const {
    return this->WidenTail(reinterpret_cast<const T*>(row) +
                           (this->steps - base) * hn::Lanes(DF()));
  }
  size_t base = 0;
};

// A batch of float weights: as RunKernel, but each block of rows x
// tokens first copies its chunk of weights into a per-thread buffer whose
// rows are one cache line longer than a chunk, and all of the block's token
// tiles read the copy, widening as they go. The matrix's own rows lie a
// multiple of 4 KiB apart in most shapes (a 2048-column f16 row is 4 KiB), so
// a block's rows fall into few of L2's sets and evict each other between
// token tiles; the copy's rows spread over all sets. On the Zen 5 host this
// took 1b f16 pp512 (`kvstash bench`, 2 threads) from 0.63-0.65 of the FMA
// peak to 0.72-0.74 (3 alternating rounds), against widening each chunk
// once into an f32 buffer (twice the bytes for the tiles to read), and the
// 2048 x 8192 f32 prefill of matmul_bench from 0.39-0.58 to 0.52-0.64,
// against reading the matrix in place.
template <typename T>
void RunCopiedChunks(const WidenKernel<T>& k, const uint8_t* w,
                     size_t row_bytes, size_t n, size_t row_begin,
                     size_t row_end, float* y, size_t ldy) {
  using K = WidenKernel<T>;
  constexpr size_t kChunkBytes = K::kChunkElems * sizeof(T);
  constexpr size_t kBlockRows =
      kRowBlockBytes / kChunkBytes / K::kRows * K::kRows;
  constexpr size_t kBufRowBytes = kChunkBytes + 64;
  // The thread's buffer, allocated (zeroed) at its first batch. Not a
  // thread_local array: that would sit in the static TLS block of every
  // thread, which the C library zeroes whenever a thread starts (4.8 MB
  // across the types and targets: each short-lived thread of the process,
  // e.g. a KV cache load's, paid ~1 ms of faults and memset for it).
  static thread_local hwy::AlignedFreeUniquePtr<uint8_t[]> owned;
  if (!owned) {
    owned = hwy::AllocateAligned<uint8_t>(kBlockRows * kBufRowBytes);
    std::memset(owned.get(), 0, kBlockRows * kBufRowBytes);
  }
  uint8_t* const buf = owned.get();
  CopiedChunkKernel<T> view(k.x, k.cols, k.x_stride);
  const Chunks<K> chunks(k);
  const Chunks<CopiedChunkKernel<T>> view_chunks(view);
  const size_t lanes = hn::Lanes(DF());
  ForEachBatchBlock<K>(
      row_begin, row_end, n, kBlockRows, chunks.count(),
      [&](size_t rb, size_t re, size_t tb, size_t te, size_t c) {
        const Chunk chunk = chunks[c];
        // The chunk's elements: its whole steps, and the row's last
        // elements when it ends in a partial step.
        const size_t first = chunk.step_begin * lanes * sizeof(T);
        const size_t last = chunk.tail ? k.cols * sizeof(T)
                                       : chunk.step_end * lanes * sizeof(T);
        for (size_t r = rb; r < re; ++r) {
          std::memcpy(buf + (r - rb) * kBufRowBytes, w + r * row_bytes + first,
                      last - first);
        }
        view.base = chunk.step_begin;
        for (size_t t0 = tb; t0 < te; t0 += K::kTokens) {
          TokenTile(view, buf, kBufRowBytes, 0, re - rb, t0,
                    std::min(K::kTokens, te - t0), view_chunks, c, c + 1,
                    y + rb, ldy);
        }
      });
}

// ------------------------------------------------------- quantized kernels

// Prepared Q8_0-like activations (see PrepareActivations).
struct QuantActivations {
  QuantActivations(const void* prepared, size_t cols, size_t n)
      : q(static_cast<const int8_t*>(prepared)),
        sums(reinterpret_cast<const int32_t*>(
            static_cast<const uint8_t*>(prepared) + QuantSumsOffset(cols, n))),
        d(reinterpret_cast<const float*>(static_cast<const uint8_t*>(prepared) +
                                         QuantScalesOffset(cols, n))) {}
  const int8_t* q;      // [n][cols]
  const int32_t* sums;  // [n][cols / kQuantBlock]
  const float* d;       // [n][cols / kQuantBlock]
};

// Portable: one block per step; int8 widened to int16, pairwise multiplied
// and added into int32 lanes, converted to f32 and scaled by d_w * d_x.
using D16 = hn::ScalableTag<int16_t>;
using D32 = hn::ScalableTag<int32_t>;
constexpr size_t kBlockVecs = kQuantBlock / HWY_LANES(int16_t);
static_assert(kBlockVecs >= 1 && kQuantBlock % HWY_LANES(int16_t) == 0);

struct IntBlock {
  hn::Vec<D16> q[kBlockVecs];
  float d;
};

HWY_INLINE IntBlock LoadIntBlock(const int8_t* q, float d) {
  const hn::Rebind<int8_t, D16> d8;
  IntBlock b;
  for (size_t v = 0; v < kBlockVecs; ++v) {
    b.q[v] = hn::PromoteTo(D16(), hn::LoadU(d8, q + v * hn::Lanes(D16())));
  }
  b.d = d;
  return b;
}

// The integer dot product of two blocks, spread over int32 lanes.
HWY_INLINE hn::Vec<D32> BlockDot(const hn::Vec<D16> (&a)[kBlockVecs],
                                 const hn::Vec<D16> (&b)[kBlockVecs]) {
  hn::Vec<D32> sum0 = hn::Zero(D32());
  hn::Vec<D32> sum1 = hn::Zero(D32());
  for (size_t v = 0; v < kBlockVecs; ++v) {
    sum0 = hn::ReorderWidenMulAccumulate(D32(), a[v], b[v], sum0, sum1);
  }
  return hn::RearrangeToOddPlusEven(sum0, sum1);
}

// What the portable integer kernels share: rows of whole 32-element blocks
// (no tail step; LoadWTail / LoadXTail exist for the driver and are never
// called), the quantized tile shape and chunk, f32 accumulators, and the
// prepared activations `xa` (A: QuantActivations or KActivations). Derived
// is the kernel (CRTP), with LoadW and LoadX.
template <class Derived, DType kType, class A>
struct WholeBlockKernel {
  static constexpr size_t kRows = kQuantRows;
  static constexpr size_t kTokens = kQuantTokens;
  static constexpr size_t kStepElems = kQuantBlock;
  static constexpr size_t kChunkElems = kChunkActivationBytes;
  static constexpr bool has_tail = false;
  using Acc = hn::Vec<DF>;

  WholeBlockKernel(const void* prepared, size_t cols, size_t n)
      : xa(prepared, cols, n), cols(cols), steps(cols / kQuantBlock) {}

  auto LoadWTail(const uint8_t* row) const {
    return static_cast<const Derived&>(*this).LoadW(row, 0);
  }
  auto LoadXTail(size_t t) const {
    return static_cast<const Derived&>(*this).LoadX(t, 0);
  }
  Acc Zero() const { return hn::Zero(DF()); }
  // Block s of token t's activations.
  IntBlock XBlock(size_t t, size_t s) const {
    return LoadIntBlock(xa.q + t * cols + s * kQuantBlock, xa.d[t * steps + s]);
  }

  A xa;
  size_t cols;
  size_t steps;                                           // blocks per row
  size_t prefetch_ahead = kRows * RowBytes(kType, cols);  // one row tile
};

template <DType kType>
struct IntKernel : WholeBlockKernel<IntKernel<kType>, kType, QuantActivations> {
  using Base = WholeBlockKernel<IntKernel<kType>, kType, QuantActivations>;
  using Base::Base;
  using W = IntBlock;
  using X = IntBlock;
  using typename Base::Acc;

  W LoadW(const uint8_t* row, size_t s) const {
    PrefetchNextTile(row + s * RowBytes(kType, kQuantBlock),
                     this->prefetch_ahead);
    if constexpr (kType == DType::kQ8_0) {
      const BlockQ8_0& b = reinterpret_cast<const BlockQ8_0*>(row)[s];
      return LoadIntBlock(b.qs, HalfToFloat(&b.d));
    } else {
      const BlockQ4_0& b = reinterpret_cast<const BlockQ4_0*>(row)[s];
      HWY_ALIGN int8_t q[kQuantBlock];  // nibble - 8, in element order
      constexpr size_t kHalf = kQuantBlock / 2;
#if HWY_TARGET == HWY_SCALAR
      for (size_t j = 0; j < kHalf; ++j) {
        q[j] = static_cast<int8_t>((b.qs[j] & 0xF) - 8);
        q[j + kHalf] = static_cast<int8_t>((b.qs[j] >> 4) - 8);
      }
#else
      const hn::Full128<uint8_t> d8;
      const hn::RebindToSigned<decltype(d8)> di8;
      const hn::Vec<decltype(d8)> packed = hn::LoadU(d8, b.qs);
      const hn::Vec<decltype(d8)> eight = hn::Set(d8, 8);
      hn::Store(
          hn::BitCast(di8, hn::Sub(hn::And(packed, hn::Set(d8, 0xF)), eight)),
          di8, q);
      hn::Store(hn::BitCast(di8, hn::Sub(hn::ShiftRight<4>(packed), eight)),
                di8, q + kHalf);
#endif
      return LoadIntBlock(q, HalfToFloat(&b.d));
    }
  }
  X LoadX(size_t t, size_t s) const { return this->XBlock(t, s); }
  Acc Mac(Acc acc, const W& w, const X& xb) const {
    return hn::MulAdd(hn::ConvertTo(DF(), BlockDot(w.q, xb.q)),
                      hn::Set(DF(), w.d * xb.d), acc);
  }
};

// ------------------------------------------------------ K-quant kernels
//
// K-quant weights against activations quantized per block of 32 as for q8_0
// and q4_0 (KActivations). Every 32-element block b of a row has its own f32
// weight scale ws_b = d * s_j (and, for Q4_K / Q5_K, min wm_b = dmin * m_j),
// rounded as DequantizeRow rounds them, so a block's contribution is
//   dx_b * (ws_b * dot_b - wm_b * bsum_b)
// with dot_b the exact integer dot product of the block's quants and
// activations and bsum_b the sum of its int8 activations. Q6_K has two
// sub-blocks of 16 per block, each with its own scale.

// Prepared activations for K-quant weights (see PrepareActivations).
struct KActivations {
  KActivations(const void* prepared, size_t cols, size_t n)
      : q(static_cast<const int8_t*>(prepared)),
        sums(reinterpret_cast<const int32_t*>(
            static_cast<const uint8_t*>(prepared) + QuantSumsOffset(cols, n))),
        d(reinterpret_cast<const float*>(static_cast<const uint8_t*>(prepared) +
                                         KScalesOffset(cols, n))),
        bsum(reinterpret_cast<const float*>(
            static_cast<const uint8_t*>(prepared) +
            KBlockSumsOffset(cols, n))) {}
  const int8_t* q;      // [n][cols]
  const int32_t* sums;  // [n][cols / kKSumElems]
  const float* d;       // [n][cols / kQuantBlock]
  const float* bsum;    // [n][cols / kQuantBlock]
};

template <DType kType>
using KBlock = std::conditional_t<
    kType == DType::kQ4_K, BlockQ4_K,
    std::conditional_t<kType == DType::kQ5_K, BlockQ5_K, BlockQ6_K>>;

// 32-element blocks per super-block.
constexpr size_t kKBlocks = kSuperBlock / kQuantBlock;

// The 32 quants of block j (< kKBlocks) of the K-quant super-block at `blk`,
// in element order: 0..15 (Q4_K) or 0..31 (Q5_K) as stored, q - 32 (Q6_K).
template <DType kType>
HWY_INLINE void DecodeKBlock(const uint8_t* blk, size_t j, int8_t* q) {
  const hn::CappedTag<uint8_t, 16> d8;
  const hn::RebindToSigned<decltype(d8)> di8;
  const auto low4 = hn::Set(d8, 0xF);
  for (size_t i = 0; i < kQuantBlock; i += hn::Lanes(d8)) {
    if constexpr (kType == DType::kQ6_K) {
      // Element 32 j + i: h = j / 4, c = j % 4 in the layout of dtype.h.
      const auto& b = *reinterpret_cast<const BlockQ6_K*>(blk);
      const size_t h = j / 4, c = j % 4;
      const auto low = hn::And(
          hn::ShiftRightSame(hn::LoadU(d8, b.ql + 64 * h + 32 * (c % 2) + i),
                             static_cast<int>(4 * (c / 2))),
          low4);
      const auto high =
          hn::And(hn::ShiftRightSame(hn::LoadU(d8, b.qh + 32 * h + i),
                                     static_cast<int>(2 * c)),
                  hn::Set(d8, 3));
      const auto v = hn::BitCast(di8, hn::Or(low, hn::ShiftLeft<4>(high)));
      hn::StoreU(hn::Sub(v, hn::Set(di8, 32)), di8, q + i);
    } else {
      const auto& b = *reinterpret_cast<const KBlock<kType>*>(blk);
      auto v =
          hn::And(hn::ShiftRightSame(hn::LoadU(d8, b.qs + 32 * (j / 2) + i),
                                     static_cast<int>(4 * (j % 2))),
                  low4);
      if constexpr (kType == DType::kQ5_K) {
        const auto bit = hn::Set(d8, static_cast<uint8_t>(1u << j));
        v = hn::Or(v,
                   hn::IfThenElseZero(hn::TestBit(hn::LoadU(d8, b.qh + i), bit),
                                      hn::Set(d8, 16)));
      }
      hn::StoreU(hn::BitCast(di8, v), di8, q + i);
    }
  }
}

// Portable: one 32-element block per step, as IntKernel. Q4_K / Q5_K:
//   acc += float(dot_b) * (ws_b * dx_b) on the lanes, minus wm_b * (dx_b *
//   float(bsum_b)) on lane 0;
// Q6_K: the quants q - 32 are multiplied by their int8 sub-block scale
// (|product| <= 4096 fits int16), so that acc += float(dot) * (d * dx_b).
template <DType kType>
struct KIntKernel : WholeBlockKernel<KIntKernel<kType>, kType, KActivations> {
  using Base = WholeBlockKernel<KIntKernel<kType>, kType, KActivations>;
  using Base::Base;
  static constexpr bool kAffine = kType != DType::kQ6_K;
  static constexpr size_t kBlockBytes = sizeof(KBlock<kType>);
  struct W {
    hn::Vec<D16> q[kBlockVecs];
    float scale;
    float min;
  };
  struct X {
    IntBlock block;
    hn::Vec<DF> min_sum;  // lane 0: dx_b * float(bsum_b) (Q4_K, Q5_K)
  };
  using typename Base::Acc;

  W LoadW(const uint8_t* row, size_t s) const {
    const uint8_t* blk = row + s / kKBlocks * kBlockBytes;
    const size_t j = s % kKBlocks;
    PrefetchNextTile(blk + j * kBlockBytes / kKBlocks, this->prefetch_ahead);
    HWY_ALIGN int8_t q[kQuantBlock];
    DecodeKBlock<kType>(blk, j, q);
    const hn::Rebind<int8_t, D16> d8;
    const size_t lanes = hn::Lanes(D16());
    W w;
    if constexpr (kAffine) {
      const auto& b = *reinterpret_cast<const KBlock<kType>*>(blk);
      int scale, min;
      KScaleMin(b.scales, j, &scale, &min);
      w.scale = HalfToFloat(&b.d) * static_cast<float>(scale);
      w.min = HalfToFloat(&b.dmin) * static_cast<float>(min);
      for (size_t v = 0; v < kBlockVecs; ++v) {
        w.q[v] = hn::PromoteTo(D16(), hn::LoadU(d8, q + v * lanes));
      }
    } else {
      const auto& b = *reinterpret_cast<const BlockQ6_K*>(blk);
      const hn::Vec<D16> s0 = hn::Set(D16(), b.scales[2 * j]);
      const hn::Vec<D16> s1 = hn::Set(D16(), b.scales[2 * j + 1]);
      for (size_t v = 0; v < kBlockVecs; ++v) {
        const size_t first = v * lanes;  // elements < 16 have scale s0
        const hn::Vec<D16> scale = hn::IfThenElse(
            hn::FirstN(D16(), first < 16 ? 16 - first : 0), s0, s1);
        w.q[v] = hn::Mul(hn::PromoteTo(D16(), hn::LoadU(d8, q + first)), scale);
      }
      w.scale = HalfToFloat(&b.d);
      w.min = 0.0f;
    }
    return w;
  }
  X LoadX(size_t t, size_t s) const {
    X x;
    x.block = this->XBlock(t, s);
    x.min_sum = hn::Zero(DF());
    if constexpr (kAffine) {
      x.min_sum = hn::IfThenElseZero(
          hn::FirstN(DF(), 1),
          hn::Set(DF(), x.block.d * this->xa.bsum[t * this->steps + s]));
    }
    return x;
  }
  Acc Mac(Acc acc, const W& w, const X& x) const {
    acc = hn::MulAdd(hn::ConvertTo(DF(), BlockDot(w.q, x.block.q)),
                     hn::Set(DF(), w.scale * x.block.d), acc);
    if constexpr (kAffine) {
      acc = hn::NegMulAdd(hn::Set(DF(), w.min), x.min_sum, acc);
    }
    return acc;
  }
};

#if HWY_TARGET == HWY_AVX3_DL

bool CpuHasAvx512Vnni() {
  static const bool has = __builtin_cpu_supports("avx512vnni");
  return has;
}

bool CpuHasAvx512Bf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

// --------------------------------------- AVX-512 VNNI: quantized panels
//
// For q8_0 and q4_0 weights, y[t][r] is computed block by block, in order:
//   acc = fma(float(dot_b), d_w[r][b] * d_x[t][b], acc),  acc starting at 0,
// where dot_b is the exact integer dot product of block b's weights and
// activations. An integer sum is exact in any order, so 32 rows are computed
// at once with rows on the vector lanes: a "panel" holds a 32-row tile's
// weights for up to kPanelBlocks blocks, transposed so that one vector holds
// one 4-byte group of a block for 16 rows. vpdpbusd multiplies those unsigned
// weight bytes by the token's 4 activation bytes broadcast to every lane:
//   q8_0: the weights are stored + 128 (xor 0x80), and the integer sum starts
//         from -128 * (sum of the block's activations);
//   q4_0: the nibbles are stored as they are (0..15), and the sum starts from
//         -8 * (sum of the block's activations).
// Every (row, token) goes through the same operations whatever the batch and
// the row range. Decode (up to kRowsTileTokens tokens) skips the panel and
// reduces the integer sums in registers instead (QuantRowsTile): the same
// integers, hence the same bits.

constexpr size_t kPanelRows = 32;    // two vectors of 16 int32 lanes
constexpr size_t kPanelBlocks = 32;  // 1024 columns: a 32 KiB panel
constexpr size_t kPanelTokens = 6;   // 12 int32 and 12 f32 accumulators
constexpr size_t kGroups = kQuantBlock / 4;

struct QuantPanel {
  // [block][group][row]: 4 weight bytes, unsigned as described above.
  alignas(64) uint32_t q[kPanelBlocks][kGroups][kPanelRows];
  alignas(64) float d[kPanelBlocks][kPanelRows];  // weight scales
  // K-quants: the mins wm (Q4_K, Q5_K) or the second sub-block's scales.
  alignas(64) float m[kPanelBlocks][kPanelRows];
};

// In place: z[j] lane i becomes z[i] lane j (a 16 x 16 transpose of int32).
HWY_INLINE void Transpose16x16(__m512i (&z)[16]) {
  __m512i a[16];
  for (size_t i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
  }
  // b[4i + m], 128-bit lane k: rows 4i..4i+3 of element 4k + m.
  __m512i b[16];
  for (size_t i = 0; i < 16; i += 4) {
    b[i] = _mm512_unpacklo_epi64(a[i], a[i + 2]);
    b[i + 1] = _mm512_unpackhi_epi64(a[i], a[i + 2]);
    b[i + 2] = _mm512_unpacklo_epi64(a[i + 1], a[i + 3]);
    b[i + 3] = _mm512_unpackhi_epi64(a[i + 1], a[i + 3]);
  }
  constexpr int kEven = _MM_SHUFFLE(2, 0, 2, 0);
  constexpr int kOdd = _MM_SHUFFLE(3, 1, 3, 1);
  for (size_t m = 0; m < 4; ++m) {
    const __m512i e0 = _mm512_shuffle_i32x4(b[m], b[4 + m], kEven);
    const __m512i e1 = _mm512_shuffle_i32x4(b[m], b[4 + m], kOdd);
    const __m512i e2 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], kEven);
    const __m512i e3 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], kOdd);
    z[m] = _mm512_shuffle_i32x4(e0, e2, kEven);
    z[4 + m] = _mm512_shuffle_i32x4(e1, e3, kEven);
    z[8 + m] = _mm512_shuffle_i32x4(e0, e2, kOdd);
    z[12 + m] = _mm512_shuffle_i32x4(e1, e3, kOdd);
  }
}

template <DType kType>
struct QuantFormat {
  static constexpr bool kQ8 = kType == DType::kQ8_0;
  using Block = std::conditional_t<kQ8, BlockQ8_0, BlockQ4_0>;
  static constexpr int kOffset = kQ8 ? 128 : 8;

  // The unsigned weight bytes of block b (low 256 bits) and, if `two`, of
  // block b + 1 (high 256 bits; zeros otherwise), in element order.
  static __m512i LoadPair(const uint8_t* row, size_t b, bool two) {
    const Block* blk = reinterpret_cast<const Block*>(row) + b;
    if constexpr (kQ8) {
      const __m256i lo =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[0].qs));
      const __m512i q =
          two ? _mm512_inserti64x4(
                    _mm512_castsi256_si512(lo),
                    _mm256_loadu_si256(
                        reinterpret_cast<const __m256i*>(blk[1].qs)),
                    1)
              : _mm512_zextsi256_si512(lo);
      return _mm512_xor_si512(q, _mm512_set1_epi8(static_cast<char>(0x80)));
    } else {
      const __m128i a =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[0].qs));
      const __m128i c =
          two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk[1].qs))
              : _mm_setzero_si128();
      // 128-bit lanes [a, a, c, c]; the 2nd and 4th shifted right by 4, so
      // that each lane holds one half of a block's nibbles.
      const __m512i aacc = _mm512_permutexvar_epi64(
          _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0),
          _mm512_castsi256_si512(_mm256_set_m128i(c, a)));
      return _mm512_and_si512(
          _mm512_srlv_epi64(aacc, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0)),
          _mm512_set1_epi8(0xF));
    }
  }

  // Fills the panel with blocks [b0, b0 + nb) of `rows` rows from w (stride
  // row_bytes); rows past `rows` hold zeros.
  static void Pack(const uint8_t* w, size_t row_bytes, size_t rows, size_t b0,
                   size_t nb, QuantPanel& p) {
    for (size_t half = 0; half < kPanelRows; half += 16) {
      for (size_t b = 0; b < nb; b += 2) {
        const bool two = b + 1 < nb;
        __m512i z[16];
        for (size_t i = 0; i < 16; ++i) {
          z[i] = half + i < rows
                     ? LoadPair(w + (half + i) * row_bytes, b0 + b, two)
                     : _mm512_setzero_si512();
        }
        Transpose16x16(z);
        for (size_t g = 0; g < kGroups; ++g) {
          _mm512_store_si512(&p.q[b][g][half], z[g]);
          if (two) _mm512_store_si512(&p.q[b + 1][g][half], z[kGroups + g]);
        }
      }
    }
    for (size_t b = 0; b < nb; ++b) {
      alignas(32) uint16_t bits[kPanelRows] = {};
      for (size_t r = 0; r < rows; ++r) {
        bits[r] =
            (reinterpret_cast<const Block*>(w + r * row_bytes) + b0 + b)->d;
      }
      for (size_t half = 0; half < kPanelRows; half += 16) {
        _mm512_store_ps(&p.d[b][half],
                        _mm512_cvtph_ps(_mm256_load_si256(
                            reinterpret_cast<const __m256i*>(bits + half))));
      }
    }
  }
};

// The first min(count, 16) lanes.
HWY_INLINE __mmask16 LiveLanes(size_t count) {
  return static_cast<__mmask16>(count >= 16 ? 0xFFFF : (1u << count) - 1);
}

// dot[v][t] += groups [g0, g1) of block b of the panel (rows 16 v ..
// 16 v + 15 on the lanes) times token t's activations xq[t] of that block.
template <size_t kT>
HWY_INLINE void PanelGroupDots(const QuantPanel& p, size_t b, size_t g0,
                               size_t g1, const int8_t* const (&xq)[kT],
                               __m512i (&dot)[2][kT]) {
#pragma GCC unroll 8
  for (size_t g = g0; g < g1; ++g) {
    const __m512i w0 = _mm512_load_si512(&p.q[b][g][0]);
    const __m512i w1 = _mm512_load_si512(&p.q[b][g][16]);
#pragma GCC unroll 8
    for (size_t t = 0; t < kT; ++t) {
      int32_t x4;
      std::memcpy(&x4, xq[t] + 4 * g, sizeof(x4));
      const __m512i xv = _mm512_set1_epi32(x4);
      dot[0][t] = _mm512_dpbusd_epi32(dot[0][t], w0, xv);
      dot[1][t] = _mm512_dpbusd_epi32(dot[1][t], w1, xv);
    }
  }
}

// y[t0 + t][r] for the panel's rows r < rows (y points at row 0 of the panel)
// and kT tokens from t0, over the panel's nb blocks, which are blocks
// [b0, b0 + nb) of the activations. The first panel of a row starts from 0,
// later ones continue from y.
template <size_t kT>
HWY_INLINE void QuantPanelTile(const QuantPanel& p, size_t nb, int offset,
                               const QuantActivations& xa, size_t cols,
                               size_t b0, size_t t0, size_t rows, bool first,
                               float* y, size_t ldy) {
  const size_t blocks = cols / kQuantBlock;
  const __mmask16 live[2] = {LiveLanes(rows),
                             LiveLanes(rows - std::min<size_t>(rows, 16))};
  __m512 acc[2][kT];
#pragma GCC unroll 8
  for (size_t t = 0; t < kT; ++t) {
    for (size_t v = 0; v < 2; ++v) {
      acc[v][t] =
          first ? _mm512_setzero_ps()
                : _mm512_maskz_loadu_ps(live[v], y + (t0 + t) * ldy + 16 * v);
    }
  }
  for (size_t b = 0; b < nb; ++b) {
    const size_t xb = b0 + b;
    __m512i dot[2][kT];
    const int8_t* xq[kT];
#pragma GCC unroll 8
    for (size_t t = 0; t < kT; ++t) {
      dot[0][t] = dot[1][t] =
          _mm512_set1_epi32(-offset * xa.sums[(t0 + t) * blocks + xb]);
      xq[t] = xa.q + (t0 + t) * cols + xb * kQuantBlock;
    }
    PanelGroupDots(p, b, 0, kGroups, xq, dot);
    const __m512 d0 = _mm512_load_ps(&p.d[b][0]);
    const __m512 d1 = _mm512_load_ps(&p.d[b][16]);
#pragma GCC unroll 8
    for (size_t t = 0; t < kT; ++t) {
      const __m512 dx = _mm512_set1_ps(xa.d[(t0 + t) * blocks + xb]);
      acc[0][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[0][t]),
                                  _mm512_mul_ps(d0, dx), acc[0][t]);
      acc[1][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[1][t]),
                                  _mm512_mul_ps(d1, dx), acc[1][t]);
    }
  }
#pragma GCC unroll 8
  for (size_t t = 0; t < kT; ++t) {
    for (size_t v = 0; v < 2; ++v) {
      _mm512_mask_storeu_ps(y + (t0 + t) * ldy + 16 * v, live[v], acc[v][t]);
    }
  }
}

// In-register reduction for decode: p[i] lanes 0-7 hold partial sums of row
// i's block b, lanes 8-15 of block b + 1; returns {lane i = row i's sum for
// block b, lane i = row i's sum for block b + 1}.
HWY_INLINE std::pair<__m512i, __m512i> SumBlockHalves(__m512i (&p)[16]) {
  __m512i a[8];  // rows 2i, 2i + 1
  for (size_t i = 0; i < 8; ++i) {
    a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2 * i], p[2 * i + 1]),
                            _mm512_unpackhi_epi32(p[2 * i], p[2 * i + 1]));
  }
  // c[i], 128-bit lane k: rows 4i..4i+3 summed over elements 4k..4k+3.
  __m512i c[4];
  for (size_t i = 0; i < 4; ++i) {
    c[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * i], a[2 * i + 1]),
                            _mm512_unpackhi_epi64(a[2 * i], a[2 * i + 1]));
  }
  constexpr int kEven = _MM_SHUFFLE(2, 0, 2, 0);
  constexpr int kOdd = _MM_SHUFFLE(3, 1, 3, 1);
  // f[j]: [rows 8j..8j+3 of block b, of block b + 1, rows 8j+4..8j+7 ...].
  __m512i f[2];
  for (size_t j = 0; j < 2; ++j) {
    f[j] = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2 * j], c[2 * j + 1], kEven),
                            _mm512_shuffle_i32x4(c[2 * j], c[2 * j + 1], kOdd));
  }
  return {_mm512_shuffle_i32x4(f[0], f[1], kEven),
          _mm512_shuffle_i32x4(f[0], f[1], kOdd)};
}

// The same results as the panels for kT tokens from t0, without packing:
// rows [0, rows) (rows <= 8) from w are read as they are stored, four blocks
// of each at a time, and their integer dot products are reduced in registers
// onto lanes (row, block); the f32 sums run on 8 lanes, one per row. For
// decode, where packing would cost more than the products.
template <DType kType, size_t kT>
void QuantRowsTile(const uint8_t* w, size_t row_bytes, size_t rows,
                   const QuantActivations& xa, size_t cols, size_t t0, float* y,
                   size_t ldy) {
  using F = QuantFormat<kType>;
  constexpr size_t kBlockBytes = sizeof(typename F::Block);
  const size_t blocks = cols / kQuantBlock;
  const __mmask16 live = LiveLanes(rows);
  // Lane i < 8: row i; lane 8 + i: row i two blocks on.
  const __m512i offsets = _mm512_add_epi32(
      _mm512_mullo_epi32(
          _mm512_set_epi32(7, 6, 5, 4, 3, 2, 1, 0, 7, 6, 5, 4, 3, 2, 1, 0),
          _mm512_set1_epi32(static_cast<int32_t>(row_bytes))),
      _mm512_set_epi32(2 * kBlockBytes, 2 * kBlockBytes, 2 * kBlockBytes,
                       2 * kBlockBytes, 2 * kBlockBytes, 2 * kBlockBytes,
                       2 * kBlockBytes, 2 * kBlockBytes, 0, 0, 0, 0, 0, 0, 0,
                       0));
  __m256 acc[kT];
  for (size_t t = 0; t < kT; ++t) acc[t] = _mm256_setzero_ps();
  for (size_t b = 0; b < blocks; b += 4) {
    const size_t nb = std::min<size_t>(4, blocks - b);
    // z[i]: row i's blocks b, b + 1; z[8 + i]: its blocks b + 2, b + 3.
    __m512i z[16];
#pragma GCC unroll 8
    for (size_t i = 0; i < 8; ++i) {
      if (i < rows) {
        const uint8_t* row = w + i * row_bytes;
        // The same columns of the next 8 rows, which the next call reads.
        for (size_t line = 0; line < 3; ++line) {
          PrefetchNextTile(row + b * kBlockBytes + 64 * line, 8 * row_bytes);
        }
        z[i] = F::LoadPair(row, b, nb >= 2);
        z[8 + i] =
            nb >= 3 ? F::LoadPair(row, b + 2, nb == 4) : _mm512_setzero_si512();
      } else {
        z[i] = z[8 + i] = _mm512_setzero_si512();
      }
    }
    // The f16 scales (the low half of the 4 bytes at each block's start), in
    // the lanes of the sums below: dw[0] blocks b | b + 2, dw[1] b + 1 | b + 3.
    __m512 dw[2];
    for (size_t h = 0; h < 2; ++h) {
      const __mmask16 present = static_cast<__mmask16>(
          (h < nb ? live : 0) | (h + 2 < nb ? live << 8 : 0));
      const __m512i bits =
          _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), present, offsets,
                                      w + (b + h) * kBlockBytes, 1);
      dw[h] = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(bits));
    }
#pragma GCC unroll 4
    for (size_t t = 0; t < kT; ++t) {
      const int8_t* xq = xa.q + (t0 + t) * cols + b * kQuantBlock;
      const auto load_x = [&](size_t first, size_t count) {
        return count >= 2 ? _mm512_loadu_si512(xq + first * kQuantBlock)
                          : _mm512_zextsi256_si512(_mm256_loadu_si256(
                                reinterpret_cast<const __m256i*>(
                                    xq + first * kQuantBlock)));
      };
      const __m512i x01 = load_x(0, nb);
      const __m512i x23 = nb >= 3 ? load_x(2, nb - 2) : _mm512_setzero_si512();
      __m512i p[16];
#pragma GCC unroll 8
      for (size_t i = 0; i < 8; ++i) {
        p[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), z[i], x01);
        p[8 + i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), z[8 + i], x23);
      }
      // sums[0]: blocks b | b + 2, sums[1]: b + 1 | b + 3, row i in lane i.
      const auto [sum0, sum1] = SumBlockHalves(p);
      const __m512i sums[2] = {sum0, sum1};
      for (size_t k = 0; k < nb; ++k) {
        const size_t xb = (t0 + t) * blocks + b + k;
        const __m512i dot = sums[k % 2];
        const __m512 d = dw[k % 2];
        const __m256i dot8 = k < 2 ? _mm512_castsi512_si256(dot)
                                   : _mm512_extracti64x4_epi64(dot, 1);
        const __m256 d8 =
            k < 2 ? _mm512_castps512_ps256(d) : _mm512_extractf32x8_ps(d, 1);
        acc[t] = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(_mm256_add_epi32(
                dot8, _mm256_set1_epi32(-F::kOffset * xa.sums[xb]))),
            _mm256_mul_ps(d8, _mm256_set1_ps(xa.d[xb])), acc[t]);
      }
    }
  }
  for (size_t t = 0; t < kT; ++t) {
    _mm256_mask_storeu_ps(y + (t0 + t) * ldy, static_cast<__mmask8>(live),
                          acc[t]);
  }
}

// Up to this many tokens are computed without panels, QuantRowsTile's rows at
// a time.
constexpr size_t kRowsTileTokens = 3;
constexpr size_t kRowsTileRows = 8;

// Calls tile(std::integral_constant<size_t, min(n, kMax)>()), n >= 1.
template <size_t kMax, class Tile>
HWY_INLINE void WithTokenCount(size_t n, const Tile& tile) {
  if constexpr (kMax > 1) {
    if (n < kMax) return WithTokenCount<kMax - 1>(n, tile);
  }
  tile(std::integral_constant<size_t, kMax>());
}

// The batch path of the panel kernels: for each panel of up to kPanelRows
// rows from row_begin and kPanelBlocks blocks, pack(r0, rows, b0, nb, panel)
// fills the panel, then tile(tokens, panel, nb, b0, t0, rows, r0) computes
// its tokens [t0, t0 + tokens) (tokens an std::integral_constant).
template <class Pack, class Tile>
void ForEachPanel(size_t row_begin, size_t row_end, size_t blocks, size_t n,
                  const Pack& pack, const Tile& tile) {
  QuantPanel panel;
  for (size_t r0 = row_begin; r0 < row_end; r0 += kPanelRows) {
    const size_t rows = std::min(kPanelRows, row_end - r0);
    for (size_t b0 = 0; b0 < blocks; b0 += kPanelBlocks) {
      const size_t nb = std::min(kPanelBlocks, blocks - b0);
      pack(r0, rows, b0, nb, panel);
      for (size_t t0 = 0; t0 < n; t0 += kPanelTokens) {
        WithTokenCount<kPanelTokens>(n - t0, [&](auto tokens) {
          tile(tokens, panel, nb, b0, t0, rows, r0);
        });
      }
    }
  }
}

template <DType kType>
void RunQuantPanels(const uint8_t* w, size_t row_bytes, size_t cols,
                    const void* prepared, size_t n, size_t row_begin,
                    size_t row_end, float* y, size_t ldy) {
  using F = QuantFormat<kType>;
  const QuantActivations xa(prepared, cols, n);
  const size_t blocks = cols / kQuantBlock;
  if (n <= kRowsTileTokens) {
    for (size_t r0 = row_begin; r0 < row_end; r0 += kRowsTileRows) {
      const size_t rows = std::min(kRowsTileRows, row_end - r0);
      WithTokenCount<kRowsTileTokens>(n, [&](auto tokens) {
        QuantRowsTile<kType, decltype(tokens)::value>(
            w + r0 * row_bytes, row_bytes, rows, xa, cols, 0, y + r0, ldy);
      });
    }
    return;
  }
  ForEachPanel(
      row_begin, row_end, blocks, n,
      [&](size_t r0, size_t rows, size_t b0, size_t nb, QuantPanel& panel) {
        F::Pack(w + r0 * row_bytes, row_bytes, rows, b0, nb, panel);
      },
      [&](auto tokens, const QuantPanel& panel, size_t nb, size_t b0, size_t t0,
          size_t rows, size_t r0) {
        QuantPanelTile<decltype(tokens)::value>(panel, nb, F::kOffset, xa, cols,
                                                b0, t0, rows, b0 == 0, y + r0,
                                                ldy);
      });
}

// ---------------------------------------- AVX-512 VNNI: K-quant weights
//
// The unsigned quants (0..15, 0..31, 0..63) times the int8 activations with
// vpdpbusd, exactly; Q6_K's -32 enters as -32 * (sum of the sub-block's 16
// activations) in the integer sum. Then each 32-element block b of row r
// gives, for token t,
//   Q4_K, Q5_K: blk_b = fnmadd(wm_b, bsum_b, float(dot_b) * ws_b)
//   Q6_K:       blk_b = fma(float(dot_b'), ws_b', float(dot_b) * ws_b)
//               (dot_b, dot_b': the block's two 16-element sub-blocks)
// and y[t][r] sums the blocks in chunks of kPanelBlocks blocks (1024
// columns): with e = y so far (0 for the first chunk) and o = 0, the chunk's
// even blocks b in order do e = fma(blk_b, dx_b, e), its odd blocks
// o = fma(blk_b, dx_b, o), then y = e + o. Two sums halve the dependent
// chain and let decode add two blocks per vector. As for q8_0 and q4_0, a
// batch packs rows into panels (the f32 block scales decoded into the panel)
// and decode reads the rows as stored and reduces in registers, by the same
// operations.

// Unpacking one super-block of a K-quant row.
template <DType kType>
struct KFormat {
  using Block = KBlock<kType>;
  static constexpr size_t kBytes = sizeof(Block);
  static constexpr bool kQ6 = kType == DType::kQ6_K;

  static __m512i Bytes(uint8_t b) {
    return _mm512_set1_epi8(static_cast<char>(b));
  }
  // Per 64-bit lane: lanes 0-3 get lo, lanes 4-7 hi.
  static __m512i Halves(int lo, int hi) {
    return _mm512_set_epi64(hi, hi, hi, hi, lo, lo, lo, lo);
  }
  // a | (b & c)
  static __m512i OrAnd(__m512i a, __m512i b, __m512i c) {
    return _mm512_ternarylogic_epi64(a, b, c, 0xF8);
  }
  // The 32 bytes at p in both halves.
  static __m512i Broadcast32(const uint8_t* p) {
    return _mm512_broadcast_i64x4(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }

  // The quants of elements [64 u, 64 u + 64) (u < 4) in order.
  static __m512i LoadUnit(const uint8_t* blk, size_t u) {
    const Block& b = *reinterpret_cast<const Block*>(blk);
    const int iu = static_cast<int>(u);
    if constexpr (kQ6) {
      const __m512i ql = _mm512_loadu_si512(b.ql + 64 * (u / 2));
      const __m512i nib = _mm512_and_si512(
          u % 2 == 0 ? ql : _mm512_srli_epi16(ql, 4), Bytes(0xF));
      // Elements 64 u + l: quarter c = 2 (u % 2) + l / 32 of dtype.h.
      const int c = 2 * (iu % 2);
      const __m512i t = _mm512_srlv_epi64(Broadcast32(b.qh + 32 * (u / 2)),
                                          Halves(2 * c, 2 * c + 2));
      return OrAnd(nib, _mm512_slli_epi64(t, 4), Bytes(0x30));
    } else {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs + 32 * u));
      __m512i z =
          _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(v),
                                              _mm256_srli_epi16(v, 4), 1),
                           Bytes(0xF));
      if constexpr (kType == DType::kQ5_K) {
        const __m512i t =
            _mm512_srlv_epi64(Broadcast32(b.qh), Halves(2 * iu, 2 * iu + 1));
        z = OrAnd(z, _mm512_slli_epi64(t, 4), Bytes(0x10));
      }
      return z;
    }
  }

  // Elements [128 h, 128 h + 128) (h < 2) of the super-block in two vectors,
  // 32-element blocks 4h..4h+3 of the super-block:
  //   Q4_K, Q5_K: lo = [4h | 4h + 2], hi = [4h + 1 | 4h + 3];
  //   Q6_K:       lo = [4h | 4h + 1], hi = [4h + 2 | 4h + 3].
  static std::pair<__m512i, __m512i> LoadHalf(const uint8_t* blk, size_t h) {
    const Block& b = *reinterpret_cast<const Block*>(blk);
    if constexpr (kQ6) {
      const __m512i ql = _mm512_loadu_si512(b.ql + 64 * h);
      const __m512i t =
          _mm512_srlv_epi64(Broadcast32(b.qh + 32 * h), Halves(0, 2));
      return {OrAnd(_mm512_and_si512(ql, Bytes(0xF)), _mm512_slli_epi64(t, 4),
                    Bytes(0x30)),
              OrAnd(_mm512_and_si512(_mm512_srli_epi16(ql, 4), Bytes(0xF)), t,
                    Bytes(0x30))};
    } else {
      const __m512i v = _mm512_loadu_si512(b.qs + 64 * h);
      const __m512i lo = _mm512_and_si512(v, Bytes(0xF));
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), Bytes(0xF));
      if constexpr (kType == DType::kQ5_K) {
        const int ih = static_cast<int>(h);
        const __m512i t =
            _mm512_srlv_epi64(Broadcast32(b.qh), Halves(4 * ih, 4 * ih + 2));
        return {OrAnd(lo, _mm512_slli_epi64(t, 4), Bytes(0x10)),
                OrAnd(hi, _mm512_slli_epi64(t, 3), Bytes(0x10))};
      }
      return {lo, hi};
    }
  }

  // Sub-block scales as f32, for one super-block of up to 8 rows, in pairs
  // of sub-blocks: tab[2i] and tab[2i + 1] hold rows 0-7 of the two
  // sub-blocks of pair i, which decode reads as one vector:
  //   Q4_K, Q5_K: pair i < 4: ws of sub-blocks 2i, 2i + 1; pair 4 + i: their
  //               wm (tab[j] = ws_j, tab[8 + j] = wm_j);
  //   Q6_K:       pair 2u + o (u < 4, o < 2): sub-blocks 4u + o, 4u + 2 + o,
  //               the o-th halves of blocks 2u and 2u + 1.
  // Row r's super-block starts at base + r * row_bytes for r < rows; rows
  // past `rows` get zeros.
  HWY_INLINE static void Scales8(const uint8_t* base, size_t row_bytes,
                                 size_t rows, float (&tab)[16][8]) {
    // The 16 bytes from kScaleOffset in each row's block: lo = bytes 0-7
    // and hi = bytes 8-15, row r in 64-bit lane r.
    __m512i lo, hi;
    {
      __m128i v[8];
#pragma GCC unroll 8
      for (size_t r = 0; r < 8; ++r) {
        v[r] = r < rows ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(
                              base + r * row_bytes + kScaleOffset))
                        : _mm_setzero_si128();
      }
      // Rows r..r+3 in the four 128-bit lanes.
      const auto four = [&](size_t r) {
        __m512i z = _mm512_zextsi128_si512(v[r]);
        z = _mm512_mask_broadcast_i32x4(z, 0x00F0, v[r + 1]);
        z = _mm512_mask_broadcast_i32x4(z, 0x0F00, v[r + 2]);
        return _mm512_mask_broadcast_i32x4(z, 0xF000, v[r + 3]);
      };
      const __m512i a = four(0), b = four(4);
      lo = _mm512_permutex2var_epi64(
          a, _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), b);
      hi = _mm512_permutex2var_epi64(
          a, _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1), b);
    }
    // Byte k of row r in a [row][8 bytes] vector is byte 8 r + k: lane l of
    // a table vector holds row l % 8.
    const __m512i row_bytes8 = _mm512_set_epi32(56, 48, 40, 32, 24, 16, 8, 0,
                                                56, 48, 40, 32, 24, 16, 8, 0);
    if constexpr (kQ6) {
      // lo: scales 0-7, hi: scales 8-15; d follows them.
      int16_t bits[8] = {};
      for (size_t r = 0; r < rows; ++r) {
        std::memcpy(&bits[r], base + r * row_bytes + offsetof(Block, d),
                    sizeof(bits[r]));
      }
      const __m128i dbits = _mm_set_epi16(bits[7], bits[6], bits[5], bits[4],
                                          bits[3], bits[2], bits[1], bits[0]);
      const __m512 d = _mm512_cvtph_ps(_mm256_broadcastsi128_si256(dbits));
      // Each scale byte to the top byte of its 32-bit lane, then shifted
      // down with its sign; bit 6 of an index picks hi (scales 8-15).
      const __m512i top = _mm512_slli_epi32(row_bytes8, 24);
      for (int pair = 0; pair < 8; ++pair) {
        const int u = pair / 2, o = pair % 2;
        const auto code = [](int k) { return (k / 8 * 64 + k % 8) << 24; };
        const __m512i idx = _mm512_add_epi32(
            top, _mm512_inserti64x4(_mm512_set1_epi32(code(4 * u + o)),
                                    _mm256_set1_epi32(code(4 * u + 2 + o)), 1));
        const __m512i s = _mm512_srai_epi32(
            _mm512_maskz_permutex2var_epi8(0x8888888888888888ULL, lo, idx, hi),
            24);
        _mm512_store_ps(tab[2 * pair], _mm512_mul_ps(_mm512_cvtepi32_ps(s), d));
      }
    } else {
      // lo: d, dmin, scales[0..3]; hi: scales[4..11] (the 16-byte header).
      const auto mask = [](uint64_t m) {
        return _mm512_set1_epi64(static_cast<int64_t>(m));
      };
      // Bytes j of s and m: the scale and min of sub-block j (KScaleMin).
      const __m512i s = _mm512_or_si512(
          _mm512_and_si512(_mm512_srli_epi64(lo, 32), mask(0x3F3F3F3F)),
          OrAnd(_mm512_srli_epi64(
                    _mm512_and_si512(lo, mask(0xC0C0C0C000000000ULL)), 2),
                hi, mask(0x0F0F0F0F00000000ULL)));
      const __m512i m = _mm512_or_si512(
          _mm512_and_si512(hi, mask(0x3F3F3F3F)),
          OrAnd(_mm512_slli_epi64(_mm512_and_si512(hi, mask(0xC0C0C0C0)), 30),
                _mm512_srli_epi64(hi, 4), mask(0x0F0F0F0F00000000ULL)));
      // The f16 bits in the low 16 bits of each 64-bit lane, as f32 for rows
      // 0-7 in lanes 0-7 and again 8-15.
      const auto f16_lanes = [](__m512i bits) {
        const __m128i h = _mm512_cvtepi64_epi16(bits);
        return _mm512_cvtph_ps(_mm256_broadcastsi128_si256(h));
      };
      const __m512 d = f16_lanes(lo);
      const __m512 dmin = f16_lanes(_mm512_srli_epi64(lo, 16));
      constexpr __mmask64 kLow = 0x1111111111111111ULL;
      for (int pair = 0; pair < 4; ++pair) {
        const __m512i idx = _mm512_add_epi32(
            row_bytes8, _mm512_inserti64x4(_mm512_set1_epi32(2 * pair),
                                           _mm256_set1_epi32(2 * pair + 1), 1));
        _mm512_store_ps(
            tab[2 * pair],
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_maskz_permutexvar_epi8(kLow, idx, s)),
                d));
        _mm512_store_ps(
            tab[8 + 2 * pair],
            _mm512_mul_ps(
                _mm512_cvtepi32_ps(_mm512_maskz_permutexvar_epi8(kLow, idx, m)),
                dmin));
      }
    }
  }
  // Where Scales8 reads 16 bytes of each block: the header of Q4_K / Q5_K,
  // the scales of Q6_K.
  static constexpr size_t kScaleOffset = kQ6 ? offsetof(Block, scales) : 0;

  // The f32 scales of block j (< 8) of a super-block from Scales8's table:
  // ws (Q4_K, Q5_K) or the first half's (Q6_K) for PanelScale<0>, wm or the
  // second half's for PanelScale<1>.
  template <int kWhich>
  static const float* PanelScale(const float (&tab)[16][8], size_t j) {
    if constexpr (kQ6) {
      return tab[4 * (j / 2) + 2 * kWhich + j % 2];
    } else {
      return tab[8 * kWhich + j];
    }
  }

  // As QuantFormat::Pack, for blocks [b0, b0 + nb) (whole super-blocks).
  static void Pack(const uint8_t* w, size_t row_bytes, size_t rows, size_t b0,
                   size_t nb, QuantPanel& p) {
    for (size_t half = 0; half < kPanelRows; half += 16) {
      for (size_t b = 0; b < nb; b += 2) {
        const size_t e = (b0 + b) * kQuantBlock;  // first element
        __m512i z[16];
        for (size_t i = 0; i < 16; ++i) {
          z[i] = half + i < rows ? LoadUnit(w + (half + i) * row_bytes +
                                                e / kSuperBlock * kBytes,
                                            e % kSuperBlock / 64)
                                 : _mm512_setzero_si512();
        }
        Transpose16x16(z);
        for (size_t g = 0; g < kGroups; ++g) {
          _mm512_store_si512(&p.q[b][g][half], z[g]);
          _mm512_store_si512(&p.q[b + 1][g][half], z[kGroups + g]);
        }
      }
    }
    alignas(64) float tab[16][8];
    for (size_t sb = 0; sb < nb / kKBlocks; ++sb) {
      const size_t first = b0 / kKBlocks + sb;
      for (size_t r8 = 0; r8 < kPanelRows; r8 += 8) {
        // Rows past `rows` get zero scales (and are not read).
        const size_t live = r8 < rows ? std::min<size_t>(8, rows - r8) : 0;
        Scales8(live > 0 ? w + r8 * row_bytes + first * kBytes : w, row_bytes,
                live, tab);
        for (size_t j = 0; j < kKBlocks; ++j) {
          _mm256_store_ps(&p.d[sb * kKBlocks + j][r8],
                          _mm256_load_ps(PanelScale<0>(tab, j)));
          _mm256_store_ps(&p.m[sb * kKBlocks + j][r8],
                          _mm256_load_ps(PanelScale<1>(tab, j)));
        }
      }
    }
  }
};

// The dot products of Q6_K decode, reduced in registers: z[i] holds row i's
// quants of four 16-element groups, times x, with `init` added to each
// group's sum; returns {[group 0 | group 2], [group 1 | group 3]}, rows 0-7
// on the 8 lanes of each half.
HWY_INLINE std::pair<__m512i, __m512i> DotQuads(const __m512i* z, __m512i x,
                                                __m512i init) {
  __m512i a[4];  // rows 2i, 2i + 1
#pragma GCC unroll 4
  for (size_t i = 0; i < 4; ++i) {
    const __m512i p0 = _mm512_dpbusd_epi32(init, z[2 * i], x);
    const __m512i p1 = _mm512_dpbusd_epi32(init, z[2 * i + 1], x);
    a[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(p0, p1),
                            _mm512_unpackhi_epi32(p0, p1));
  }
  // c[j], 128-bit lane k: rows 4j..4j+3 summed over group k.
  __m512i c[2];
  for (size_t j = 0; j < 2; ++j) {
    c[j] = _mm512_add_epi32(_mm512_unpacklo_epi64(a[2 * j], a[2 * j + 1]),
                            _mm512_unpackhi_epi64(a[2 * j], a[2 * j + 1]));
  }
  return {_mm512_permutex2var_epi64(
              c[0], _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0), c[1]),
          _mm512_permutex2var_epi64(
              c[0], _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2), c[1])};
}

// The panel's products for K-quant weights: as QuantPanelTile, with the
// block scales of KFormat::Pack and the operations described above.
template <DType kType, size_t kT>
HWY_INLINE void KPanelTile(const QuantPanel& p, size_t nb,
                           const KActivations& xa, size_t cols, size_t b0,
                           size_t t0, size_t rows, bool first, float* y,
                           size_t ldy) {
  const size_t blocks = cols / kQuantBlock;
  const size_t sums_per_row = cols / kKSumElems;
  const __mmask16 live[2] = {LiveLanes(rows),
                             LiveLanes(rows - std::min<size_t>(rows, 16))};
  // acc[0]: the chunk's even blocks, acc[1]: its odd ones.
  __m512 acc[2][2][kT];
#pragma GCC unroll 8
  for (size_t t = 0; t < kT; ++t) {
    for (size_t v = 0; v < 2; ++v) {
      acc[0][v][t] =
          first ? _mm512_setzero_ps()
                : _mm512_maskz_loadu_ps(live[v], y + (t0 + t) * ldy + 16 * v);
      acc[1][v][t] = _mm512_setzero_ps();
    }
  }
  for (size_t b = 0; b < nb; ++b) {
    const size_t xb = b0 + b;
    const int8_t* xq[kT];
#pragma GCC unroll 8
    for (size_t t = 0; t < kT; ++t) {
      xq[t] = xa.q + (t0 + t) * cols + xb * kQuantBlock;
    }
    // dot[v][t] += the panel's groups [g0, g1) of block b times token t's.
    __m512i dot[2][kT];
    const auto dots = [&](size_t g0, size_t g1) {
      PanelGroupDots(p, b, g0, g1, xq, dot);
    };
    __m512 blk[2][kT];
    if constexpr (kType == DType::kQ6_K) {
      for (size_t half = 0; half < 2; ++half) {
#pragma GCC unroll 8
        for (size_t t = 0; t < kT; ++t) {
          const int32_t s16 = xa.sums[(t0 + t) * sums_per_row + 2 * xb + half];
          dot[0][t] = dot[1][t] = _mm512_set1_epi32(-32 * s16);
        }
        dots(half * kGroups / 2, (half + 1) * kGroups / 2);
#pragma GCC unroll 8
        for (size_t t = 0; t < kT; ++t) {
          for (size_t v = 0; v < 2; ++v) {
            const __m512 f = _mm512_cvtepi32_ps(dot[v][t]);
            blk[v][t] =
                half == 0 ? _mm512_mul_ps(f, _mm512_load_ps(&p.d[b][16 * v]))
                          : _mm512_fmadd_ps(f, _mm512_load_ps(&p.m[b][16 * v]),
                                            blk[v][t]);
          }
        }
      }
    } else {
#pragma GCC unroll 8
      for (size_t t = 0; t < kT; ++t) {
        dot[0][t] = dot[1][t] = _mm512_setzero_si512();
      }
      dots(0, kGroups);
#pragma GCC unroll 8
      for (size_t t = 0; t < kT; ++t) {
        const __m512 bsum = _mm512_set1_ps(xa.bsum[(t0 + t) * blocks + xb]);
        for (size_t v = 0; v < 2; ++v) {
          blk[v][t] =
              _mm512_fnmadd_ps(_mm512_load_ps(&p.m[b][16 * v]), bsum,
                               _mm512_mul_ps(_mm512_cvtepi32_ps(dot[v][t]),
                                             _mm512_load_ps(&p.d[b][16 * v])));
        }
      }
    }
    auto& sum = acc[b % 2];
#pragma GCC unroll 8
    for (size_t t = 0; t < kT; ++t) {
      const __m512 dx = _mm512_set1_ps(xa.d[(t0 + t) * blocks + xb]);
      for (size_t v = 0; v < 2; ++v) {
        sum[v][t] = _mm512_fmadd_ps(blk[v][t], dx, sum[v][t]);
      }
    }
  }
#pragma GCC unroll 8
  for (size_t t = 0; t < kT; ++t) {
    for (size_t v = 0; v < 2; ++v) {
      _mm512_mask_storeu_ps(y + (t0 + t) * ldy + 16 * v, live[v],
                            _mm512_add_ps(acc[0][v][t], acc[1][v][t]));
    }
  }
}

// The dot products of Q4_K / Q5_K decode, reduced in registers: z[i] (row
// i) holds blocks [A | C] for activations x_lo, z[8 + i] blocks [B | D] for
// x_hi; returns {[A | B], [C | D]}, rows 0-7 on the 8 lanes of each half.
// vpdpbusd's partial sums (4 products each) fit int16, so pairs of rows are
// packed into one vector and added pairwise by vpmaddwd: fewer operations
// than SumBlockHalves. Each pair is reduced as soon as it is multiplied,
// which keeps the live vectors within the register file.
HWY_INLINE std::pair<__m512i, __m512i> DotBlockPairs(const __m512i (&z)[16],
                                                     __m512i x_lo,
                                                     __m512i x_hi) {
  const __m512i ones = _mm512_set1_epi16(1);
  // r[i], 128-bit lane k: rows 2i, 2i + 1 (mod 8), two partial sums each.
  __m512i r[8];
#pragma GCC unroll 8
  for (size_t i = 0; i < 8; ++i) {
    const __m512i x = i < 4 ? x_lo : x_hi;
    const __m512i zero = _mm512_setzero_si512();
    r[i] = _mm512_madd_epi16(
        _mm512_packs_epi32(_mm512_dpbusd_epi32(zero, z[2 * i], x),
                           _mm512_dpbusd_epi32(zero, z[2 * i + 1], x)),
        ones);
  }
  // c[i], 128-bit lane k: rows 4i..4i+3 (mod 8) summed over lanes 4k..4k+3.
  __m512i c[4];
  for (size_t i = 0; i < 4; ++i) {
    const __m512 a = _mm512_castsi512_ps(r[2 * i]);
    const __m512 b = _mm512_castsi512_ps(r[2 * i + 1]);
    c[i] = _mm512_add_epi32(
        _mm512_castps_si512(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
        _mm512_castps_si512(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))));
  }
  // lo: [A rows 0-3, C rows 0-3, A rows 4-7, C rows 4-7], hi: B and D.
  constexpr int kEven = _MM_SHUFFLE(2, 0, 2, 0);
  constexpr int kOdd = _MM_SHUFFLE(3, 1, 3, 1);
  const __m512i lo = _mm512_add_epi32(_mm512_shuffle_i32x4(c[0], c[1], kEven),
                                      _mm512_shuffle_i32x4(c[0], c[1], kOdd));
  const __m512i hi = _mm512_add_epi32(_mm512_shuffle_i32x4(c[2], c[3], kEven),
                                      _mm512_shuffle_i32x4(c[2], c[3], kOdd));
  return {_mm512_permutex2var_epi64(
              lo, _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0), hi),
          _mm512_permutex2var_epi64(
              lo, _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2), hi)};
}

// [v[0] in lanes 0-7 | v[1] in lanes 8-15]: two broadcasts from memory,
// which take no shuffle unit.
HWY_INLINE __m512 PairLanes(const float* v) {
  return _mm512_mask_broadcastss_ps(_mm512_set1_ps(v[0]), 0xFF00,
                                    _mm_load_ss(v + 1));
}

// Decode for K-quant weights: rows [0, rows) (rows <= 8) from w read as
// stored, half a super-block of each at a time, with the same results as
// the panels. The even and odd block sums of a chunk run on the two halves
// of one vector.
template <DType kType, size_t kT, bool kFull>
void KRowsTile(const uint8_t* w, size_t row_bytes, size_t tile_rows,
               const KActivations& xa, size_t cols, float* y, size_t ldy) {
  using F = KFormat<kType>;
  const size_t rows = kFull ? kRowsTileRows : tile_rows;
  constexpr size_t kLines = (F::kBytes + 63) / 64;
  constexpr size_t kChunkSuperBlocks = kPanelBlocks / kKBlocks;
  const size_t blocks = cols / kQuantBlock;
  const size_t sums_per_row = cols / kKSumElems;
  const size_t super_blocks = cols / kSuperBlock;
  const __mmask8 live = static_cast<__mmask8>((1u << rows) - 1);
  __m256 sum[kT];  // y so far
  for (size_t t = 0; t < kT; ++t) sum[t] = _mm256_setzero_ps();
  alignas(64) float tab[16][8];
  for (size_t c0 = 0; c0 < super_blocks; c0 += kChunkSuperBlocks) {
    __m512 acc[kT];  // [even | odd] blocks of the chunk
    for (size_t t = 0; t < kT; ++t) acc[t] = _mm512_zextps256_ps512(sum[t]);
    const size_t c1 = std::min(super_blocks, c0 + kChunkSuperBlocks);
    for (size_t sb = c0; sb < c1; ++sb) {
      const uint8_t* base = w + sb * F::kBytes;
      for (size_t i = 0; i < rows; ++i) {
        // The same super-block of the next 8 rows, which the next call reads.
        for (size_t line = 0; line < kLines; ++line) {
          PrefetchNextTile(base + i * row_bytes + 64 * line, 8 * row_bytes);
        }
      }
      F::Scales8(base, row_bytes, rows, tab);
      for (size_t h = 0; h < 2; ++h) {
        __m512i z[16];  // z[i], z[8 + i]: row i's lo and hi (LoadHalf)
#pragma GCC unroll 8
        for (size_t i = 0; i < 8; ++i) {
          if (i < rows) {
            std::tie(z[i], z[8 + i]) = F::LoadHalf(base + i * row_bytes, h);
          } else {
            z[i] = z[8 + i] = _mm512_setzero_si512();
          }
        }
        const size_t blk0 = sb * kKBlocks + 4 * h;  // the half's first block
#pragma GCC unroll 4
        for (size_t t = 0; t < kT; ++t) {
          const int8_t* xq = xa.q + t * cols + blk0 * kQuantBlock;
          const float* dx = xa.d + t * blocks + blk0;
          // blk[k]: blocks blk0 + 2k | blk0 + 2k + 1.
          __m512 blk[2];
          if constexpr (F::kQ6) {
            const __m512i x_lo = _mm512_loadu_si512(xq);
            const __m512i x_hi = _mm512_loadu_si512(xq + 64);
            // -32 * (sum of 16 activations) in the first lane of each
            // group, so that each group's sum includes it.
            const __m256i off = _mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_slli_epi32(
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                        xa.sums + t * sums_per_row + 2 * blk0)),
                    5));
            const __m512i init_lo =
                _mm512_maskz_expand_epi32(0x1111, _mm512_zextsi256_si512(off));
            const __m512i init_hi = _mm512_maskz_expand_epi32(
                0x1111,
                _mm512_zextsi128_si512(_mm256_extracti128_si256(off, 1)));
            for (size_t k = 0; k < 2; ++k) {
              // first: the first halves of blocks blk0 + 2k, + 1; second:
              // their second halves.
              const auto [first, second] = DotQuads(
                  z + 8 * k, k == 0 ? x_lo : x_hi, k == 0 ? init_lo : init_hi);
              const size_t u = 2 * h + k;  // 64-element unit
              blk[k] = _mm512_fmadd_ps(
                  _mm512_cvtepi32_ps(second), _mm512_load_ps(tab[4 * u + 2]),
                  _mm512_mul_ps(_mm512_cvtepi32_ps(first),
                                _mm512_load_ps(tab[4 * u])));
            }
          } else {
            // Blocks b0 and b1 of the half (the upper one by a masked
            // broadcast from memory, which takes no shuffle unit).
            const auto load2 = [&](size_t b0, size_t b1) {
              return _mm512_mask_broadcast_i64x4(
                  _mm512_zextsi256_si512(_mm256_loadu_si256(
                      reinterpret_cast<const __m256i*>(xq + 32 * b0))),
                  0xF0,
                  _mm256_loadu_si256(
                      reinterpret_cast<const __m256i*>(xq + 32 * b1)));
            };
            const auto [s0, s1] = DotBlockPairs(z, load2(0, 2), load2(1, 3));
            const __m512i sums[2] = {s0, s1};
            for (size_t k = 0; k < 2; ++k) {
              const size_t j = 4 * h + 2 * k;  // sub-block in the super-block
              blk[k] = _mm512_fnmadd_ps(
                  _mm512_load_ps(tab[kKBlocks + j]),
                  PairLanes(xa.bsum + t * blocks + blk0 + 2 * k),
                  _mm512_mul_ps(_mm512_cvtepi32_ps(sums[k]),
                                _mm512_load_ps(tab[j])));
            }
          }
          for (size_t k = 0; k < 2; ++k) {
            acc[t] = _mm512_fmadd_ps(blk[k], PairLanes(dx + 2 * k), acc[t]);
          }
        }
      }
    }
    for (size_t t = 0; t < kT; ++t) {
      sum[t] = _mm256_add_ps(_mm512_castps512_ps256(acc[t]),
                             _mm512_extractf32x8_ps(acc[t], 1));
    }
  }
  for (size_t t = 0; t < kT; ++t) {
    _mm256_mask_storeu_ps(y + t * ldy, live, sum[t]);
  }
}

template <DType kType>
void RunKPanels(const uint8_t* w, size_t row_bytes, size_t cols,
                const void* prepared, size_t n, size_t row_begin,
                size_t row_end, float* y, size_t ldy) {
  const KActivations xa(prepared, cols, n);
  const size_t blocks = cols / kQuantBlock;
  if (n <= kRowsTileTokens) {
    for (size_t r0 = row_begin; r0 < row_end; r0 += kRowsTileRows) {
      const size_t rows = std::min(kRowsTileRows, row_end - r0);
      WithTokenCount<kRowsTileTokens>(n, [&](auto tokens) {
        constexpr size_t kT = decltype(tokens)::value;
        if (rows == kRowsTileRows) {
          KRowsTile<kType, kT, true>(w + r0 * row_bytes, row_bytes, rows, xa,
                                     cols, y + r0, ldy);
        } else {
          KRowsTile<kType, kT, false>(w + r0 * row_bytes, row_bytes, rows, xa,
                                      cols, y + r0, ldy);
        }
      });
    }
    return;
  }
  ForEachPanel(
      row_begin, row_end, blocks, n,
      [&](size_t r0, size_t rows, size_t b0, size_t nb, QuantPanel& panel) {
        KFormat<kType>::Pack(w + r0 * row_bytes, row_bytes, rows, b0, nb,
                             panel);
      },
      [&](auto tokens, const QuantPanel& panel, size_t nb, size_t b0, size_t t0,
          size_t rows, size_t r0) {
        KPanelTile<kType, decltype(tokens)::value>(panel, nb, xa, cols, b0, t0,
                                                   rows, b0 == 0, y + r0, ldy);
      });
}

// ---------------------------------- AVX-512 VNNI: interleaved K-quant rows
//
// K-quant rows interleaved 16 at a time (Q4KTile, Q5KTile, Q6KTile) hold the
// rows on the vector lanes as they are stored, so a token's products need no
// reduction across lanes (KRowsTile spends most of its operations there) and
// one thread reads one sequential stream. The low nibbles of a tile's vector
// are a block's quants as they are; its high nibbles, masked in place (16 q),
// give 16 times the next block's integer dot product, shifted back exactly.
// Every (row, token) then goes through the operations of KPanelTile, hence the
// same bits as the rows as stored.

// The f32 scales (ws, for kWhich 0) or mins (wm, 1) of sub-block j of a
// tile's 16 rows.
template <int kWhich, class Tile>
HWY_INLINE __m512 TileScales(const Tile& tile, size_t j) {
  const __m512 d = _mm512_cvtph_ps(_mm256_load_si256(
      reinterpret_cast<const __m256i*>(kWhich == 0 ? tile.d : tile.dmin)));
  const uint8_t* bytes = kWhich == 0 ? tile.scale[j] : tile.min[j];
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_load_si128(
                           reinterpret_cast<const __m128i*>(bytes)))),
                       d);
}

// Decode reads the tiles of a thread's rows as one stream and asks for the
// bytes this far on as it reads each line (the rows' groups lie one after
// another, so this runs on into the next group's tiles). Without it, 1b
// Q4_K_M decode read 0.60 of the bandwidth probe; 2 tiles on: 0.86-0.98 (3
// rounds, `kvstash bench --threads 2 --huge-pages`), 4: 0.86-0.89, 8:
// 0.77-0.80.
constexpr size_t kTilesAhead = 2;

// Prefetches the scales of the tile kTilesAhead on from `tile`; returns that
// tile's address, for LoadTileLine.
template <class Tile>
HWY_INLINE const uint8_t* PrefetchTileScales(const Tile& tile) {
  const uint8_t* ahead =
      reinterpret_cast<const uint8_t*>(&tile) + kTilesAhead * sizeof(Tile);
  for (size_t line = TileQuantBytes<Tile>(); line < sizeof(Tile); line += 64) {
    hwy::Prefetch(ahead + line);
  }
  return ahead;
}

// Loads the 64 bytes at `line` of `tile`, prefetching the same line of the
// tile at `ahead`.
template <class Tile>
HWY_INLINE __m512i LoadTileLine(const Tile& tile, const void* line,
                                const uint8_t* ahead) {
  hwy::Prefetch(ahead + (static_cast<const uint8_t*>(line) -
                         reinterpret_cast<const uint8_t*>(&tile)));
  return _mm512_load_si512(line);
}

// The quants of group g of sub-blocks 2p (lo) and 2p + 1 (hi) of a Q4_K /
// Q5_K tile, from its qs line v: Q4_K's hi is 16 times the quants, left in
// place (its dot product is shifted back, exactly); Q5_K's is the quants.
template <class Tile>
HWY_INLINE std::pair<__m512i, __m512i> AffineTileQuants(const Tile& tile,
                                                        __m512i v, size_t p,
                                                        size_t g,
                                                        const uint8_t* ahead) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  if constexpr (std::is_same_v<Tile, Q4KTile>) {
    return {_mm512_and_si512(v, low4), _mm512_andnot_si512(low4, v)};
  } else {
    const __m512i hb = LoadTileLine(tile, tile.qh[g], ahead);
    // Bit j of each byte of hb to bit 4.
    const auto bit4 = [&](size_t j) {
      return j < 4 ? _mm512_slli_epi16(hb, static_cast<int>(4 - j))
                   : _mm512_srli_epi16(hb, static_cast<int>(j - 4));
    };
    using F = KFormat<DType::kQ5_K>;
    return {F::OrAnd(_mm512_and_si512(v, low4), bit4(2 * p), F::Bytes(0x10)),
            F::OrAnd(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4),
                     bit4(2 * p + 1), F::Bytes(0x10))};
  }
}

// y[t * ldy + r] for the 16 rows of `tiles` (their super_blocks tiles in a
// row) and kT tokens: Q4_K and Q5_K (Q5_K: as Q4_K, with each nibble's 5th
// bit from the tile's qh line).
template <size_t kT, class Tile>
void TileRows(const Tile* tiles, size_t super_blocks, const KActivations& xa,
              size_t cols, float* y, size_t ldy) {
  constexpr bool kQ4 = std::is_same_v<Tile, Q4KTile>;
  constexpr size_t kChunkSuperBlocks = kPanelBlocks / kKBlocks;
  const size_t blocks = cols / kQuantBlock;
  __m512 sum[kT];  // y so far
  for (size_t t = 0; t < kT; ++t) sum[t] = _mm512_setzero_ps();
  for (size_t c0 = 0; c0 < super_blocks; c0 += kChunkSuperBlocks) {
    // The chunk's even and odd blocks, as KPanelTile sums them.
    __m512 even[kT], odd[kT];
    for (size_t t = 0; t < kT; ++t) {
      even[t] = sum[t];
      odd[t] = _mm512_setzero_ps();
    }
    const size_t c1 = std::min(super_blocks, c0 + kChunkSuperBlocks);
    for (size_t sb = c0; sb < c1; ++sb) {
      const Tile& tile = tiles[sb];
      const uint8_t* ahead = PrefetchTileScales(tile);
      for (size_t p = 0; p < 4; ++p) {
        const size_t b = sb * kKBlocks + 2 * p;  // the pair's even block
        __m512i dot_lo[kT], dot_hi[kT];
        for (size_t t = 0; t < kT; ++t) {
          dot_lo[t] = dot_hi[t] = _mm512_setzero_si512();
        }
#pragma GCC unroll 8
        for (size_t g = 0; g < 8; ++g) {
          const auto [lo, hi] = AffineTileQuants(
              tile, LoadTileLine(tile, tile.qs[p][g], ahead), p, g, ahead);
#pragma GCC unroll 4
          for (size_t t = 0; t < kT; ++t) {
            const int8_t* xq = xa.q + t * cols + b * kQuantBlock + 4 * g;
            int32_t x_lo, x_hi;
            std::memcpy(&x_lo, xq, sizeof(x_lo));
            std::memcpy(&x_hi, xq + kQuantBlock, sizeof(x_hi));
            dot_lo[t] =
                _mm512_dpbusd_epi32(dot_lo[t], lo, _mm512_set1_epi32(x_lo));
            dot_hi[t] =
                _mm512_dpbusd_epi32(dot_hi[t], hi, _mm512_set1_epi32(x_hi));
          }
        }
        const __m512 ws[2] = {TileScales<0>(tile, 2 * p),
                              TileScales<0>(tile, 2 * p + 1)};
        const __m512 wm[2] = {TileScales<1>(tile, 2 * p),
                              TileScales<1>(tile, 2 * p + 1)};
#pragma GCC unroll 4
        for (size_t t = 0; t < kT; ++t) {
          const __m512i dots[2] = {
              dot_lo[t], kQ4 ? _mm512_srai_epi32(dot_hi[t], 4) : dot_hi[t]};
          __m512* acc[2] = {&even[t], &odd[t]};
          for (size_t k = 0; k < 2; ++k) {
            const size_t xb = t * blocks + b + k;
            const __m512 blk = _mm512_fnmadd_ps(
                wm[k], _mm512_set1_ps(xa.bsum[xb]),
                _mm512_mul_ps(_mm512_cvtepi32_ps(dots[k]), ws[k]));
            *acc[k] = _mm512_fmadd_ps(blk, _mm512_set1_ps(xa.d[xb]), *acc[k]);
          }
        }
      }
    }
    for (size_t t = 0; t < kT; ++t) sum[t] = _mm512_add_ps(even[t], odd[t]);
  }
  for (size_t t = 0; t < kT; ++t) _mm512_storeu_ps(y + t * ldy, sum[t]);
}

// The f32 scales of sub-block `sub_block` (16 elements) of a Q6_K tile's rows.
HWY_INLINE __m512 Q6TileScale(const Q6KTile& tile, size_t sub_block) {
  return _mm512_mul_ps(
      _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128(
          reinterpret_cast<const __m128i*>(tile.scale[sub_block])))),
      _mm512_load_ps(tile.d));
}

// The unsigned 6-bit quants (0..63) of group g of block 4 h + c of a Q6_K
// tile's rows, from its ql line `l` and qh line `hb`.
HWY_INLINE __m512i Q6TileQuants(__m512i l, __m512i hb, size_t c) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512i nibbles =
      _mm512_and_si512(c < 2 ? l : _mm512_srli_epi16(l, 4), low4);
  // Bits 2c, 2c + 1 of hb to bits 4, 5.
  const __m512i high = c == 0   ? _mm512_slli_epi16(hb, 4)
                       : c == 1 ? _mm512_slli_epi16(hb, 2)
                       : c == 2 ? hb
                                : _mm512_srli_epi16(hb, 2);
  using F = KFormat<DType::kQ6_K>;
  return F::OrAnd(nibbles, high, F::Bytes(0x30));
}

// The products of Q6_K tiles, as TileRows for Q4_K: each block's two halves
// of 16 start from -32 times their activations' sum and are scaled as
// KPanelTile scales them.
template <size_t kT>
void TileRows(const Q6KTile* tiles, size_t super_blocks, const KActivations& xa,
              size_t cols, float* y, size_t ldy) {
  constexpr size_t kChunkSuperBlocks = kPanelBlocks / kKBlocks;
  const size_t blocks = cols / kQuantBlock;
  const size_t sums_per_row = cols / kKSumElems;
  __m512 sum[kT];  // y so far
  for (size_t t = 0; t < kT; ++t) sum[t] = _mm512_setzero_ps();
  for (size_t c0 = 0; c0 < super_blocks; c0 += kChunkSuperBlocks) {
    // acc[0]: the chunk's even blocks, acc[1]: its odd ones.
    __m512 acc[2][kT];
    for (size_t t = 0; t < kT; ++t) {
      acc[0][t] = sum[t];
      acc[1][t] = _mm512_setzero_ps();
    }
    const size_t c1 = std::min(super_blocks, c0 + kChunkSuperBlocks);
    for (size_t sb = c0; sb < c1; ++sb) {
      const Q6KTile& tile = tiles[sb];
      const uint8_t* ahead = PrefetchTileScales(tile);
      for (size_t h = 0; h < 2; ++h) {
        for (size_t o = 0; o < 2; ++o) {
          // Blocks j = 4 h + o + 2 k of the super-block (k < 2), both of
          // parity o; dot[k][half][t].
          __m512i dot[2][2][kT];
          for (size_t k = 0; k < 2; ++k) {
            const size_t b = sb * kKBlocks + 4 * h + o + 2 * k;
            for (size_t half = 0; half < 2; ++half) {
              for (size_t t = 0; t < kT; ++t) {
                dot[k][half][t] = _mm512_set1_epi32(
                    -32 * xa.sums[t * sums_per_row + 2 * b + half]);
              }
            }
          }
#pragma GCC unroll 8
          for (size_t g = 0; g < 8; ++g) {
            const __m512i l = LoadTileLine(tile, tile.ql[h][o][g], ahead);
            const __m512i hb = LoadTileLine(tile, tile.qh[h][g], ahead);
            const __m512i q[2] = {Q6TileQuants(l, hb, o),
                                  Q6TileQuants(l, hb, o + 2)};
            const size_t half = g / 4;
            for (size_t k = 0; k < 2; ++k) {
              const size_t b = sb * kKBlocks + 4 * h + o + 2 * k;
#pragma GCC unroll 4
              for (size_t t = 0; t < kT; ++t) {
                int32_t x4;
                std::memcpy(&x4, xa.q + t * cols + b * kQuantBlock + 4 * g,
                            sizeof(x4));
                dot[k][half][t] = _mm512_dpbusd_epi32(dot[k][half][t], q[k],
                                                      _mm512_set1_epi32(x4));
              }
            }
          }
          for (size_t k = 0; k < 2; ++k) {
            const size_t j = 4 * h + o + 2 * k;
            const size_t b = sb * kKBlocks + j;
            const __m512 first = Q6TileScale(tile, 2 * j);
            const __m512 second = Q6TileScale(tile, 2 * j + 1);
#pragma GCC unroll 4
            for (size_t t = 0; t < kT; ++t) {
              const __m512 blk = _mm512_fmadd_ps(
                  _mm512_cvtepi32_ps(dot[k][1][t]), second,
                  _mm512_mul_ps(_mm512_cvtepi32_ps(dot[k][0][t]), first));
              acc[o][t] = _mm512_fmadd_ps(
                  blk, _mm512_set1_ps(xa.d[t * blocks + b]), acc[o][t]);
            }
          }
        }
      }
    }
    for (size_t t = 0; t < kT; ++t) {
      sum[t] = _mm512_add_ps(acc[0][t], acc[1][t]);
    }
  }
  for (size_t t = 0; t < kT; ++t) _mm512_storeu_ps(y + t * ldy, sum[t]);
}

// Panel rows [r, r + 16) of the 8 blocks from b: one tile, as
// KFormat<kType>::Pack writes them.
template <class Tile>
HWY_INLINE void UnpackTile(const Tile& tile, size_t b, size_t r,
                           QuantPanel& p) {
  for (size_t pair = 0; pair < 4; ++pair) {
    for (size_t g = 0; g < kGroups; ++g) {
      const auto [lo, hi] =
          AffineTileQuants(tile, _mm512_load_si512(tile.qs[pair][g]), pair, g,
                           reinterpret_cast<const uint8_t*>(&tile));
      _mm512_store_si512(&p.q[b + 2 * pair][g][r], lo);
      // Q4_K's hi is 16 times its quants.
      _mm512_store_si512(
          &p.q[b + 2 * pair + 1][g][r],
          std::is_same_v<Tile, Q4KTile> ? _mm512_srli_epi16(hi, 4) : hi);
    }
  }
  for (size_t j = 0; j < kKBlocks; ++j) {
    _mm512_store_ps(&p.d[b + j][r], TileScales<0>(tile, j));
    _mm512_store_ps(&p.m[b + j][r], TileScales<1>(tile, j));
  }
}

HWY_INLINE void UnpackTile(const Q6KTile& tile, size_t b, size_t r,
                           QuantPanel& p) {
  for (size_t h = 0; h < 2; ++h) {
    for (size_t c = 0; c < 4; ++c) {
      const size_t j = 4 * h + c;
      for (size_t g = 0; g < kGroups; ++g) {
        _mm512_store_si512(&p.q[b + j][g][r],
                           Q6TileQuants(_mm512_load_si512(tile.ql[h][c % 2][g]),
                                        _mm512_load_si512(tile.qh[h][g]), c));
      }
      _mm512_store_ps(&p.d[b + j][r], Q6TileScale(tile, 2 * j));
      _mm512_store_ps(&p.m[b + j][r], Q6TileScale(tile, 2 * j + 1));
    }
  }
}

// As KFormat::Pack, from interleaved rows: blocks [b0, b0 + nb) (whole
// super-blocks) of the one or two groups of 16 rows from `group` (`groups`
// of them, each `group_bytes` long) into the panel.
template <class Tile>
void PackTiles(const uint8_t* group, size_t group_bytes, size_t groups,
               size_t b0, size_t nb, QuantPanel& p) {
  for (size_t half = 0; half < kPanelRows / kInterleavedRows; ++half) {
    const size_t r = half * kInterleavedRows;
    for (size_t sb = 0; sb < nb / kKBlocks; ++sb) {
      const size_t b = sb * kKBlocks;  // the super-block's first panel block
      if (half < groups) {
        UnpackTile(reinterpret_cast<const Tile*>(
                       group + half * group_bytes)[b0 / kKBlocks + sb],
                   b, r, p);
        continue;
      }
      for (size_t j = 0; j < kKBlocks; ++j) {
        for (size_t g = 0; g < kGroups; ++g) {
          _mm512_store_si512(&p.q[b + j][g][r], _mm512_setzero_si512());
        }
        _mm512_store_ps(&p.d[b + j][r], _mm512_setzero_ps());
        _mm512_store_ps(&p.m[b + j][r], _mm512_setzero_ps());
      }
    }
  }
}

// MatMulRows for interleaved K-quant rows: rows [row_begin, row_end), both
// multiples of kInterleavedRows.
template <DType kType>
void RunKTiles(const uint8_t* w, size_t cols, const void* prepared, size_t n,
               size_t row_begin, size_t row_end, float* y, size_t ldy) {
  using Tile = std::conditional_t<
      kType == DType::kQ4_K, Q4KTile,
      std::conditional_t<kType == DType::kQ5_K, Q5KTile, Q6KTile>>;
  const KActivations xa(prepared, cols, n);
  const size_t blocks = cols / kQuantBlock;
  const size_t super_blocks = cols / kSuperBlock;
  const size_t group_bytes = super_blocks * sizeof(Tile);
  const auto group = [&](size_t r) {
    return w + r / kInterleavedRows * group_bytes;
  };
  if (n <= kRowsTileTokens) {
    for (size_t r0 = row_begin; r0 < row_end; r0 += kInterleavedRows) {
      WithTokenCount<kRowsTileTokens>(n, [&](auto tokens) {
        TileRows<decltype(tokens)::value>(
            reinterpret_cast<const Tile*>(group(r0)), super_blocks, xa, cols,
            y + r0, ldy);
      });
    }
    return;
  }
  ForEachPanel(
      row_begin, row_end, blocks, n,
      [&](size_t r0, size_t rows, size_t b0, size_t nb, QuantPanel& panel) {
        PackTiles<Tile>(group(r0), group_bytes, rows / kInterleavedRows, b0, nb,
                        panel);
      },
      [&](auto tokens, const QuantPanel& panel, size_t nb, size_t b0, size_t t0,
          size_t rows, size_t r0) {
        KPanelTile<kType, decltype(tokens)::value>(panel, nb, xa, cols, b0, t0,
                                                   rows, b0 == 0, y + r0, ldy);
      });
}

// AVX512_BF16: vdpbf16ps on bf16 weights and bf16-rounded activations, 32
// elements per step.
struct Bf16DotKernel {
  static constexpr size_t kRows = kFloatRows;
  static constexpr size_t kTokens = kFloatTokens;
  static constexpr size_t kStepElems = 32;
  static constexpr size_t kChunkElems = kChunkActivationBytes / 2;
  using W = __m512i;
  using X = __m512i;
  using Acc = __m512;

  Bf16DotKernel(const void* prepared, size_t cols)
      : x(static_cast<const uint16_t*>(prepared)),
        cols(cols),
        stride(Bf16RowStride(cols)),
        steps(cols / 32),
        has_tail(cols % 32 != 0) {}

  W LoadW(const uint8_t* row, size_t s) const {
    PrefetchNextTile(row + s * 64, prefetch_ahead);
    return _mm512_loadu_si512(row + s * 64);
  }
  W LoadWTail(const uint8_t* row) const {
    const __mmask32 live = (1u << (cols % 32)) - 1;
    return _mm512_maskz_loadu_epi16(live, row + steps * 64);
  }
  // Rows are padded with zeros (kBf16RowPad), so the tail loads whole.
  X LoadX(size_t t, size_t s) const {
    return _mm512_loadu_si512(x + t * stride + s * 32);
  }
  X LoadXTail(size_t t) const { return LoadX(t, steps); }
  Acc Zero() const { return _mm512_setzero_ps(); }
  Acc Mac(Acc acc, W w, X xv) const {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(w),
                            reinterpret_cast<__m512bh>(xv));
  }
  float Reduce(Acc acc) const { return _mm512_reduce_add_ps(acc); }

  const uint16_t* x;  // [n][stride] bf16
  size_t cols;
  size_t stride;
  size_t steps;
  bool has_tail;
  size_t prefetch_ahead = kRows * cols * 2;  // one row tile
};

#endif  // HWY_TARGET == HWY_AVX3_DL

// ------------------------------------------------------ activation prep

// out[i] = bf16(x[i]) rounded to nearest even (NaN stays NaN) for i < cols,
// then zeros up to Bf16RowStride(cols).
void RoundRowToBf16(const float* x, size_t cols, uint16_t* out) {
  const DF df;
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint16_t, DF> d16;
  const size_t lanes = hn::Lanes(df);
  size_t i = 0;
  for (; i + lanes <= cols; i += lanes) {
    const hn::Vec<DF> v = hn::LoadU(df, x + i);
    const hn::Vec<decltype(du)> bits = hn::BitCast(du, v);
    const hn::Vec<decltype(du)> high = hn::ShiftRight<16>(bits);
    const hn::Vec<decltype(du)> rounded = hn::ShiftRight<16>(hn::Add(
        bits, hn::Add(hn::Set(du, 0x7FFF), hn::And(high, hn::Set(du, 1)))));
    const hn::Vec<decltype(du)> quiet_nan = hn::Or(high, hn::Set(du, 0x40));
    const hn::Vec<decltype(du)> bf =
        hn::IfThenElse(hn::RebindMask(du, hn::IsNaN(v)), quiet_nan, rounded);
    hn::StoreU(hn::DemoteTo(d16, hn::BitCast(di, bf)), d16, out + i);
  }
  for (; i < cols; ++i) out[i] = F32ToBF16(x[i]);
  std::fill(out + cols, out + Bf16RowStride(cols), uint16_t{0});
}

// One row of Q8_0-like blocks: per 32 elements d = max|x| / 127 (f32) and
// q = round-half-even(x * (1 / d)), or 0 where d = 0; sums[i] is the sum of
// q over elements [i * sum_elems, (i + 1) * sum_elems) (sum_elems 16 or 32).
void QuantizeRowQ8(const float* x, size_t cols, size_t sum_elems, int8_t* q,
                   int32_t* sums, float* d) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const size_t lanes = hn::Lanes(df);
  static_assert(kKSumElems % HWY_LANES(float) == 0);
  for (size_t b = 0; b < cols / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    hn::Vec<DF> amax = hn::Zero(df);
    for (size_t j = 0; j < kQuantBlock; j += lanes) {
      amax = hn::Max(amax, hn::Abs(hn::LoadU(df, xb + j)));
    }
    const float scale = hn::GetLane(hn::MaxOfLanes(df, amax)) / 127.0f;
    const hn::Vec<DF> inv = hn::Set(df, scale != 0.0f ? 1.0f / scale : 0.0f);
    hn::Vec<decltype(di)> qsum = hn::Zero(di);
    for (size_t j = 0; j < kQuantBlock; j += lanes) {
      const hn::Vec<decltype(di)> qi =
          hn::NearestInt(hn::Mul(hn::LoadU(df, xb + j), inv));
      qsum = hn::Add(qsum, qi);
      hn::StoreU(hn::DemoteTo(d8, qi), d8, q + b * kQuantBlock + j);
      const size_t end = b * kQuantBlock + j + lanes;
      if (end % sum_elems == 0) {
        sums[end / sum_elems - 1] = hn::GetLane(hn::SumOfLanes(di, qsum));
        qsum = hn::Zero(di);
      }
    }
    d[b] = scale;
  }
}

}  // namespace

void PrepareActivationsImpl(DType wt, const float* x, size_t cols, size_t n,
                            void* prepared) {
  switch (wt) {
    case DType::kF32:
    case DType::kF16: {
      auto* out = static_cast<float*>(prepared);
      const size_t stride = FloatRowStride(cols);
      for (size_t t = 0; t < n; ++t) {
        std::memcpy(out + t * stride, x + t * cols, cols * sizeof(float));
        std::fill(out + t * stride + cols, out + (t + 1) * stride, 0.0f);
      }
      return;
    }
    case DType::kBF16:
      for (size_t t = 0; t < n; ++t) {
        RoundRowToBf16(
            x + t * cols, cols,
            static_cast<uint16_t*>(prepared) + t * Bf16RowStride(cols));
      }
      return;
    case DType::kQ8_0:
    case DType::kQ4_0: {
      auto* base = static_cast<uint8_t*>(prepared);
      auto* q = reinterpret_cast<int8_t*>(base);
      auto* sums = reinterpret_cast<int32_t*>(base + QuantSumsOffset(cols, n));
      auto* d = reinterpret_cast<float*>(base + QuantScalesOffset(cols, n));
      const size_t blocks = cols / kQuantBlock;
      for (size_t t = 0; t < n; ++t) {
        QuantizeRowQ8(x + t * cols, cols, kQuantBlock, q + t * cols,
                      sums + t * blocks, d + t * blocks);
      }
      return;
    }
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: {
      auto* base = static_cast<uint8_t*>(prepared);
      auto* q = reinterpret_cast<int8_t*>(base);
      auto* sums = reinterpret_cast<int32_t*>(base + QuantSumsOffset(cols, n));
      auto* d = reinterpret_cast<float*>(base + KScalesOffset(cols, n));
      auto* bsum = reinterpret_cast<float*>(base + KBlockSumsOffset(cols, n));
      const size_t blocks = cols / kQuantBlock;
      for (size_t t = 0; t < n; ++t) {
        QuantizeRowQ8(x + t * cols, cols, kKSumElems, q + t * cols,
                      sums + t * (cols / kKSumElems), d + t * blocks);
      }
      for (size_t b = 0; b < n * blocks; ++b) {
        bsum[b] = static_cast<float>(sums[2 * b] + sums[2 * b + 1]);
      }
      return;
    }
  }
}

void MatMulRowsImpl(DType wt, const void* w, size_t cols, const float* x,
                    const void* prepared, size_t n, size_t row_begin,
                    size_t row_end, float* y, size_t ldy) {
  const auto* w8 = static_cast<const uint8_t*>(w);
  const size_t row_bytes = RowBytes(wt, cols);
  auto run = [&](const auto& kernel) {
    RunKernel(kernel, w8, row_bytes, cols, n, row_begin, row_end, y, ldy);
  };
  // Float weights: decode by RunWidenDecode; a batch of more than one token
  // tile reads copies of its chunks of weights
  // (RunCopiedChunks).
  auto run_float = [&]<typename T>(const WidenKernel<T>& kernel) {
    if (n == 1) {
      return RunWidenDecode(kernel, w8, row_bytes, row_begin, row_end, y);
    }
    if (n > kFloatTokens) {
      return RunCopiedChunks(kernel, w8, row_bytes, n, row_begin, row_end, y,
                             ldy);
    }
    run(kernel);
  };
  // Quantized weights: the VNNI panels where the CPU has VNNI, else the
  // portable integer kernel.
  auto run_quant = [&](auto type) {
    constexpr DType kType = decltype(type)::value;
#if HWY_TARGET == HWY_AVX3_DL
    if (CpuHasAvx512Vnni()) {
      if constexpr (IsKQuant(kType)) {
        return RunKPanels<kType>(w8, row_bytes, cols, prepared, n, row_begin,
                                 row_end, y, ldy);
      } else {
        return RunQuantPanels<kType>(w8, row_bytes, cols, prepared, n,
                                     row_begin, row_end, y, ldy);
      }
    }
#endif
    if constexpr (IsKQuant(kType)) {
      return run(KIntKernel<kType>(prepared, cols, n));
    } else {
      return run(IntKernel<kType>(prepared, cols, n));
    }
  };
  switch (wt) {
    case DType::kF32:
      return run_float(WidenKernel<float>(static_cast<const float*>(prepared),
                                          cols, FloatRowStride(cols)));
    case DType::kF16:
      return run_float(WidenKernel<hwy::float16_t>(
          static_cast<const float*>(prepared), cols, FloatRowStride(cols)));
    case DType::kBF16:
#if HWY_TARGET == HWY_AVX3_DL
      if (CpuHasAvx512Bf16()) return run(Bf16DotKernel(prepared, cols));
#endif
      return run_float(WidenKernel<hwy::bfloat16_t>(x, cols, cols));
    case DType::kQ8_0:
      return run_quant(std::integral_constant<DType, DType::kQ8_0>());
    case DType::kQ4_0:
      return run_quant(std::integral_constant<DType, DType::kQ4_0>());
    case DType::kQ4_K:
      return run_quant(std::integral_constant<DType, DType::kQ4_K>());
    case DType::kQ5_K:
      return run_quant(std::integral_constant<DType, DType::kQ5_K>());
    case DType::kQ6_K:
      return run_quant(std::integral_constant<DType, DType::kQ6_K>());
  }
}

bool UsesInterleavedRowsImpl(DType wt) {
#if HWY_TARGET == HWY_AVX3_DL
  return IsKQuant(wt) && CpuHasAvx512Vnni();
#else
  (void)wt;
  return false;
#endif
}

void MatMulInterleavedRowsImpl(DType wt, const void* w, size_t cols,
                               const void* prepared, size_t n, size_t row_begin,
                               size_t row_end, float* y, size_t ldy) {
#if HWY_TARGET == HWY_AVX3_DL
  if (UsesInterleavedRowsImpl(wt)) {
    const auto* w8 = static_cast<const uint8_t*>(w);
    switch (wt) {
      case DType::kQ4_K:
        return RunKTiles<DType::kQ4_K>(w8, cols, prepared, n, row_begin,
                                       row_end, y, ldy);
      case DType::kQ5_K:
        return RunKTiles<DType::kQ5_K>(w8, cols, prepared, n, row_begin,
                                       row_end, y, ldy);
      default:
        return RunKTiles<DType::kQ6_K>(w8, cols, prepared, n, row_begin,
                                       row_end, y, ldy);
    }
  }
#endif
  (void)w, (void)cols, (void)prepared, (void)n, (void)row_begin, (void)row_end,
      (void)y, (void)ldy;
  KV_CHECK_MSG(false, "interleaved rows are not read on this CPU target");
}

}  // namespace kvstash::kernels::HWY_NAMESPACE
#if HWY_TARGET == HWY_AVX3_DL
#pragma GCC pop_options
#endif
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvstash::kernels {

HWY_EXPORT(PrepareActivationsImpl);
HWY_EXPORT(MatMulRowsImpl);
HWY_EXPORT(UsesInterleavedRowsImpl);
HWY_EXPORT(MatMulInterleavedRowsImpl);

size_t PreparedActivationBytes(DType wt, size_t cols, size_t n) {
  switch (wt) {
    case DType::kF32:
    case DType::kF16:
      return n * matmul_fast::FloatRowStride(cols) * sizeof(float);
    case DType::kBF16:
      return n * matmul_fast::Bf16RowStride(cols) * sizeof(uint16_t);
    case DType::kQ8_0:
    case DType::kQ4_0:
      return matmul_fast::QuantScalesOffset(cols, n) +
             n * (cols / kQuantBlock) * sizeof(float);  // after q and sums
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return matmul_fast::KBlockSumsOffset(cols, n) +
             n * (cols / kQuantBlock) * sizeof(float);
  }
  KV_CHECK_MSG(false, "unknown DType");
}

void PrepareActivations(DType wt, const float* x, size_t cols, size_t n,
                        void* prepared) {
  KV_CHECK(cols > 0 && cols % DTypeBlockElems(wt) == 0);
  KV_CHECK(reinterpret_cast<uintptr_t>(prepared) % 64 == 0);
  HWY_DYNAMIC_DISPATCH(PrepareActivationsImpl)(wt, x, cols, n, prepared);
}

void MatMulRows(DType wt, const void* w, size_t cols, const float* x,
                const void* prepared, size_t n, size_t row_begin,
                size_t row_end, float* y, size_t ldy) {
  KV_CHECK(cols > 0 && cols % DTypeBlockElems(wt) == 0);
  KV_CHECK(row_begin <= row_end && row_end <= ldy);
  if (n == 0 || row_begin == row_end) return;
  HWY_DYNAMIC_DISPATCH(MatMulRowsImpl)
  (wt, w, cols, x, prepared, n, row_begin, row_end, y, ldy);
}

bool UsesInterleavedRows(DType wt) {
  return HWY_DYNAMIC_DISPATCH(UsesInterleavedRowsImpl)(wt);
}

size_t InterleavedBytes(DType wt, size_t rows, size_t cols) {
  KV_CHECK(IsKQuant(wt) && rows % kInterleavedRows == 0 &&
           cols % kSuperBlock == 0);
  const size_t tile = wt == DType::kQ4_K   ? sizeof(matmul_fast::Q4KTile)
                      : wt == DType::kQ5_K ? sizeof(matmul_fast::Q5KTile)
                                           : sizeof(matmul_fast::Q6KTile);
  return rows / kInterleavedRows * (cols / kSuperBlock) * tile;
}

namespace {

// Q4_K, Q5_K.
template <class Block, class Tile>
void InterleaveAffineRow(const Block& b, size_t r, Tile& tile) {
  for (size_t g = 0; g < 8; ++g) {
    for (size_t p = 0; p < 4; ++p) {
      std::memcpy(tile.qs[p][g][r], b.qs + 32 * p + 4 * g, 4);
    }
    if constexpr (std::is_same_v<Block, BlockQ5_K>) {
      std::memcpy(tile.qh[g][r], b.qh + 4 * g, 4);
    }
  }
  tile.d[r] = b.d;
  tile.dmin[r] = b.dmin;
  for (size_t j = 0; j < 8; ++j) {
    int scale, min;
    matmul_fast::KScaleMin(b.scales, j, &scale, &min);
    tile.scale[j][r] = static_cast<uint8_t>(scale);
    tile.min[j][r] = static_cast<uint8_t>(min);
  }
}

void InterleaveQ6KRow(const BlockQ6_K& b, size_t r,
                      matmul_fast::Q6KTile& tile) {
  for (size_t h = 0; h < 2; ++h) {
    for (size_t g = 0; g < 8; ++g) {
      for (size_t o = 0; o < 2; ++o) {
        std::memcpy(tile.ql[h][o][g][r], b.ql + 64 * h + 32 * o + 4 * g, 4);
      }
      std::memcpy(tile.qh[h][g][r], b.qh + 32 * h + 4 * g, 4);
    }
  }
  tile.d[r] = F16ToF32(b.d);
  for (size_t s = 0; s < 16; ++s) tile.scale[s][r] = b.scales[s];
}

// Tile by tile: tile (r0, sb) holds super-block sb of rows r0..r0 + 15.
template <class Block, class Tile, class Row>
void InterleaveTiles(const void* w, size_t rows, size_t cols, void* out,
                     const Row& row) {
  const size_t super_blocks = cols / kSuperBlock;
  const auto* blocks = static_cast<const Block*>(w);
  auto* tile = static_cast<Tile*>(out);
  for (size_t r0 = 0; r0 < rows; r0 += kInterleavedRows) {
    for (size_t sb = 0; sb < super_blocks; ++sb, ++tile) {
      for (size_t r = 0; r < kInterleavedRows; ++r) {
        row(blocks[(r0 + r) * super_blocks + sb], r, *tile);
      }
    }
  }
}

}  // namespace

void InterleaveRows(DType wt, const void* w, size_t rows, size_t cols,
                    void* out) {
  KV_CHECK(IsKQuant(wt) && rows % kInterleavedRows == 0 &&
           cols % kSuperBlock == 0);
  if (wt == DType::kQ4_K) {
    InterleaveTiles<BlockQ4_K, matmul_fast::Q4KTile>(
        w, rows, cols, out,
        InterleaveAffineRow<BlockQ4_K, matmul_fast::Q4KTile>);
  } else if (wt == DType::kQ5_K) {
    InterleaveTiles<BlockQ5_K, matmul_fast::Q5KTile>(
        w, rows, cols, out,
        InterleaveAffineRow<BlockQ5_K, matmul_fast::Q5KTile>);
  } else {
    InterleaveTiles<BlockQ6_K, matmul_fast::Q6KTile>(w, rows, cols, out,
                                                     InterleaveQ6KRow);
  }
}

void MatMulInterleavedRows(DType wt, const void* w, size_t cols,
                           const void* prepared, size_t n, size_t row_begin,
                           size_t row_end, float* y, size_t ldy) {
  KV_CHECK(cols > 0 && cols % kSuperBlock == 0);
  KV_CHECK(row_begin <= row_end && row_end <= ldy);
  KV_CHECK(row_begin % kInterleavedRows == 0 &&
           row_end % kInterleavedRows == 0);
  KV_CHECK(reinterpret_cast<uintptr_t>(w) % 64 == 0);
  if (n == 0 || row_begin == row_end) return;
  HWY_DYNAMIC_DISPATCH(MatMulInterleavedRowsImpl)
  (wt, w, cols, prepared, n, row_begin, row_end, y, ldy);
}

}  // namespace kvstash::kernels
#endif  // HWY_ONCE
