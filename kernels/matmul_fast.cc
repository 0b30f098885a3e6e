// Highway compiles this file once per CPU target (foreach_target.h) and picks
// one at run time. Each weight type has a "kernel": a small struct that loads
// one step of a weight row (W) and of an activation row (X) in compute form,
// multiplies them into an accumulator (Mac) and reduces it to a float. One
// driver (Tile) runs any kernel over a tile of rows x tokens.
//
// On the AVX3_DL target (AVX-512 with VNNI, enabled by HWY_WANT_AVX3_DL) the
// quantized types use vpdpbusd and bf16 uses vdpbf16ps (when the CPU has
// AVX512_BF16), written with intrinsics; every other target uses the portable
// kernels. Highway 1.0.3 has neither instruction as an op.

#include "kernels/matmul_fast.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "base/check.h"
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
// that the rows of the tokens of a tile, and of the widened weights of a
// block (see RunWidened), do not all fall into the same L1 cache sets (as
// rows a multiple of 4 KiB apart would).
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
#pragma GCC unroll 8
  for (size_t r = 0; r < kR; ++r) {
#pragma GCC unroll 8
    for (size_t t = 0; t < kT; ++t) {
      const float sum = k.Reduce(acc[r][t]);
      float& out = y[t * ldy + r];
      out = c.first ? sum : out + sum;
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
    HWY_ALIGN T buf[kLanes] = {};
    const size_t done = steps * hn::Lanes(DF());
    std::memcpy(buf, reinterpret_cast<const T*>(row) + done,
                (cols - done) * sizeof(T));
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
  float Reduce(Acc acc) const { return hn::GetLane(hn::SumOfLanes(DF(), acc)); }

  const float* x;
  size_t x_stride;
  size_t cols;
  size_t steps;  // whole vectors per row
  bool has_tail;
  size_t prefetch_ahead = kRows * cols * sizeof(T);  // one row tile
};

// WidenKernel<float> over f32 copies of one chunk of another WidenKernel's
// weights: `row` points at a copied row whose first element is step `base`.
// The copies hold exactly what WidenKernel<T> would have loaded (zeros past a
// partial last step), so every product is the same.
struct WidenedChunkKernel : WidenKernel<float> {
  using WidenKernel<float>::WidenKernel;
  W LoadW(const uint8_t* row, size_t s) const {
    return hn::Load(DF(), reinterpret_cast<const float*>(row) +
                              (s - base) * hn::Lanes(DF()));
  }
  W LoadWTail(const uint8_t* row) const { return LoadW(row, steps); }
  size_t base = 0;
};

// A batch for weights widened from T: as RunKernel, but each block of rows x
// tokens widens its chunk of weights once, into a per-thread f32 buffer that
// all of the block's token tiles read, instead of once per token tile.
template <typename T>
void RunWidened(const WidenKernel<T>& k, const uint8_t* w, size_t row_bytes,
                size_t n, size_t row_begin, size_t row_end, float* y,
                size_t ldy) {
  using K = WidenKernel<T>;
  constexpr size_t kBlockRows =
      kRowBlockBytes / kChunkActivationBytes / K::kRows * K::kRows;
  // Rows one cache line longer than a chunk: see FloatRowStride.
  constexpr size_t kBufRowBytes = K::kChunkElems * sizeof(float) + 64;
  // Zero-initialized thread storage: no allocation; pages are touched on use.
  alignas(64) static thread_local float
      buffer[kBlockRows * kBufRowBytes / sizeof(float)];
  auto* buf = reinterpret_cast<uint8_t*>(buffer);
  WidenedChunkKernel view(k.x, k.cols, k.x_stride);
  const Chunks<K> chunks(k);
  const Chunks<WidenedChunkKernel> view_chunks(view);
  const size_t lanes = hn::Lanes(DF());
  ForEachBatchBlock<K>(
      row_begin, row_end, n, kBlockRows, chunks.count(),
      [&](size_t rb, size_t re, size_t tb, size_t te, size_t c) {
        const Chunk chunk = chunks[c];
        for (size_t r = rb; r < re; ++r) {
          const uint8_t* row = w + r * row_bytes;
          float* out = reinterpret_cast<float*>(buf + (r - rb) * kBufRowBytes);
          for (size_t s = chunk.step_begin; s < chunk.step_end; ++s) {
            hn::Store(k.LoadW(row, s), DF(),
                      out + (s - chunk.step_begin) * lanes);
          }
          if (chunk.tail) {
            hn::Store(k.LoadWTail(row), DF(),
                      out + (k.steps - chunk.step_begin) * lanes);
          }
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

template <DType kType>
struct IntKernel {
  static constexpr size_t kRows = kQuantRows;
  static constexpr size_t kTokens = kQuantTokens;
  static constexpr size_t kStepElems = kQuantBlock;
  static constexpr size_t kChunkElems = kChunkActivationBytes;
  using W = IntBlock;
  using X = IntBlock;
  using Acc = hn::Vec<DF>;

  IntKernel(const void* prepared, size_t cols, size_t n)
      : xa(prepared, cols, n), cols(cols), steps(cols / kQuantBlock) {}

  W LoadW(const uint8_t* row, size_t s) const {
    PrefetchNextTile(row + s * RowBytes(kType, kQuantBlock), prefetch_ahead);
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
  X LoadX(size_t t, size_t s) const {
    return LoadIntBlock(xa.q + t * cols + s * kQuantBlock, xa.d[t * steps + s]);
  }
  // Never called: rows of whole blocks have no tail (has_tail is false).
  W LoadWTail(const uint8_t* row) const { return LoadW(row, 0); }
  X LoadXTail(size_t t) const { return LoadX(t, 0); }
  Acc Zero() const { return hn::Zero(DF()); }
  Acc Mac(Acc acc, const W& w, const X& xb) const {
    hn::Vec<D32> sum0 = hn::Zero(D32());
    hn::Vec<D32> sum1 = hn::Zero(D32());
    for (size_t v = 0; v < kBlockVecs; ++v) {
      sum0 = hn::ReorderWidenMulAccumulate(D32(), w.q[v], xb.q[v], sum0, sum1);
    }
    const hn::Vec<D32> sum = hn::RearrangeToOddPlusEven(sum0, sum1);
    return hn::MulAdd(hn::ConvertTo(DF(), sum), hn::Set(DF(), w.d * xb.d), acc);
  }
  float Reduce(Acc acc) const { return hn::GetLane(hn::SumOfLanes(DF(), acc)); }

  QuantActivations xa;
  size_t cols;
  size_t steps;  // blocks per row
  static constexpr bool has_tail = false;
  size_t prefetch_ahead = kRows * RowBytes(kType, cols);  // one row tile
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
#pragma GCC unroll 8
    for (size_t g = 0; g < kGroups; ++g) {
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
  QuantPanel panel;
  for (size_t r0 = row_begin; r0 < row_end; r0 += kPanelRows) {
    const size_t rows = std::min(kPanelRows, row_end - r0);
    for (size_t b0 = 0; b0 < blocks; b0 += kPanelBlocks) {
      const size_t nb = std::min(kPanelBlocks, blocks - b0);
      F::Pack(w + r0 * row_bytes, row_bytes, rows, b0, nb, panel);
      for (size_t t0 = 0; t0 < n; t0 += kPanelTokens) {
        WithTokenCount<kPanelTokens>(n - t0, [&](auto tokens) {
          QuantPanelTile<decltype(tokens)::value>(panel, nb, F::kOffset, xa,
                                                  cols, b0, t0, rows, b0 == 0,
                                                  y + r0, ldy);
        });
      }
    }
  }
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
// q = round-half-even(x * (1 / d)), or 0 where d = 0; `sum` is the sum of the
// block's q.
void QuantizeRowQ8(const float* x, size_t cols, int8_t* q, int32_t* sum,
                   float* d) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const size_t lanes = hn::Lanes(df);
  static_assert(kQuantBlock % HWY_LANES(float) == 0);
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
    }
    sum[b] = hn::GetLane(hn::SumOfLanes(di, qsum));
    d[b] = scale;
  }
}

}  // namespace

void PrepareActivationsImpl(DType wt, const float* x, size_t cols, size_t n,
                            void* prepared) {
  switch (wt) {
    case DType::kF32:
    case DType::kF16:
    case DType::kQ4_K:  // INTERIM (until the K-quant kernels land)
    case DType::kQ5_K:
    case DType::kQ6_K: {
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
        QuantizeRowQ8(x + t * cols, cols, q + t * cols, sums + t * blocks,
                      d + t * blocks);
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
  auto run_widened = [&](const auto& kernel) {
    if (n <= kFloatTokens) return run(kernel);
    RunWidened(kernel, w8, row_bytes, n, row_begin, row_end, y, ldy);
  };
  switch (wt) {
    case DType::kF32:
      return run(WidenKernel<float>(static_cast<const float*>(prepared), cols,
                                    FloatRowStride(cols)));
    case DType::kF16:
      return run_widened(WidenKernel<hwy::float16_t>(
          static_cast<const float*>(prepared), cols, FloatRowStride(cols)));
    case DType::kBF16:
#if HWY_TARGET == HWY_AVX3_DL
      if (CpuHasAvx512Bf16()) return run(Bf16DotKernel(prepared, cols));
#endif
      return run_widened(WidenKernel<hwy::bfloat16_t>(x, cols, cols));
    case DType::kQ8_0:
#if HWY_TARGET == HWY_AVX3_DL
      if (CpuHasAvx512Vnni()) {
        return RunQuantPanels<DType::kQ8_0>(w8, row_bytes, cols, prepared, n,
                                            row_begin, row_end, y, ldy);
      }
#endif
      return run(IntKernel<DType::kQ8_0>(prepared, cols, n));
    case DType::kQ4_0:
#if HWY_TARGET == HWY_AVX3_DL
      if (CpuHasAvx512Vnni()) {
        return RunQuantPanels<DType::kQ4_0>(w8, row_bytes, cols, prepared, n,
                                            row_begin, row_end, y, ldy);
      }
#endif
      return run(IntKernel<DType::kQ4_0>(prepared, cols, n));
    case DType::kQ4_K:  // INTERIM: decode each row to f32, then dot
    case DType::kQ5_K:
    case DType::kQ6_K: {
      std::vector<float> row(cols);
      const auto* xf = static_cast<const float*>(prepared);
      for (size_t r = row_begin; r < row_end; ++r) {
        DequantizeRow(wt, w8 + r * row_bytes, cols, row.data());
        for (size_t t = 0; t < n; ++t) {
          const float* xt = xf + t * FloatRowStride(cols);
          float sum = 0.0f;
          for (size_t i = 0; i < cols; ++i) sum += row[i] * xt[i];
          y[t * ldy + r] = sum;
        }
      }
      return;
    }
  }
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

size_t PreparedActivationBytes(DType wt, size_t cols, size_t n) {
  switch (wt) {
    case DType::kF32:
    case DType::kF16:
    case DType::kQ4_K:  // INTERIM
    case DType::kQ5_K:
    case DType::kQ6_K:
      return n * matmul_fast::FloatRowStride(cols) * sizeof(float);
    case DType::kBF16:
      return n * matmul_fast::Bf16RowStride(cols) * sizeof(uint16_t);
    case DType::kQ8_0:
    case DType::kQ4_0:
      return matmul_fast::QuantScalesOffset(cols, n) +
             n * (cols / kQuantBlock) * sizeof(float);  // after q and sums
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

}  // namespace kvstash::kernels
#endif  // HWY_ONCE
