// Highway compiles this file once per CPU target (foreach_target.h) and picks
// one at run time. A pass holds up to kMaxRows rows, each the query of one
// (token, head), and walks the positions in tiles of kTile; per tile, for the
// rows that take it in:
//   1. ScoreRows: s[r][p] = scale * dot(q[r], k_p), kPosBlock positions x
//      up to kScoreRows rows per register block, the kPosBlock dot products
//      of a row reduced together (Reduce4);
//   2. SoftmaxStep: online softmax per row (running max m and sum l); the
//      scores become weights exp(s - m) and corr = exp(m_old - m_new);
//   3. AccumulateRows: out[r] = corr[r] * out[r] + sum_p w[r][p] v_p, one
//      vector of head_dim at a time with the accumulators of up to
//      kValueRows rows in registers.
// At the end out[r] /= l[r].
//
// Bit-identical rows: the operations on a row's values, and their order,
// depend neither on the other rows nor on the register block that computes
// it, and its tiles always start at 0, kTile, 2 kTile, ... with
// min(kTile, n_ctx - start) positions each. A pass over several tokens
// (Pass) therefore shares only the tiles that are whole for every token
// still going; a token's last, partial tile is taken by its own rows alone.

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

constexpr size_t kMaxRows = kAttentionPassRows;  // rows per pass
constexpr size_t kTile = 32;     // positions per online-softmax step
constexpr size_t kPosBlock = 4;  // positions whose dot products reduce together
// Most rows per register block of ScoreBlock: kScoreRows x kPosBlock
// accumulators, kPosBlock key vectors and a query vector must fit the
// register file (32 vector registers with AVX-512, 16 below).
#if HWY_MAX_BYTES >= 64
constexpr size_t kScoreRows = 6;
#else
constexpr size_t kScoreRows = 2;
#endif
constexpr size_t kValueRows = 8;  // rows per register block of AccumulateV
// Walks of up to kMaxGroup rows (the heads of a group, for one token) are
// compiled for their number of rows; larger ones count them at run time.
constexpr size_t kMaxGroup = 8;
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

// out = scale * [sum of the lanes of a, of b, of c, of d]. Each sum depends on
// its own vector only.
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

// s[r * kTile + j] = scale * dot(q[r], k[j]) for r < kH, j < kPosBlock.
// q: kH rows of [head_dim]; k: kPosBlock rows of [head_dim].
template <size_t kH, typename T>
HWY_INLINE void ScoreBlock(const float* const* q,
                           const T* const (&k)[kPosBlock], size_t head_dim,
                           float scale, float* s) {
  VF acc[kH][kPosBlock];
  for (size_t r = 0; r < kH; ++r) {
    for (size_t j = 0; j < kPosBlock; ++j) acc[r][j] = hn::Zero(DF());
  }
  ForEachVector(head_dim, [&](size_t i, auto part) {
    VF kv[kPosBlock];
    for (size_t j = 0; j < kPosBlock; ++j) kv[j] = Load(part, k[j] + i);
    for (size_t r = 0; r < kH; ++r) {
      const VF qv = Load(part, q[r] + i);
      for (size_t j = 0; j < kPosBlock; ++j) {
        acc[r][j] = hn::MulAdd(qv, kv[j], acc[r][j]);
      }
    }
  });
  static_assert(kPosBlock == 4);
  for (size_t r = 0; r < kH; ++r) {
    Reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3], scale, s + r * kTile);
  }
}

// ScoreBlock<n_rows>. REQUIRES: 0 < n_rows <= kH.
template <size_t kH = kScoreRows, typename T>
HWY_INLINE void ScoreBlockOf(size_t n_rows, const float* const* q,
                             const T* const (&k)[kPosBlock], size_t head_dim,
                             float scale, float* s) {
  if constexpr (kH > 1) {
    if (n_rows < kH) {
      return ScoreBlockOf<kH - 1>(n_rows, q, k, head_dim, scale, s);
    }
  }
  ScoreBlock<kH>(q, k, head_dim, scale, s);
}

