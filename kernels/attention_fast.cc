// Highway compiles this file once per CPU target (foreach_target.h) and picks
// one at run time. A pass over the K/V for G <= kMaxGroup query heads walks
// the positions in tiles of kTile; per tile:
//   1. ScoreHeads: s[h][p] = scale * dot(q[h], k_p), kPosBlock positions x
//      kHeadBlock heads per register block, the kPosBlock dot products of a
//      head reduced together (Reduce4);
//   2. SoftmaxStep: online softmax per head (running max m and sum l); the
//      scores become weights exp(s - m) and corr = exp(m_old - m_new);
//   3. AccumulateV: out[h] = corr[h] * out[h] + sum_p w[h][p] v_p, one vector
//      of head_dim at a time with the accumulators of all G heads in
//      registers.
// At the end out[h] /= l[h].

#include "kernels/attention_fast.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

#include "base/check.h"
#include "hwy/cache_control.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/attention_fast.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

// After highway.h: compiled once per target.
#include "hwy/contrib/math/math-inl.h"
#include "kernels/simd_rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kvstash::kernels::HWY_NAMESPACE {
namespace {

constexpr size_t kMaxGroup = 8;  // query heads per pass over the K/V
constexpr size_t kTile = 32;     // positions per online-softmax step
constexpr size_t kPosBlock = 4;  // positions whose dot products reduce together
// Heads per register block of ScoreBlock: kHeadBlock x kPosBlock accumulators
// must fit the register file (32 vector registers with AVX-512, 16 below).
#if HWY_MAX_BYTES >= 64
constexpr size_t kHeadBlock = 4;
#else
constexpr size_t kHeadBlock = 2;
#endif
static_assert(kTile % HWY_LANES(float) == 0 && kTile % kPosBlock == 0);

// ------------------------------------------------------------------ scores

#if HWY_TARGET == HWY_SCALAR

// out = scale * [a, b, c, d].
HWY_INLINE void Reduce4(VF a, VF b, VF c, VF d, float scale, float* out) {
  out[0] = scale * hn::GetLane(a);
  out[1] = scale * hn::GetLane(b);
  out[2] = scale * hn::GetLane(c);
  out[3] = scale * hn::GetLane(d);
}

#else

// The sum of the 128-bit blocks of v, as a 128-bit vector.
template <class D>
HWY_INLINE auto SumOfBlocks(D /*tag*/, hn::Vec<D> v) {
  if constexpr (hn::MaxLanes(D()) > 4) {
    const hn::Half<D> dh;
    return SumOfBlocks(dh, hn::Add(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)));
  } else {
    return v;
  }
}

// out = scale * [sum of the lanes of a, of b, of c, of d].
HWY_INLINE void Reduce4(VF a, VF b, VF c, VF d, float scale, float* out) {
  const DF df;
  const hn::Repartition<uint64_t, DF> du64;
  // Per 128-bit block: [a0+a2, b0+b2, a1+a3, b1+b3].
  const VF ab =
      hn::Add(hn::InterleaveLower(df, a, b), hn::InterleaveUpper(df, a, b));
  const VF cd =
      hn::Add(hn::InterleaveLower(df, c, d), hn::InterleaveUpper(df, c, d));
  // Per block: the block's sums of [a, b, c, d].
  const auto ab64 = hn::BitCast(du64, ab);
  const auto cd64 = hn::BitCast(du64, cd);
  const VF abcd =
      hn::Add(hn::BitCast(df, hn::InterleaveLower(du64, ab64, cd64)),
              hn::BitCast(df, hn::InterleaveUpper(du64, ab64, cd64)));
  const hn::Full128<float> d4;
  hn::StoreU(hn::Mul(SumOfBlocks(df, abcd), hn::Set(d4, scale)), d4, out);
}

#endif  // HWY_TARGET == HWY_SCALAR

