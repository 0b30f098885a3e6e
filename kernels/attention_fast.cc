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
// KV types: every K and V row is read through LoadKv, which widens the
// stored row to f32 in registers, one vector of head_dim at a time (f16 and
// bf16 by conversion, q8 / q4 codes times their group's scale, KIVI codes
// times scale plus min); nothing is decoded to memory. A tile holds positions
// of one (K type, V type) pair only, so the tile walk of a sequence whose own
// block is an f16 residual splits there; the split depends only on the runs,
// so a row's result still depends only on its query, n_ctx and the K/V. The
// phases are compiled per type (ScoreTile, AccumulateTile) and chosen per
// tile from tables.
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
#include <cstring>
#include <limits>
#include <type_traits>
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

// ------------------------------------------------------------------ loaders

// One position's stored row: `data` is the row ([scales][codes] or
// elements), `params` the start of its run (KIVI keys' per-channel scales and
// mins).
struct RowRef {
  const uint8_t* data;
  const uint8_t* params;
};

// The shape of one KV type's rows for a head_dim, as LoadKv needs it.
struct Geo {
  size_t head_dim = 0;
  size_t group_shift = 0;  // log2(KvGroupSize)
  size_t n_groups = 0;
  size_t stripe_shift = 0;  // log2(KvPackStripe)
  size_t chunk_shift = 0;   // log2(stripe * 8 / bits)
  // Every vector ForEachVector hands out lies within one scale group and one
  // field of packed codes (else LoadKv decodes lane by lane).
  bool fast = true;
};

size_t Log2(size_t n) { return size_t(std::countr_zero(n)); }

Geo MakeGeo(KvType t, size_t head_dim) {
  Geo g;
  g.head_dim = head_dim;
  if (KvIsFloat(t)) return g;
  const size_t group = KvGroupSize(head_dim);
  g.group_shift = Log2(group);
  g.n_groups = head_dim / group;
  const int bits = KvBits(t);
  const size_t lanes = hn::Lanes(DF());
  g.fast = lanes <= group || KvIsKivi(t);
  if (bits < 8) {
    const size_t stripe = KvPackStripe(bits, head_dim);
    g.stripe_shift = Log2(stripe);
    g.chunk_shift = Log2(stripe * 8 / size_t(bits));
    g.fast = g.fast && lanes <= stripe;
  }
  return g;
}

// The IEEE half at p as a float (one lane of PromoteTo: F16C where the
// target has it).
HWY_INLINE float HalfToFloat(const uint8_t* p) {
  const hn::CappedTag<hwy::float16_t, 1> dh;
  const hn::Rebind<float, decltype(dh)> df1;
  return hn::GetLane(hn::PromoteTo(
      df1, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p))));
}

constexpr int BitsOf(KvType t) {
  return t == KvType::kQ8 ? 8 : t == KvType::kKivi2 ? 2 : 4;
}

// Bytes of the scales before a per-token row's codes.
template <KvType kT, KvSide kS>
HWY_INLINE size_t ScaleBytes(const Geo& g) {
  if constexpr (KvIsKivi(kT)) {
    return kS == KvSide::kK ? 0 : 4 * g.n_groups;
  } else {
    return 2 * g.n_groups;
  }
}

// Element i of a row, decoded one at a time (the reference formulas).
template <KvType kT, KvSide kS>
float ElemAt(const RowRef& r, size_t i, const Geo& g) {
  const uint8_t* codes = r.data + ScaleBytes<kT, kS>(g);
  if constexpr (kT == KvType::kQ8) {
    return HalfToFloat(r.data + 2 * (i >> g.group_shift)) *
           float(int8_t(codes[i]));
  } else {
    constexpr int kBits = BitsOf(kT);
    const size_t c = i >> g.chunk_shift;
    const size_t rem = i & ((size_t(1) << g.chunk_shift) - 1);
    const size_t field = rem >> g.stripe_shift;
    const size_t j = rem & ((size_t(1) << g.stripe_shift) - 1);
    const float q =
        float((codes[(c << g.stripe_shift) + j] >> (field * kBits)) &
              ((1u << kBits) - 1));
    if constexpr (kT == KvType::kQ4 || kT == KvType::kQ4H) {
      return HalfToFloat(r.data + 2 * (i >> g.group_shift)) * (q - 8.0f);
    } else if constexpr (kS == KvSide::kK) {
      return std::fma(HalfToFloat(r.params + 2 * i), q,
                      HalfToFloat(r.params + 2 * (g.head_dim + i)));
    } else {
      const uint8_t* sm = r.data + 4 * (i >> g.group_shift);
      return std::fma(HalfToFloat(sm), q, HalfToFloat(sm + 2));
    }
  }
}

using DI = hn::RebindToSigned<DF>;
using VI = hn::Vec<DI>;