// ScoreBlock for consecutive blocks of rows, blocks[b] rows each (b <
// n_blocks, 0 < blocks[b] <= kScoreRows). s: [rows][kTile].
template <typename T>
HWY_INLINE void ScoreRows(const size_t* blocks, size_t n_blocks,
                          const float* const* q, const T* const (&k)[kPosBlock],
                          size_t head_dim, float scale, float* s) {
  for (size_t b = 0; b < n_blocks; ++b) {
    ScoreBlockOf(blocks[b], q, k, head_dim, scale, s);
    q += blocks[b];
    s += blocks[b] * kTile;
  }
}

// ScoreBlock for kRows rows in as few blocks as kScoreRows allows, of sizes at
// most one apart. s: [kRows][kTile].
template <size_t kRows, typename T>
HWY_INLINE void ScoreFixedRows(const float* const* q,
                               const T* const (&k)[kPosBlock], size_t head_dim,
                               float scale, float* s) {
  constexpr size_t kH = kRows / ((kRows + kScoreRows - 1) / kScoreRows);
  ScoreBlock<kH>(q, k, head_dim, scale, s);
  if constexpr (kRows > kH) {
    ScoreFixedRows<kRows - kH>(q + kH, k, head_dim, scale, s + kH * kTile);
  }
}

// ----------------------------------------------------------------- softmax

// Running state of the online softmax of one row; starts as {-inf, 0}.
struct RowState {
  float m;  // max score so far
  float l;  // sum of exp(score - m) so far
};

