// Highway compiles this file once per CPU target (foreach_target.h) and picks
// one at run time. Each kernel walks its rows with ForEachVector
// (kernels/simd_rows-inl.h) and computes every element with the reference's
// float operations in the reference's order, except where ops_fast.h says.

#include "kernels/ops_fast.h"

#include <cmath>

#include "base/check.h"
#include "kernels/dtype.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/ops_fast.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

// After highway.h: compiled once per target.
#include "hwy/contrib/math/math-inl.h"
#include "kernels/simd_rows-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kvstash::kernels::HWY_NAMESPACE {
namespace {

// x[i] = x[i] * c[i] + x[i ^ 1] * s[i] for i < rot_dims.
void RotateAdjacent(float* x, size_t rot_dims, const float* c, const float* s) {
#if HWY_TARGET == HWY_SCALAR
  for (size_t i = 0; i < rot_dims; i += 2) {
    const float a = x[i];
    const float b = x[i + 1];
    x[i] = a * c[i] + b * s[i];
    x[i + 1] = b * c[i + 1] + a * s[i + 1];
  }
#else
  // Vectors start at even i and hold an even number of lanes, so every pair
  // lies within one vector (also the partial one, rot_dims being even).
  ForEachVector(rot_dims, [&](size_t i, auto part) {
    const VF v = Load(part, x + i);
    const VF rotated = hn::Add(hn::Mul(v, Load(part, c + i)),
                               hn::Mul(hn::Shuffle2301(v), Load(part, s + i)));
    Store(part, rotated, x + i);
  });
#endif
}

// x[i] = x[i] * c[i] + x[i +- half] * s[i] for i < 2 * half.
void RotateHalves(float* x, size_t half, const float* c, const float* s) {
  float* x1 = x + half;
  const float* c1 = c + half;
  const float* s1 = s + half;
  ForEachVector(half, [&](size_t i, auto part) {
    const VF a = Load(part, x + i);
    const VF b = Load(part, x1 + i);
    Store(part,
          hn::Add(hn::Mul(a, Load(part, c + i)), hn::Mul(b, Load(part, s + i))),
          x + i);
    Store(
        part,
        hn::Add(hn::Mul(b, Load(part, c1 + i)), hn::Mul(a, Load(part, s1 + i))),
        x1 + i);
  });
}

}  // namespace

void RmsNormImpl(const float* x, const float* weight, size_t n, float eps,
                 float* out) {
  const DF df;
  VF sum_sq = hn::Zero(df);
  ForEachVector(n, [&](size_t i, auto part) {
    const VF v = Load(part, x + i);
    sum_sq = hn::MulAdd(v, v, sum_sq);
  });
  float ss = hn::GetLane(hn::SumOfLanes(df, sum_sq));
  ss /= static_cast<float>(n);
  ss += eps;
  const VF inv_rms = hn::Set(df, 1.0f / std::sqrt(ss));
  ForEachVector(n, [&](size_t i, auto part) {
    Store(part,
          hn::Mul(Load(part, weight + i), hn::Mul(inv_rms, Load(part, x + i))),
          out + i);
  });
}

void RopeImpl(float* x, size_t n_heads, size_t head_dim, size_t rot_dims,
              RopeStyle style, const float* table) {
  const float* c = table;
  const float* s = table + rot_dims;
  for (size_t h = 0; h < n_heads; ++h) {
    float* head = x + h * head_dim;
    if (style == RopeStyle::kAdjacent) {
      RotateAdjacent(head, rot_dims, c, s);
    } else {
      RotateHalves(head, rot_dims / 2, c, s);
    }
  }
}

void SiluMulImpl(float* gate, const float* up, size_t n) {
  const DF df;
  const VF one = hn::Set(df, 1.0f);
  // Exp is valid up to 104, where it already returns inf as std::exp does.
  const VF exp_max = hn::Set(df, 104.0f);
  ForEachVector(n, [&](size_t i, auto part) {
    const VF g = Load(part, gate + i);
    const VF e = hn::Exp(df, hn::Min(hn::Neg(g), exp_max));
    const VF silu = hn::Mul(g, hn::Div(one, hn::Add(one, e)));
    Store(part, hn::Mul(silu, Load(part, up + i)), gate + i);
  });
}