// s[h * kTile + j] = scale * dot(q[h], k[j]) for h < kH, j < kPosBlock.
// q: [kH][head_dim]; k: kPosBlock rows of [head_dim].
template <size_t kH, typename T>
HWY_INLINE void ScoreBlock(const float* q, const T* const (&k)[kPosBlock],
                           size_t head_dim, float scale, float* s) {
  VF acc[kH][kPosBlock];
  for (size_t h = 0; h < kH; ++h) {
    for (size_t j = 0; j < kPosBlock; ++j) acc[h][j] = hn::Zero(DF());
  }
  ForEachVector(head_dim, [&](size_t i, auto part) {
    VF kv[kPosBlock];
    for (size_t j = 0; j < kPosBlock; ++j) kv[j] = Load(part, k[j] + i);
    for (size_t h = 0; h < kH; ++h) {
      const VF qv = Load(part, q + h * head_dim + i);
      for (size_t j = 0; j < kPosBlock; ++j) {
        acc[h][j] = hn::MulAdd(qv, kv[j], acc[h][j]);
      }
    }
  });
  static_assert(kPosBlock == 4);
  for (size_t h = 0; h < kH; ++h) {
    Reduce4(acc[h][0], acc[h][1], acc[h][2], acc[h][3], scale, s + h * kTile);
  }
}

// ScoreBlock for heads [kH0, G) in blocks of up to kHeadBlock heads.
template <size_t G, size_t kH0 = 0, typename T>
HWY_INLINE void ScoreHeads(const float* q, const T* const (&k)[kPosBlock],
                           size_t head_dim, float scale, float* s) {
  if constexpr (kH0 < G) {
    constexpr size_t kH = std::min(kHeadBlock, G - kH0);
    ScoreBlock<kH>(q + kH0 * head_dim, k, head_dim, scale, s + kH0 * kTile);
    ScoreHeads<G, kH0 + kH>(q, k, head_dim, scale, s);
  }
}

// ----------------------------------------------------------------- softmax

// Running state of the online softmax of one query head.
struct HeadState {
  float m = -std::numeric_limits<float>::infinity();  // max score so far
  float l = 0.0f;  // sum of exp(score - m) so far
};

// For each head h < g, with s[h * kTile + p] the scores of the n valid
// positions of a tile: s becomes the weights exp(s - m_new) (0 past n),
// state[h] takes the tile in, and corr[h] = exp(m_old - m_new) is the factor
// for the accumulators.
void SoftmaxStep(size_t g, size_t n, float* s, HeadState* state, float* corr) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  for (size_t h = 0; h < g; ++h) {
    float* sh = s + h * kTile;
    std::fill(sh + n, sh + kTile, -std::numeric_limits<float>::infinity());
    VF max = hn::Load(df, sh);
    for (size_t i = lanes; i < kTile; i += lanes) {
      max = hn::Max(max, hn::Load(df, sh + i));
    }
    HeadState& st = state[h];
    const float m_new = std::max(st.m, hn::GetLane(hn::MaxOfLanes(df, max)));
    corr[h] = m_new == st.m ? 1.0f : std::exp(st.m - m_new);
    const VF vm = hn::Set(df, m_new);
    VF sum = hn::Zero(df);
    for (size_t i = 0; i < kTile; i += lanes) {
      const VF w = hn::Exp(df, hn::Sub(hn::Load(df, sh + i), vm));
      hn::Store(w, df, sh + i);
      sum = hn::Add(sum, w);
    }
    st.l = st.l * corr[h] + hn::GetLane(hn::SumOfLanes(df, sum));
    st.m = m_new;
  }
}

// ------------------------------------------------------------------ values

// Independent FMA chains AccumulateV keeps in flight: at least two FMA pipes
// times a latency of four cycles, more where registers allow.
#if HWY_MAX_BYTES >= 64
constexpr size_t kMinChains = 16;
#else
constexpr size_t kMinChains = 8;
#endif