// For each row r < n_rows, with s[r * kTile + p] the scores of the n valid
// positions of a tile: s becomes the weights exp(s - m_new) (0 past n),
// state[r] takes the tile in, and corr[r] = exp(m_old - m_new) is the factor
// for the accumulators.
void SoftmaxStep(size_t n_rows, size_t n, float* s, RowState* state,
                 float* corr) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  for (size_t r = 0; r < n_rows; ++r) {
    float* sh = s + r * kTile;
    std::fill(sh + n, sh + kTile, -std::numeric_limits<float>::infinity());
    VF max = hn::Load(df, sh);
    for (size_t i = lanes; i < kTile; i += lanes) {
      max = hn::Max(max, hn::Load(df, sh + i));
    }
    RowState& st = state[r];
    const float m_new = std::max(st.m, hn::GetLane(hn::MaxOfLanes(df, max)));
    corr[r] = m_new == st.m ? 1.0f : std::exp(st.m - m_new);
    const VF vm = hn::Set(df, m_new);
    VF sum = hn::Zero(df);
    for (size_t i = 0; i < kTile; i += lanes) {
      const VF w = hn::Exp(df, hn::Sub(hn::Load(df, sh + i), vm));
      hn::Store(w, df, sh + i);
      sum = hn::Add(sum, w);
    }
    st.l = st.l * corr[r] + hn::GetLane(hn::SumOfLanes(df, sum));
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

// out[r][i + j * Lanes + lane] = corr[r] * out[...] + sum_{p < n} w[r][p] *
// v[p][same] for r < G, j < kJ: kJ vectors of every row in one pass over the
// positions. out: G rows of [head_dim]; w: [G][kTile]; v: n rows of
// [head_dim].
template <size_t G, size_t kJ, typename T, class Part>
HWY_INLINE void AccumulateVectors(const T* const* v, size_t n, const float* w,
                                  const float* corr, float* const* out,
                                  size_t i, Part part) {
  const DF df;
  const size_t lanes = hn::Lanes(df);
  VF acc[kJ][G];
  for (size_t j = 0; j < kJ; ++j) {
    for (size_t r = 0; r < G; ++r) {
      acc[j][r] =
          hn::Mul(Load(part, out[r] + i + j * lanes), hn::Set(df, corr[r]));
    }
  }
  for (size_t p = 0; p < n; ++p) {
    for (size_t j = 0; j < kJ; ++j) {
      const VF vv = Load(part, v[p] + i + j * lanes);
      for (size_t r = 0; r < G; ++r) {
        acc[j][r] = hn::MulAdd(hn::Set(df, w[r * kTile + p]), vv, acc[j][r]);
      }
    }
  }
  for (size_t j = 0; j < kJ; ++j) {
    for (size_t r = 0; r < G; ++r) {
      Store(part, acc[j][r], out[r] + i + j * lanes);
    }
  }
}

// out[r] = corr[r] * out[r] + sum_{p < n} w[r][p] * v[p] for r < G, from dim
// i on, in blocks of kJ vectors, then kJ / 2, ..., then single (and partial)
// vectors.
template <size_t G,
          size_t kJ = std::bit_floor(std::max<size_t>(1, kMinChains / G)),
          typename T>
HWY_INLINE void AccumulateV(const T* const* v, size_t n, const float* w,
                            const float* corr, size_t head_dim,
                            float* const* out, size_t i = 0) {
  if constexpr (kJ > 1) {
    const size_t block = kJ * hn::Lanes(DF());
    for (; i + block <= head_dim; i += block) {
      AccumulateVectors<G, kJ>(v, n, w, corr, out, i, Full());
    }
    AccumulateV<G, kJ / 2>(v, n, w, corr, head_dim, out, i);
  } else {
    ForEachVector(head_dim - i, [&](size_t di, auto part) {
      AccumulateVectors<G, 1>(v, n, w, corr, out, i + di, part);
    });
  }
}

// AccumulateV for rows [0, n_rows) in blocks of G rows, the rest in smaller
// blocks. w: [n_rows][kTile].
template <size_t G = kValueRows, typename T>
HWY_INLINE void AccumulateRows(size_t n_rows, const T* const* v, size_t n,
                               const float* w, const float* corr,
                               size_t head_dim, float* const* out) {
  for (; n_rows >= G; n_rows -= G, w += G * kTile, corr += G, out += G) {
    AccumulateV<G>(v, n, w, corr, head_dim, out);
  }
  if constexpr (G > 1) {
    if (n_rows > 0) AccumulateRows<G - 1>(n_rows, v, n, w, corr, head_dim, out);
  }
}

// ------------------------------------------------------------------ driver

// Walks positions [begin, end) of the runs in tiles of up to kTile.
template <typename T>
class TileCursor {
 public:
  TileCursor(std::span<const KvRun> runs, size_t head_dim, size_t begin,
             size_t end)
      : runs_(runs), head_dim_(head_dim), left_(end - begin), pos_(begin) {
    while (run_ < runs_.size() && pos_ >= runs_[run_].n_tokens) {
      pos_ -= runs_[run_].n_tokens;
      ++run_;
    }
  }

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
  size_t pos_;      // next position within it
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

// The rows of a pass: row r is the query q[r] of one (token, head), its
// output out[r] (also the accumulator) and the state of its softmax.
struct Rows {
  const float* q[kMaxRows];
  float* out[kMaxRows];
  RowState state[kMaxRows];
};

// Takes positions [begin, end) into rows [r0, r1): in tiles of up to kTile
// from `begin`, all of them for every row. While a tile is computed, the rows
// of the next one are prefetched. kRows: r1 - r0 if compiled for it, else 0.
// REQUIRES: begin a multiple of kTile; r0 < r1 <= kMaxRows.
template <size_t kRows, typename T>
void Walk(Rows& rows, size_t r0, size_t r1, size_t head_dim,
          std::span<const KvRun> runs, size_t begin, size_t end, float scale) {
  const size_t n_rows = kRows != 0 ? kRows : r1 - r0;
  const float* const* q = rows.q + r0;
  float* const* out = rows.out + r0;
  float corr[kMaxRows];
  HWY_ALIGN float s[kMaxRows * kTile];  // [n_rows][kTile] scores, then weights
  const T* k_rows[2][kTile];            // this tile's rows and the next one's
  const T* v_rows[2][kTile];
  // Without kRows, the blocks of ScoreRows: as few as kScoreRows allows, of
  // sizes at most one apart.
  [[maybe_unused]] size_t blocks[kMaxRows];
  [[maybe_unused]] const size_t n_blocks =
      (n_rows + kScoreRows - 1) / kScoreRows;
  if constexpr (kRows == 0) {
    for (size_t b = 0, r = 0; b < n_blocks; r += blocks[b++]) {
      blocks[b] = (n_rows - r) / (n_blocks - b);
    }
  }
  TileCursor<T> cursor(runs, head_dim, begin, end);
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
      if constexpr (kRows == 0) {
        ScoreRows(blocks, n_blocks, q, k, head_dim, scale, s + p0);
      } else {
        ScoreFixedRows<kRows>(q, k, head_dim, scale, s + p0);
      }
    }
    SoftmaxStep(n_rows, n, s, rows.state + r0, corr);
    if constexpr (kRows == 0) {
      AccumulateRows(n_rows, v_rows[cur], n, s, corr, head_dim, out);
    } else {
      AccumulateV<kRows>(v_rows[cur], n, s, corr, head_dim, out);
    }
    n = n_next;
  }
}