// Lanes of bytes at p (type B: uint8_t or int8_t) widened to int32; a
// Partial part reads only its n bytes.
template <typename B>
HWY_INLINE VI LoadBytes(Full, const uint8_t* p) {
  return hn::PromoteTo(
      DI(), hn::LoadU(hn::Rebind<B, DI>(), reinterpret_cast<const B*>(p)));
}
template <typename B>
HWY_INLINE VI LoadBytes(Partial part, const uint8_t* p) {
  HWY_ALIGN uint8_t buf[HWY_LANES(float)] = {};
  std::memcpy(buf, p, part.n);
  return LoadBytes<B>(Full(), buf);
}

// Codes of elements [i, i + lanes) of a packed row as f32. REQUIRES: the
// lanes lie within one field (Geo::fast).
template <int kBits, class Part>
HWY_INLINE VF LoadCodes(Part part, const uint8_t* codes, size_t i,
                        const Geo& g) {
  const size_t c = i >> g.chunk_shift;
  const size_t rem = i & ((size_t(1) << g.chunk_shift) - 1);
  const size_t field = rem >> g.stripe_shift;
  const size_t j = rem & ((size_t(1) << g.stripe_shift) - 1);
  const VI bytes = LoadBytes<uint8_t>(part, codes + (c << g.stripe_shift) + j);
  const VI mask = hn::Set(DI(), (1 << kBits) - 1);
  // The lowest field needs no shift, the highest no mask.
  VI q;
  if (field == 0) {
    q = hn::And(bytes, mask);
  } else if (field + 1 == size_t(8 / kBits)) {
    q = hn::ShiftRightSame(bytes, int(field) * kBits);
  } else {
    q = hn::And(hn::ShiftRightSame(bytes, int(field) * kBits), mask);
  }
  return hn::ConvertTo(DF(), q);
}

// Elements [i, i + lanes) of a row of type kT (side kS), widened to f32:
// float rows as vectors, quantized ones lane by lane (ElemAt). The path of
// shapes the tile phases cannot take whole (Geo::fast false, or larger
// than their stack buffers).
template <KvType kT, KvSide kS, class Part>
HWY_INLINE VF LoadKv(Part part, const RowRef& r, size_t i, const Geo& g) {
  if constexpr (kT == KvType::kF32) {
    return Load(part, reinterpret_cast<const float*>(r.data) + i);
  } else if constexpr (kT == KvType::kF16) {
    return Load(part, reinterpret_cast<const hwy::float16_t*>(r.data) + i);
  } else if constexpr (kT == KvType::kBF16) {
    return Load(part, reinterpret_cast<const hwy::bfloat16_t*>(r.data) + i);
  } else {
    const DF df;
    HWY_ALIGN float buf[HWY_LANES(float)] = {};
    size_t n = hn::Lanes(df);
    if constexpr (std::is_same_v<Part, Partial>) n = part.n;
    for (size_t l = 0; l < n; ++l) buf[l] = ElemAt<kT, kS>(r, i + l, g);
    return hn::Load(df, buf);
  }
}

// Codes of elements [i, i + lanes) of a quantized row as f32, as stored
// (q8 signed; q4 and KIVI unsigned: q4's offset of 8 is applied by the
// callers). REQUIRES: Geo::fast.
template <KvType kT, class Part>
HWY_INLINE VF LoadCodesOf(Part part, const uint8_t* codes, size_t i,
                          const Geo& g) {
  if constexpr (kT == KvType::kQ8) {
    return hn::ConvertTo(DF(), LoadBytes<int8_t>(part, codes + i));
  } else {
    return LoadCodes<BitsOf(kT)>(part, codes, i, g);
  }
}

// The value a stored code of 0 stands for, in units of the scale: q4 codes
// are offset by 8.
constexpr float CodeOffset(KvType t) {
  return t == KvType::kQ4 || t == KvType::kQ4H ? -8.0f : 0.0f;
}

constexpr bool IsPerTokenQuant(KvType t) {
  return t == KvType::kQ8 || t == KvType::kQ4 || t == KvType::kQ4H;
}

// Per-position group scales and offsets of the n rows of a tile, as f32:
// scale[g * kTile + p], and offset[...] = the min (KIVI values) or
// CodeOffset * scale; 0 for p in [n, kTile).
template <KvType kT>
void TileScales(const RowRef* rows, size_t n, const Geo& g, float* scale,
                float* offset) {
  for (size_t gi = 0; gi < g.n_groups; ++gi) {
    float* sg = scale + gi * kTile;
    float* og = offset + gi * kTile;
    for (size_t p = 0; p < n; ++p) {
      if constexpr (KvIsKivi(kT)) {
        sg[p] = HalfToFloat(rows[p].data + 4 * gi);
        og[p] = HalfToFloat(rows[p].data + 4 * gi + 2);
      } else {
        sg[p] = HalfToFloat(rows[p].data + 2 * gi);
        og[p] = CodeOffset(kT) * sg[p];
      }
    }
    std::fill(sg + n, sg + kTile, 0.0f);
    std::fill(og + n, og + kTile, 0.0f);
  }
}