// Highway emulates f16 conversions on x86 targets without F16C (SSE4,
// SSSE3) and on the scalar target, without infinities, NaN or
// round-to-nearest-even; those targets convert element by element.
#undef KVSTASH_F16_BY_ELEMENT
#if (HWY_ARCH_X86 && HWY_TARGET > HWY_AVX2) || HWY_TARGET == HWY_SCALAR || \
    HWY_TARGET == HWY_EMU128
#define KVSTASH_F16_BY_ELEMENT 1
#else
#define KVSTASH_F16_BY_ELEMENT 0
#endif

void F16RowToF32Impl(const uint16_t* h, size_t n, float* out) {
#if KVSTASH_F16_BY_ELEMENT
  for (size_t i = 0; i < n; ++i) out[i] = F16ToF32(h[i]);
#else
  const auto* p = reinterpret_cast<const hwy::float16_t*>(h);
  ForEachVector(
      n, [&](size_t i, auto part) { Store(part, Load(part, p + i), out + i); });
#endif
}

void F32RowToF16Impl(const float* x, size_t n, uint16_t* out) {
#if KVSTASH_F16_BY_ELEMENT
  for (size_t i = 0; i < n; ++i) out[i] = F32ToF16(x[i]);
#else
  const hn::Rebind<hwy::float16_t, DF> dh;
  auto* p = reinterpret_cast<hwy::float16_t*>(out);
  ForEachVector(n, [&](size_t i, auto part) {
    const auto h = hn::DemoteTo(dh, Load(part, x + i));
    if constexpr (std::is_same_v<decltype(part), Full>) {
      hn::StoreU(h, dh, p + i);
    } else {
      HWY_ALIGN hwy::float16_t buf[HWY_LANES(float)];
      hn::Store(h, dh, buf);
      std::memcpy(p + i, buf, part.n * sizeof(uint16_t));
    }
  });
#endif
}

}  // namespace kvstash::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvstash::kernels {

HWY_EXPORT(RmsNormImpl);
HWY_EXPORT(RopeImpl);
HWY_EXPORT(SiluMulImpl);
HWY_EXPORT(F16RowToF32Impl);
HWY_EXPORT(F32RowToF16Impl);

void RmsNormFast(const float* x, const float* weight, size_t n, float eps,
                 float* out) {
  KV_CHECK(n > 0);
  HWY_DYNAMIC_DISPATCH(RmsNormImpl)(x, weight, n, eps, out);
}

void FillRopeTable(size_t rot_dims, int pos, float base, RopeStyle style,
                   float* table, const RopeScaling& scaling) {
  KV_CHECK(rot_dims % 2 == 0);
  KV_CHECK(scaling.freq_factors.empty() ||
           scaling.freq_factors.size() == rot_dims / 2);
  const float magnitude = RopeMagnitude(scaling);
  float* c = table;
  float* s = table + rot_dims;
  for (size_t j = 0; j < rot_dims / 2; ++j) {
    const float angle = RopeAngle(pos, j, rot_dims, base, scaling);
    const auto [i0, i1] = RopePair(style, j, rot_dims);
    c[i0] = c[i1] = std::cos(angle) * magnitude;
    s[i1] = std::sin(angle) * magnitude;
    s[i0] = -s[i1];
  }
}

void RopeFast(float* x, size_t n_heads, size_t head_dim, size_t rot_dims,
              RopeStyle style, const float* table) {
  KV_CHECK(rot_dims % 2 == 0 && rot_dims <= head_dim);
  HWY_DYNAMIC_DISPATCH(RopeImpl)(x, n_heads, head_dim, rot_dims, style, table);
}

void SiluMulFast(float* gate, const float* up, size_t n) {
  HWY_DYNAMIC_DISPATCH(SiluMulImpl)(gate, up, n);
}

void F16RowToF32Fast(const uint16_t* h, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(F16RowToF32Impl)(h, n, out);
}

void F32RowToF16Fast(const float* x, size_t n, uint16_t* out) {
  HWY_DYNAMIC_DISPATCH(F32RowToF16Impl)(x, n, out);
}

}  // namespace kvstash::kernels
#endif  // HWY_ONCE