using WalkFn = void (*)(Rows&, size_t, size_t, size_t, std::span<const KvRun>,
                        size_t, size_t, float);

// Walk<kI, T> for kI = 0 .. kMaxGroup, indexed by kI.
template <typename T, size_t... kI>
constexpr std::array<WalkFn, sizeof...(kI)> WalkTable(
    std::index_sequence<kI...>) {
  return {&Walk<kI, T>...};
}

// Walk, compiled for r1 - r0 rows where there is one.
template <typename T>
void WalkRows(Rows& rows, size_t r0, size_t r1, size_t head_dim,
              std::span<const KvRun> runs, size_t begin, size_t end,
              float scale) {
  static constexpr std::array<WalkFn, kMaxGroup + 1> kWalks =
      WalkTable<T>(std::make_index_sequence<kMaxGroup + 1>());
  const size_t n_rows = r1 - r0;
  kWalks[n_rows <= kMaxGroup ? n_rows : 0](rows, r0, r1, head_dim, runs, begin,
                                           end, scale);
}

// Attention of n_tokens tokens x g heads, row j * g + h for (token j, head h)
// (n_tokens * g <= kMaxRows), in one pass over the K/V. Tokens [j0, j1) that
// end at the same position finish together: first every token from j0 on
// takes in the tiles that are whole for all of them (up to n_ctx[j0] rounded
// down to kTile, or to n_ctx[j0] itself when no later token is left), then
// tokens [j0, j1) take their last, partial tile alone.
template <typename T>
void Pass(const float* q, size_t q_stride, size_t n_tokens, size_t g,
          size_t head_dim, std::span<const KvRun> runs, const size_t* n_ctx,
          float scale, float* out, size_t out_stride) {
  Rows rows;
  const size_t n_rows = n_tokens * g;
  for (size_t j = 0; j < n_tokens; ++j) {
    for (size_t h = 0; h < g; ++h) {
      const size_t r = j * g + h;
      rows.q[r] = q + j * q_stride + h * head_dim;
      rows.out[r] = out + j * out_stride + h * head_dim;
      rows.state[r] = {-std::numeric_limits<float>::infinity(), 0.0f};
      ForEachVector(head_dim, [&](size_t i, auto part) {
        Store(part, hn::Zero(DF()), rows.out[r] + i);
      });
    }
  }
  size_t taken = 0;  // positions taken in by the tokens from j0 on
  for (size_t j0 = 0, j1; j0 < n_tokens; j0 = j1) {
    for (j1 = j0 + 1; j1 < n_tokens && n_ctx[j1] == n_ctx[j0]; ++j1) {
    }
    const size_t shared =
        j1 == n_tokens ? n_ctx[j0] : n_ctx[j0] / kTile * kTile;
    if (shared > taken) {
      WalkRows<T>(rows, j0 * g, n_rows, head_dim, runs, taken, shared, scale);
      taken = shared;
    }
    if (n_ctx[j0] > taken) {
      WalkRows<T>(rows, j0 * g, j1 * g, head_dim, runs, taken, n_ctx[j0],
                  scale);
    }
    for (size_t r = j0 * g; r < j1 * g; ++r) {
      const VF inv_l = hn::Set(DF(), 1.0f / rows.state[r].l);
      ForEachVector(head_dim, [&](size_t i, auto part) {
        float* o = rows.out[r] + i;
        Store(part, hn::Mul(Load(part, o), inv_l), o);
      });
    }
  }
}