// out[h][i + j * Lanes + lane] = corr[h] * out[...] + sum_{p < n} w[h][p] *
// v[p][same] for h < G, j < kJ: kJ vectors of every head in one pass over the
// positions. out: [G][head_dim]; w: [G][kTile]; v: n rows of [head_dim].
template <size_t G, size_t kJ, typename T, class Part>
HWY_INLINE void AccumulateVectors(const T* const* v, size_t n, const float* w,
                                  const float* corr, size_t head_dim,
                                  float* out, size_t i, Part part) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  VF acc[kJ][G];
  for (size_t j = 0; j < kJ; ++j) {
    for (size_t h = 0; h < G; ++h) {
      acc[j][h] = hn::Mul(Load(part, out + h * head_dim + i + j * lanes),
                          hn::Set(df, corr[h]));
    }
  }
  for (size_t p = 0; p < n; ++p) {
    for (size_t j = 0; j < kJ; ++j) {
      const VF vv = Load(part, v[p] + i + j * lanes);
      for (size_t h = 0; h < G; ++h) {
        acc[j][h] = hn::MulAdd(hn::Set(df, w[h * kTile + p]), vv, acc[j][h]);
      }
    }
  }
  for (size_t j = 0; j < kJ; ++j) {
    for (size_t h = 0; h < G; ++h) {
      Store(part, acc[j][h], out + h * head_dim + i + j * lanes);
    }
  }
}

// out[h] = corr[h] * out[h] + sum_{p < n} w[h][p] * v[p], from dim i on, in
// blocks of kJ vectors, then kJ / 2, ..., then single (and partial) vectors.
template <size_t G,
          size_t kJ = std::bit_floor(std::max<size_t>(1, kMinChains / G)),
          typename T>
HWY_INLINE void AccumulateV(const T* const* v, size_t n, const float* w,
                            const float* corr, size_t head_dim, float* out,
                            size_t i = 0) {
  if constexpr (kJ > 1) {
    const size_t block = kJ * hn::Lanes(DF());
    for (; i + block <= head_dim; i += block) {
      AccumulateVectors<G, kJ>(v, n, w, corr, head_dim, out, i, Full());
    }
    AccumulateV<G, kJ / 2>(v, n, w, corr, head_dim, out, i);
  } else {
    ForEachVector(head_dim - i, [&](size_t di, auto part) {
      AccumulateVectors<G, 1>(v, n, w, corr, head_dim, out, i + di, part);
    });
  }
}

// ------------------------------------------------------------------ driver

// Walks the first n_ctx positions of the runs in tiles of up to kTile.
template <typename T>
class TileCursor {
 public:
  TileCursor(std::span<const KvRun> runs, size_t head_dim, size_t n_ctx)
      : runs_(runs), head_dim_(head_dim), left_(n_ctx) {}

  // Points k[p], v[p] at the rows of the next positions and returns how many
  // (at most kTile; 0 at the end).
  size_t Next(const T** k, const T** v) {
    size_t n = 0;
    while (n < kTile && left_ > 0) {
      KV_CHECK_MSG(run_ < runs_.size(), "n_ctx exceeds the tokens in runs");
      const KvRun& run = runs_[run_];
      const size_t take = std::min({kTile - n, run.n_tokens - pos_, left_});
      for (size_t j = 0; j < take; ++j, ++n) {
        const size_t offset = (pos_ + j) * head_dim_;
        k[n] = static_cast<const T*>(run.k) + offset;
        v[n] = static_cast<const T*>(run.v) + offset;
      }
      pos_ += take;
      left_ -= take;
      if (pos_ == run.n_tokens) {
        ++run_;
        pos_ = 0;
      }
    }
    return n;
  }

 private:
  std::span<const KvRun> runs_;
  size_t head_dim_;
  size_t left_;     // positions not yet handed out
  size_t run_ = 0;  // current run
  size_t pos_ = 0;  // next position within it
};

// Asks for the cache lines of the n rows (of head_dim elements) of k and v.
template <typename T>
HWY_INLINE void PrefetchRows(const T* const* k, const T* const* v, size_t n,
                             size_t head_dim) {
  constexpr size_t kLine = 64;
  const size_t row_bytes = head_dim * sizeof(T);
  for (size_t p = 0; p < n; ++p) {
    const auto* k_row = reinterpret_cast<const uint8_t*>(k[p]);
    const auto* v_row = reinterpret_cast<const uint8_t*>(v[p]);
    for (size_t b = 0; b < row_bytes; b += kLine) {
      hwy::Prefetch(k_row + b);
      hwy::Prefetch(v_row + b);
    }
  }
}