// ------------------------------------------------------------------ scores
//
// ScoreBlock reads the kPosBlock key rows through a row view: Get(part, j, i)
// is elements [i, i + lanes) of row j as f32.

template <typename T>
struct FloatRows {  // f32, f16, bf16 rows
  const T* row[kPosBlock];
  template <class Part>
  HWY_INLINE VF Get(Part part, size_t j, size_t i) const {
    return Load(part, row[j] + i);
  }
};

template <KvType kT>
struct ScaledRows {  // q8 / q4 rows times their group's scale (per tile)
  const uint8_t* codes[kPosBlock];
  size_t pos[kPosBlock];  // the rows' positions in the tile
  const float* scales;    // TileScales: [n_groups][kTile]
  const Geo* g;
  template <class Part>
  HWY_INLINE VF Get(Part part, size_t j, size_t i) const {
    const size_t at = (i >> g->group_shift) * kTile + pos[j];
    const VF codes_f = LoadCodesOf<kT>(part, codes[j], i, *g);
    if constexpr (CodeOffset(kT) != 0.0f) {  // d * (c - 8) = c * d - 8 d
      return hn::MulAdd(codes_f, hn::Set(DF(), scales[at]),
                        hn::Set(DF(), offsets[at]));
    } else {
      return hn::Mul(codes_f, hn::Set(DF(), scales[at]));
    }
  }
  const float* offsets;  // CodeOffset * scale, as `scales`
};

template <KvType kT>
struct CodeRows {  // KIVI key codes (scales folded into the query)
  const uint8_t* codes[kPosBlock];
  const Geo* g;
  template <class Part>
  HWY_INLINE VF Get(Part part, size_t j, size_t i) const {
    return LoadCodesOf<kT>(part, codes[j], i, *g);
  }
};

template <KvType kT>
struct GenericRows {  // any row, decoded by LoadKv
  RowRef row[kPosBlock];
  const Geo* g;
  template <class Part>
  HWY_INLINE VF Get(Part part, size_t j, size_t i) const {
    return LoadKv<kT, KvSide::kK>(part, row[j], i, *g);
  }
};