// Pass over every block of up to kMaxRows heads and, for each, of as many
// whole tokens as fit beside them.
template <typename T>
void RunPasses(const float* q, size_t q_stride, size_t n_tokens, size_t n_q,
               size_t head_dim, std::span<const KvRun> runs,
               const size_t* n_ctx, float scale, float* out,
               size_t out_stride) {
  for (size_t h0 = 0; h0 < n_q; h0 += kMaxRows) {
    const size_t g = std::min(kMaxRows, n_q - h0);
    const size_t tokens = kMaxRows / g;
    for (size_t j0 = 0; j0 < n_tokens; j0 += tokens) {
      Pass<T>(q + j0 * q_stride + h0 * head_dim, q_stride,
              std::min(tokens, n_tokens - j0), g, head_dim, runs, n_ctx + j0,
              scale, out + j0 * out_stride + h0 * head_dim, out_stride);
    }
  }
}

}  // namespace

void AttentionFastTokensImpl(const float* q, size_t q_stride, size_t n_tokens,
                             size_t n_q, size_t head_dim, DType kv_type,
                             std::span<const KvRun> runs, const size_t* n_ctx,
                             float scale, float* out, size_t out_stride) {
  switch (kv_type) {
    case DType::kF32:
      return RunPasses<float>(q, q_stride, n_tokens, n_q, head_dim, runs, n_ctx,
                              scale, out, out_stride);
    case DType::kF16:
      return RunPasses<hwy::float16_t>(q, q_stride, n_tokens, n_q, head_dim,
                                       runs, n_ctx, scale, out, out_stride);
    case DType::kBF16:
      return RunPasses<hwy::bfloat16_t>(q, q_stride, n_tokens, n_q, head_dim,
                                        runs, n_ctx, scale, out, out_stride);
    case DType::kQ8_0:
    case DType::kQ4_0:
      break;  // rejected by AttentionFastTokens
  }
}

}  // namespace kvstash::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvstash::kernels {

HWY_EXPORT(AttentionFastTokensImpl);

void AttentionFastTokens(const float* q, size_t q_stride, size_t n_tokens,
                         size_t n_q, size_t head_dim, DType kv_type,
                         std::span<const KvRun> runs, const size_t* n_ctx,
                         float scale, float* out, size_t out_stride) {
  KV_CHECK(IsAttentionKvType(kv_type));
  for (size_t j = 0; j < n_tokens; ++j) {
    KV_CHECK(n_ctx[j] > 0 && (j == 0 || n_ctx[j] >= n_ctx[j - 1]));
  }
  HWY_DYNAMIC_DISPATCH(AttentionFastTokensImpl)
  (q, q_stride, n_tokens, n_q, head_dim, kv_type, runs, n_ctx, scale, out,
   out_stride);
}

void AttentionFast(const float* q, size_t n_q, size_t head_dim, DType kv_type,
                   std::span<const KvRun> runs, size_t n_ctx, float scale,
                   float* out) {
  AttentionFastTokens(q, n_q * head_dim, 1, n_q, head_dim, kv_type, runs,
                      &n_ctx, scale, out, n_q * head_dim);
}

}  // namespace kvstash::kernels
#endif  // HWY_ONCE