// Attention of G query heads (q, out: [G][head_dim]) in one pass. While a
// tile is computed, the rows of the next one are prefetched.
template <size_t G, typename T>
void Pass(const float* q, size_t head_dim, std::span<const KvRun> runs,
          size_t n_ctx, float scale, float* out) {
  HeadState state[G];
  float corr[G];
  HWY_ALIGN float s[G * kTile];  // [G][kTile] scores, then weights
  const T* k_rows[2][kTile];     // this tile's rows and the next one's
  const T* v_rows[2][kTile];
  std::fill(out, out + G * head_dim, 0.0f);
  TileCursor<T> cursor(runs, head_dim, n_ctx);
  size_t n = cursor.Next(k_rows[0], v_rows[0]);
  for (size_t cur = 0; n != 0; cur ^= 1) {
    const size_t n_next = cursor.Next(k_rows[cur ^ 1], v_rows[cur ^ 1]);
    for (size_t p0 = 0; p0 < n; p0 += kPosBlock) {
      if (p0 < n_next) {
        PrefetchRows(k_rows[cur ^ 1] + p0, v_rows[cur ^ 1] + p0,
                     std::min(kPosBlock, n_next - p0), head_dim);
      }
      // Positions past n repeat row n - 1; SoftmaxStep drops their scores.
      const T* k[kPosBlock];
      for (size_t j = 0; j < kPosBlock; ++j) {
        k[j] = k_rows[cur][std::min(p0 + j, n - 1)];
      }
      ScoreHeads<G>(q, k, head_dim, scale, s + p0);
    }
    SoftmaxStep(G, n, s, state, corr);
    AccumulateV<G>(v_rows[cur], n, s, corr, head_dim, out);
    n = n_next;
  }
  for (size_t h = 0; h < G; ++h) {
    const VF inv_l = hn::Set(DF(), 1.0f / state[h].l);
    ForEachVector(head_dim, [&](size_t i, auto part) {
      float* o = out + h * head_dim + i;
      Store(part, hn::Mul(Load(part, o), inv_l), o);
    });
  }
}

using PassFn = void (*)(const float*, size_t, std::span<const KvRun>, size_t,
                        float, float*);

// Pass<G, T> for G = 1 .. kMaxGroup, indexed by G - 1.
template <typename T, size_t... kI>
constexpr std::array<PassFn, sizeof...(kI)> PassTable(
    std::index_sequence<kI...>) {
  return {&Pass<kI + 1, T>...};
}

template <typename T>
void RunPasses(const float* q, size_t n_q, size_t head_dim,
               std::span<const KvRun> runs, size_t n_ctx, float scale,
               float* out) {
  static constexpr std::array<PassFn, kMaxGroup> kPasses =
      PassTable<T>(std::make_index_sequence<kMaxGroup>());
  for (size_t h0 = 0; h0 < n_q; h0 += kMaxGroup) {
    const size_t g = std::min(kMaxGroup, n_q - h0);
    kPasses[g - 1](q + h0 * head_dim, head_dim, runs, n_ctx, scale,
                   out + h0 * head_dim);
  }
}

}  // namespace

void AttentionFastImpl(const float* q, size_t n_q, size_t head_dim,
                       DType kv_type, std::span<const KvRun> runs, size_t n_ctx,
                       float scale, float* out) {
  switch (kv_type) {
    case DType::kF32:
      return RunPasses<float>(q, n_q, head_dim, runs, n_ctx, scale, out);
    case DType::kF16:
      return RunPasses<hwy::float16_t>(q, n_q, head_dim, runs, n_ctx, scale,
                                       out);
    case DType::kBF16:
      return RunPasses<hwy::bfloat16_t>(q, n_q, head_dim, runs, n_ctx, scale,
                                        out);
    case DType::kQ8_0:
    case DType::kQ4_0:
      break;  // rejected by AttentionFast
  }
}

}  // namespace kvstash::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvstash::kernels {

HWY_EXPORT(AttentionFastImpl);

void AttentionFast(const float* q, size_t n_q, size_t head_dim, DType kv_type,
                   std::span<const KvRun> runs, size_t n_ctx, float scale,
                   float* out) {
  KV_CHECK(IsAttentionKvType(kv_type));
  KV_CHECK(n_ctx > 0);
  HWY_DYNAMIC_DISPATCH(AttentionFastImpl)
  (q, n_q, head_dim, kv_type, runs, n_ctx, scale, out);
}

}  // namespace kvstash::kernels
#endif  // HWY_ONCE