// s[r * kTile + j] = scale * dot(q[r], k[j]) for r < kH, j < kPosBlock.
// q: kH rows of [head_dim]; k: a row view of kPosBlock rows.
template <size_t kH, class Rows>
HWY_INLINE void ScoreBlock(const float* const* q, const Rows& k,
                           size_t head_dim, float scale, float* s) {
  VF acc[kH][kPosBlock];
  for (size_t r = 0; r < kH; ++r) {
    for (size_t j = 0; j < kPosBlock; ++j) acc[r][j] = hn::Zero(DF());
  }
  ForEachVector(head_dim, [&](size_t i, auto part) {
    VF kv[kPosBlock];
    for (size_t j = 0; j < kPosBlock; ++j) kv[j] = k.Get(part, j, i);
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
template <size_t kH = kScoreRows, class Rows>
HWY_INLINE void ScoreBlockOf(size_t n_rows, const float* const* q,
                             const Rows& k, size_t head_dim, float scale,
                             float* s) {
  if constexpr (kH > 1) {
    if (n_rows < kH) {
      return ScoreBlockOf<kH - 1>(n_rows, q, k, head_dim, scale, s);
    }
  }
  ScoreBlock<kH>(q, k, head_dim, scale, s);
}

// ScoreBlock for consecutive blocks of rows, blocks[b] rows each (b <
// n_blocks, 0 < blocks[b] <= kScoreRows). s: [rows][kTile].
template <class Rows>
HWY_INLINE void ScoreRows(const size_t* blocks, size_t n_blocks,
                          const float* const* q, const Rows& k, size_t head_dim,
                          float scale, float* s) {
  for (size_t b = 0; b < n_blocks; ++b) {
    ScoreBlockOf(blocks[b], q, k, head_dim, scale, s);
    q += blocks[b];
    s += blocks[b] * kTile;
  }
}

// ScoreBlock for kRows rows in as few blocks as kScoreRows allows, of sizes at
// most one apart. s: [kRows][kTile].
template <size_t kRows, class Rows>
HWY_INLINE void ScoreFixedRows(const float* const* q, const Rows& k,
                               size_t head_dim, float scale, float* s) {
  constexpr size_t kH = kRows / ((kRows + kScoreRows - 1) / kScoreRows);
  ScoreBlock<kH>(q, k, head_dim, scale, s);
  if constexpr (kRows > kH) {
    ScoreFixedRows<kRows - kH>(q + kH, k, head_dim, scale, s + kH * kTile);
  }
}

// The blocks of ScoreRows for n_rows rows: as few as kScoreRows allows, of
// sizes at most one apart. Returns their number.
size_t ScoreBlocks(size_t n_rows, size_t* blocks) {
  const size_t n_blocks = (n_rows + kScoreRows - 1) / kScoreRows;
  for (size_t b = 0, r = 0; b < n_blocks; r += blocks[b++]) {
    blocks[b] = (n_rows - r) / (n_blocks - b);
  }
  return n_blocks;
}

// Largest shapes of the quantized fast paths (kept on the stack): scale
// groups per row, and floats of a folded query (rows x head_dim) or of the
// folded value weights (rows x groups x kTile). Larger shapes take LoadKv.
constexpr size_t kMaxGroups = 16;
constexpr size_t kMaxFolded = 4096;
constexpr size_t kMaxStagedDim = 512;  // head_dim of ScoreTile's staging

// The query rows with a KIVI key run's scales folded in: qs[r] = q[r] *
// scale (elementwise, in `folded`: [n_rows][head_dim]) and row_min[r] =
// score_scale * dot(q[r], min).
void FoldQuery(const float* const* q, size_t n_rows, const uint8_t* run,
               size_t hd, float score_scale, float* folded, float* row_min,
               const float** qs) {
  const auto* params = reinterpret_cast<const hwy::float16_t*>(run);
  for (size_t r = 0; r < n_rows; ++r) {
    float* qr = folded + r * hd;
    VF dot = hn::Zero(DF());
    ForEachVector(hd, [&](size_t i, auto part) {
      const VF qv = Load(part, q[r] + i);
      Store(part, hn::Mul(qv, Load(part, params + i)), qr + i);
      dot = hn::MulAdd(qv, Load(part, params + hd + i), dot);
    });
    row_min[r] = score_scale * hn::GetLane(hn::SumOfLanes(DF(), dot));
    qs[r] = qr;
  }
}

// Scores of n_rows rows against the n positions of a tile: s[r][p] for
// p < n (kTile floats per row; positions past n repeat row n - 1 and are
// dropped by SoftmaxStep). kRows: n_rows if compiled for it, else 0.
//   f32 / f16 / bf16   rows widened as they are loaded;
//   q8 / q4 / q4h      codes times their group's scale (converted once per
//                      tile);
//   KIVI keys          q . (min + scale * code) = (q * scale) . code +
//                      q . min: the query is scaled once per run (block)
//                      and the codes are read bare.
// Rows of a shape whose vectors would span scale groups or code fields
// (Geo::fast false) go through LoadKv lane by lane.
template <size_t kRows, KvType kT>
void ScoreTile(const float* const* q, size_t n_rows, const RowRef* k, size_t n,
               const Geo& g, float scale, float* s) {
  [[maybe_unused]] size_t blocks[kMaxRows];
  [[maybe_unused]] size_t n_blocks = 0;
  if constexpr (kRows == 0) n_blocks = ScoreBlocks(n_rows, blocks);
  const size_t hd = g.head_dim;
  // With more rows than one register block, the kPosBlock rows are widened
  // once into `stage` (the same f32 values the loads give, so the same
  // bits) and every block reads them from there, instead of widening them
  // again per block.
  constexpr bool kWiden = kT != KvType::kF32;
  const bool staged = kWiden && n_rows > kScoreRows && hd <= kMaxStagedDim;
  [[maybe_unused]] HWY_ALIGN float stage[kPosBlock * kMaxStagedDim];
  auto score = [&](const float* const* qr, const auto& rows, float* out) {
    auto blocks_over = [&](const auto& view) {
      if constexpr (kRows == 0) {
        ScoreRows(blocks, n_blocks, qr, view, hd, scale, out);
      } else {
        ScoreFixedRows<kRows>(qr, view, hd, scale, out);
      }
    };
    if (!staged) return blocks_over(rows);
    FloatRows<float> widened;
    for (size_t j = 0; j < kPosBlock; ++j) {
      float* row = stage + j * hd;
      ForEachVector(hd, [&](size_t i, auto part) {
        Store(part, rows.Get(part, j, i), row + i);
      });
      widened.row[j] = row;
    }
    blocks_over(widened);
  };
  auto generic = [&](const size_t* idx, size_t p0) {
    GenericRows<kT> rows;
    rows.g = &g;
    for (size_t j = 0; j < kPosBlock; ++j) rows.row[j] = k[idx[j]];
    score(q, rows, s + p0);
  };
  // Per-tile state of the quantized paths.
  [[maybe_unused]] HWY_ALIGN float scales[kTile * kMaxGroups];
  [[maybe_unused]] HWY_ALIGN float offsets[kTile * kMaxGroups];
  [[maybe_unused]] const uint8_t* folded_run = nullptr;
  [[maybe_unused]] HWY_ALIGN float folded[kMaxFolded];
  [[maybe_unused]] float row_min[kMaxRows];
  [[maybe_unused]] const float* qs[kMaxRows];
  if constexpr (IsPerTokenQuant(kT)) {
    if (g.fast && g.n_groups <= kMaxGroups) {
      TileScales<kT>(k, n, g, scales, offsets);
    }
  }
  for (size_t p0 = 0; p0 < n; p0 += kPosBlock) {
    size_t idx[kPosBlock];
    for (size_t j = 0; j < kPosBlock; ++j) idx[j] = std::min(p0 + j, n - 1);
    if constexpr (KvIsFloat(kT)) {
      using T = std::conditional_t<
          kT == KvType::kF32, float,
          std::conditional_t<kT == KvType::kF16, hwy::float16_t,
                             hwy::bfloat16_t>>;
      FloatRows<T> rows;
      for (size_t j = 0; j < kPosBlock; ++j) {
        rows.row[j] = reinterpret_cast<const T*>(k[idx[j]].data);
      }
      score(q, rows, s + p0);
    } else if constexpr (IsPerTokenQuant(kT)) {
      if (!g.fast || g.n_groups > kMaxGroups) {
        generic(idx, p0);
        continue;
      }
      ScaledRows<kT> rows;
      rows.g = &g;
      rows.scales = scales;
      rows.offsets = offsets;
      for (size_t j = 0; j < kPosBlock; ++j) {
        rows.codes[j] = k[idx[j]].data + 2 * g.n_groups;
        rows.pos[j] = idx[j];
      }
      score(q, rows, s + p0);
    } else if constexpr (KvIsKivi(kT)) {
      if (!g.fast || n_rows * hd > kMaxFolded) {
        generic(idx, p0);
        continue;
      }
      // The positions of a block may come from two runs (blocks of a size
      // that is not a multiple of kPosBlock): each run's positions are
      // scored with that run's folded query, the others computed and
      // dropped (a position's score depends on its own row only).
      for (size_t j0 = 0; j0 < kPosBlock;) {
        const uint8_t* run = k[idx[j0]].params;
        size_t j1 = j0 + 1;
        while (j1 < kPosBlock && k[idx[j1]].params == run) ++j1;
        if (run != folded_run) {
          FoldQuery(q, n_rows, run, hd, scale, folded, row_min, qs);
          folded_run = run;
        }
        CodeRows<kT> rows;
        rows.g = &g;
        for (size_t j = 0; j < kPosBlock; ++j) rows.codes[j] = k[idx[j]].data;
        HWY_ALIGN float part[kMaxRows * kTile];
        float* out = j0 == 0 && j1 == kPosBlock ? s : part;
        score(qs, rows, out + p0);
        for (size_t r = 0; r < n_rows; ++r) {
          for (size_t j = j0; j < j1; ++j) {
            s[r * kTile + p0 + j] = out[r * kTile + p0 + j] + row_min[r];
          }
        }
        j0 = j1;
      }
    }
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

// AccumulateVectors reads the value rows through a view: Get(part, p, i) is
// elements [i, i + lanes) of row p as f32, Weight(r, p, i) the weight of row
// p for output row r at those elements, and Bias(r, i) a term added to the
// output row once per tile (0 where the view has none).

template <typename T>
struct FloatVRows {  // f32, f16, bf16 rows, weights as they are
  const RowRef* v;
  const float* w;  // [rows][kTile]
  static constexpr bool kHasBias = false;
  template <class Part>
  HWY_INLINE VF Get(Part part, size_t p, size_t i) const {
    return Load(part, reinterpret_cast<const T*>(v[p].data) + i);
  }
  HWY_INLINE float Weight(size_t r, size_t p, size_t /*i*/) const {
    return w[r * kTile + p];
  }
  HWY_INLINE float Bias(size_t, size_t) const { return 0.0f; }
};

template <KvType kT>
struct QuantVRows {  // codes, with each row's group scale in its weight
  const RowRef* v;
  const float* w;     // [rows][n_groups][kTile]: weight * scale
  const float* bias;  // [rows][n_groups]: sum of weight * offset
  const Geo* g;
  static constexpr bool kHasBias = KvIsKivi(kT) || CodeOffset(kT) != 0.0f;
  template <class Part>
  HWY_INLINE VF Get(Part part, size_t p, size_t i) const {
    return LoadCodesOf<kT>(part, v[p].data + ScaleBytes<kT, KvSide::kV>(*g), i,
                           *g);
  }
  HWY_INLINE float Weight(size_t r, size_t p, size_t i) const {
    return w[(r * g->n_groups + (i >> g->group_shift)) * kTile + p];
  }
  HWY_INLINE float Bias(size_t r, size_t i) const {
    return bias[r * g->n_groups + (i >> g->group_shift)];
  }
};

template <KvType kT>
struct GenericVRows {  // any row, decoded by LoadKv
  const RowRef* v;
  const float* w;
  const Geo* g;
  static constexpr bool kHasBias = false;
  template <class Part>
  HWY_INLINE VF Get(Part part, size_t p, size_t i) const {
    return LoadKv<kT, KvSide::kV>(part, v[p], i, *g);
  }
  HWY_INLINE float Weight(size_t r, size_t p, size_t /*i*/) const {
    return w[r * kTile + p];
  }
  HWY_INLINE float Bias(size_t, size_t) const { return 0.0f; }
};

// out[r][i + j * Lanes + lane] = corr[r] * out[...] + sum_{p < n} weight *
// v[p][same] (+ bias) for rows r0 + r, r < G, j < kJ: kJ vectors of every
// row in one pass over the positions. out: G rows of [head_dim].
template <size_t G, size_t kJ, class VRows, class Part>
HWY_INLINE void AccumulateVectors(const VRows& v, size_t r0, size_t n,
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
      const VF vv = v.Get(part, p, i + j * lanes);
      for (size_t r = 0; r < G; ++r) {
        acc[j][r] = hn::MulAdd(hn::Set(df, v.Weight(r0 + r, p, i + j * lanes)),
                               vv, acc[j][r]);
      }
    }
  }
  for (size_t j = 0; j < kJ; ++j) {
    for (size_t r = 0; r < G; ++r) {
      if constexpr (VRows::kHasBias) {
        acc[j][r] =
            hn::Add(acc[j][r], hn::Set(df, v.Bias(r0 + r, i + j * lanes)));
      }
      Store(part, acc[j][r], out[r] + i + j * lanes);
    }
  }
}

// out[r] = corr[r] * out[r] + sum_{p < n} weight * v[p] for rows r0 + r,
// r < G, from dim i on, in blocks of kJ vectors, then kJ / 2, ..., then
// single (and partial) vectors.
template <size_t G,
          size_t kJ = std::bit_floor(std::max<size_t>(1, kMinChains / G)),
          class VRows>
HWY_INLINE void AccumulateV(const VRows& v, size_t r0, size_t n,
                            const float* corr, size_t head_dim,
                            float* const* out, size_t i = 0) {
  if constexpr (kJ > 1) {
    const size_t block = kJ * hn::Lanes(DF());
    for (; i + block <= head_dim; i += block) {
      AccumulateVectors<G, kJ>(v, r0, n, corr, out, i, Full());
    }
    AccumulateV<G, kJ / 2>(v, r0, n, corr, head_dim, out, i);
  } else {
    ForEachVector(head_dim - i, [&](size_t di, auto part) {
      AccumulateVectors<G, 1>(v, r0, n, corr, out, i + di, part);
    });
  }
}

// AccumulateV for rows [r0, r0 + n_rows) in blocks of G rows, the rest in
// smaller blocks.
template <size_t G = kValueRows, class VRows>
HWY_INLINE void AccumulateRows(size_t n_rows, const VRows& v, size_t r0,
                               size_t n, const float* corr, size_t head_dim,
                               float* const* out) {
  for (; n_rows >= G; n_rows -= G, r0 += G) {
    AccumulateV<G>(v, r0, n, corr + r0, head_dim, out + r0);
  }
  if constexpr (G > 1) {
    if (n_rows > 0) {
      AccumulateRows<G - 1>(n_rows, v, r0, n, corr, head_dim, out);
    }
  }
}

// The values phase of a tile for n_rows rows (kRows: n_rows if compiled for
// it, else 0): f32 / f16 / bf16 rows widened as loaded; quantized rows read
// as bare codes, each position's group scale folded into its weights and
// its offset (a KIVI value's min, q4's -8 d) into a per-group bias, once per
// tile.
template <size_t kRows, KvType kT>
void AccumulateTile(size_t n_rows, const RowRef* v, size_t n, const float* w,
                    const float* corr, const Geo& g, float* const* out) {
  auto run = [&](const auto& rows) {
    if constexpr (kRows == 0) {
      AccumulateRows(n_rows, rows, 0, n, corr, g.head_dim, out);
    } else {
      AccumulateV<kRows>(rows, 0, n, corr, g.head_dim, out);
    }
  };
  if constexpr (KvIsFloat(kT)) {
    using T =
        std::conditional_t<kT == KvType::kF32, float,
                           std::conditional_t<kT == KvType::kF16,
                                              hwy::float16_t, hwy::bfloat16_t>>;
    run(FloatVRows<T>{v, w});
  } else {
    const size_t ng = g.n_groups;
    if (!g.fast || ng > kMaxGroups || n_rows * ng * kTile > kMaxFolded) {
      return run(GenericVRows<kT>{v, w, &g});
    }
    HWY_ALIGN float scale[kTile * kMaxGroups];  // [ng][kTile]
    HWY_ALIGN float min[kTile * kMaxGroups];    // [ng][kTile]: offsets
    HWY_ALIGN float wq[kMaxFolded];             // [n_rows][ng][kTile]
    float bias[kMaxRows * kMaxGroups];          // [n_rows][ng]
    TileScales<kT>(v, n, g, scale, min);
    // Weights past n are 0 (SoftmaxStep), and so are the scales.
    const DF df;
    for (size_t r = 0; r < n_rows; ++r) {
      for (size_t gi = 0; gi < ng; ++gi) {
        float* wr = wq + (r * ng + gi) * kTile;
        VF b = hn::Zero(df);
        for (size_t p = 0; p < kTile; p += hn::Lanes(df)) {
          const VF wv = hn::Load(df, w + r * kTile + p);
          hn::Store(hn::Mul(wv, hn::Load(df, scale + gi * kTile + p)), df,
                    wr + p);
          if constexpr (QuantVRows<kT>::kHasBias) {
            b = hn::MulAdd(wv, hn::Load(df, min + gi * kTile + p), b);
          }
        }
        if constexpr (QuantVRows<kT>::kHasBias) {
          bias[r * ng + gi] = hn::GetLane(hn::SumOfLanes(df, b));
        }
      }
    }
    run(QuantVRows<kT>{v, wq, bias, &g});
  }
}

// ------------------------------------------------------------------ driver

using ScoreFn = void (*)(const float* const*, size_t, const RowRef*, size_t,
                         const Geo&, float, float*);
using AccumulateFn = void (*)(size_t, const RowRef*, size_t, const float*,
                              const float*, const Geo&, float* const*);

// Per KV type (index) and number of rows (0 = counted at run time, 1 ..
// kMaxGroup compiled), the score and the value phase of a tile.
struct PhaseTables {
  ScoreFn score[kKvTypeCount][kMaxGroup + 1];
  AccumulateFn accumulate[kKvTypeCount][kMaxGroup + 1];
};

template <KvType kT, size_t... kR>
constexpr void FillType(PhaseTables& t, std::index_sequence<kR...>) {
  ((t.score[size_t(kT)][kR] = &ScoreTile<kR, kT>), ...);
  ((t.accumulate[size_t(kT)][kR] = &AccumulateTile<kR, kT>), ...);
}

template <size_t... kT>
constexpr PhaseTables MakeTables(std::index_sequence<kT...>) {
  PhaseTables t{};
  (FillType<KvType(kT)>(t, std::make_index_sequence<kMaxGroup + 1>()), ...);
  return t;
}

constexpr PhaseTables kPhases =
    MakeTables(std::make_index_sequence<kKvTypeCount>());

// Where a run's rows are, per side.
struct RunRows {
  const uint8_t* params;
  const uint8_t* rows;
  size_t row_bytes;
};

RunRows RowsOf(const void* run, KvType t, KvSide side, size_t head_dim) {
  const auto* p = static_cast<const uint8_t*>(run);
  return {p, p + KvRunParamBytes(t, side, head_dim),
          KvRowBytes(t, side, head_dim)};
}

// Walks positions [begin, end) of the runs in tiles of up to kTile that hold
// one (K type, V type) pair each.
class TileCursor {
 public:
  TileCursor(std::span<const KvRun> runs, size_t head_dim, size_t begin,
             size_t end)
      : runs_(runs),
        head_dim_(head_dim),
        left_(end - begin),
        at_(begin),
        pos_(begin) {
    while (run_ < runs_.size() && pos_ >= runs_[run_].n_tokens) {
      pos_ -= runs_[run_].n_tokens;
      ++run_;
    }
  }

  // Points k[p], v[p] at the rows of the next positions, sets the types of
  // the tile and returns how many (0 at the end). A tile ends at the next
  // multiple of kTile or where the types change, whichever comes first: the
  // same tiles whatever position the walk started from.
  size_t Next(RowRef* k, RowRef* v, KvType* k_type, KvType* v_type) {
    size_t n = 0;
    const size_t limit = kTile - at_ % kTile;
    while (n < limit && left_ > 0) {
      KV_CHECK_MSG(run_ < runs_.size(), "n_ctx exceeds the tokens in runs");
      const KvRun& run = runs_[run_];
      if (n == 0) {
        *k_type = run.k_type;
        *v_type = run.v_type;
      } else if (run.k_type != *k_type || run.v_type != *v_type) {
        break;
      }
      const RunRows kr = RowsOf(run.k, run.k_type, KvSide::kK, head_dim_);
      const RunRows vr = RowsOf(run.v, run.v_type, KvSide::kV, head_dim_);
      const size_t take = std::min({limit - n, run.n_tokens - pos_, left_});
      for (size_t j = 0; j < take; ++j, ++n) {
        k[n] = {kr.rows + (pos_ + j) * kr.row_bytes, kr.params};
        v[n] = {vr.rows + (pos_ + j) * vr.row_bytes, vr.params};
      }
      pos_ += take;
      left_ -= take;
      at_ += take;
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
  size_t at_;       // the next position, counted from the first run's start
  size_t run_ = 0;  // current run
  size_t pos_;      // next position within it
};

// Asks for the cache lines of the n rows of `row_bytes` at rows[p].data.
HWY_INLINE void PrefetchRows(const RowRef* rows, size_t n, size_t row_bytes) {
  constexpr size_t kLine = 64;
  for (size_t p = 0; p < n; ++p) {
    for (size_t b = 0; b < row_bytes; b += kLine) {
      hwy::Prefetch(rows[p].data + b);
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
// of the next one are prefetched.
// REQUIRES: begin a multiple of kTile; r0 < r1 <= kMaxRows.
void Walk(Rows& rows, size_t r0, size_t r1, size_t head_dim,
          std::span<const KvRun> runs, size_t begin, size_t end, float scale) {
  const size_t n_rows = r1 - r0;
  const size_t fixed = n_rows <= kMaxGroup ? n_rows : 0;
  const float* const* q = rows.q + r0;
  float* const* out = rows.out + r0;
  float corr[kMaxRows];
  HWY_ALIGN float s[kMaxRows * kTile];  // [n_rows][kTile] scores, then weights
  RowRef k_rows[2][kTile];              // this tile's rows and the next one's
  RowRef v_rows[2][kTile];
  KvType types[2][2];  // [tile][K, V]
  Geo geo[2];          // K, V of the current types
  KvType geo_types[2] = {};
  bool have_geo = false;
  TileCursor cursor(runs, head_dim, begin, end);
  size_t n = cursor.Next(k_rows[0], v_rows[0], &types[0][0], &types[0][1]);
  for (size_t cur = 0; n != 0; cur ^= 1) {
    const size_t nxt = cur ^ 1;
    const size_t n_next =
        cursor.Next(k_rows[nxt], v_rows[nxt], &types[nxt][0], &types[nxt][1]);
    const KvType kt = types[cur][0], vt = types[cur][1];
    if (!have_geo || kt != geo_types[0] || vt != geo_types[1]) {
      geo[0] = MakeGeo(kt, head_dim);
      geo[1] = MakeGeo(vt, head_dim);
      geo_types[0] = kt;
      geo_types[1] = vt;
      have_geo = true;
    }
    if (n_next != 0) {
      PrefetchRows(k_rows[nxt], n_next,
                   KvRowBytes(types[nxt][0], KvSide::kK, head_dim));
      PrefetchRows(v_rows[nxt], n_next,
                   KvRowBytes(types[nxt][1], KvSide::kV, head_dim));
    }
    kPhases.score[size_t(kt)][fixed](q, n_rows, k_rows[cur], n, geo[0], scale,
                                     s);
    SoftmaxStep(n_rows, n, s, rows.state + r0, corr);
    kPhases.accumulate[size_t(vt)][fixed](n_rows, v_rows[cur], n, s, corr,
                                          geo[1], out);
    n = n_next;
  }
}

// Attention of n_tokens tokens x g heads, row j * g + h for (token j, head h)
// (n_tokens * g <= kMaxRows), in one pass over the K/V. Tokens [j0, j1) that
// end at the same position finish together: first every token from j0 on
// takes in the tiles that are whole for all of them (up to n_ctx[j0] rounded
// down to kTile, or to n_ctx[j0] itself when no later token is left), then
// tokens [j0, j1) take their last, partial tile alone.
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
      Walk(rows, j0 * g, n_rows, head_dim, runs, taken, shared, scale);
      taken = shared;
    }
    if (n_ctx[j0] > taken) {
      Walk(rows, j0 * g, j1 * g, head_dim, runs, taken, n_ctx[j0], scale);
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

}  // namespace

// Pass over every block of up to kMaxRows heads and, for each, of as many
// whole tokens as fit beside them.
void AttentionFastTokensImpl(const float* q, size_t q_stride, size_t n_tokens,
                             size_t n_q, size_t head_dim,
                             std::span<const KvRun> runs, const size_t* n_ctx,
                             float scale, float* out, size_t out_stride) {
  for (size_t h0 = 0; h0 < n_q; h0 += kMaxRows) {
    const size_t g = std::min(kMaxRows, n_q - h0);
    const size_t tokens = kMaxRows / g;
    for (size_t j0 = 0; j0 < n_tokens; j0 += tokens) {
      Pass(q + j0 * q_stride + h0 * head_dim, q_stride,
           std::min(tokens, n_tokens - j0), g, head_dim, runs, n_ctx + j0,
           scale, out + j0 * out_stride + h0 * head_dim, out_stride);
    }
  }
}

}  // namespace kvstash::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvstash::kernels {

HWY_EXPORT(AttentionFastTokensImpl);

void AttentionFastTokens(const float* q, size_t q_stride, size_t n_tokens,
                         size_t n_q, size_t head_dim,
                         std::span<const KvRun> runs, const size_t* n_ctx,
                         float scale, float* out, size_t out_stride) {
  for (const KvRun& run : runs) {
    KV_CHECK(KvFormatSupports(run.k_type, head_dim).empty() &&
             KvFormatSupports(run.v_type, head_dim).empty());
  }
  for (size_t j = 0; j < n_tokens; ++j) {
    KV_CHECK(n_ctx[j] > 0 && (j == 0 || n_ctx[j] >= n_ctx[j - 1]));
  }
  HWY_DYNAMIC_DISPATCH(AttentionFastTokensImpl)
  (q, q_stride, n_tokens, n_q, head_dim, runs, n_ctx, scale, out, out_stride);
}

void AttentionFast(const float* q, size_t n_q, size_t head_dim,
                   std::span<const KvRun> runs, size_t n_ctx, float scale,
                   float* out) {
  AttentionFastTokens(q, n_q * head_dim, 1, n_q, head_dim, runs, &n_ctx, scale,
                      out, n_q * head_dim);
}

}  // namespace kvstash::kernels
#endif  // HWY_ONCE
