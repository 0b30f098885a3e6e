// Per-target helpers of the Highway kernels for f32 rows of any length: a row
// is walked as whole vectors and, at the end, one partial vector that is
// staged through a zeroed buffer so that nothing past the row is touched.
// Include after hwy/highway.h in a file compiled once per target
// (foreach_target.h); defines its contents in kvstash::kernels::HWY_NAMESPACE.

// Per-target include guard, toggled by foreach_target.h.
#if defined(KVSTASH_KERNELS_SIMD_ROWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVSTASH_KERNELS_SIMD_ROWS_INL_H_
#undef KVSTASH_KERNELS_SIMD_ROWS_INL_H_
#else
#define KVSTASH_KERNELS_SIMD_ROWS_INL_H_
#endif

#include <cstddef>
#include <cstring>
#include <type_traits>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace kvstash::kernels::HWY_NAMESPACE {

namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Lanes [0, Lanes(DF())) of a row.
struct Full {};
// Lanes [0, n) of a row, n < Lanes(DF()); the others read as 0 and are not
// stored.
struct Partial {
  size_t n;
};

// Calls fn(i, part) with part a Full or Partial for the vectors starting at
// i = 0, Lanes, 2 Lanes, ... that cover [0, dim).
template <class Fn>
HWY_INLINE void ForEachVector(size_t dim, const Fn& fn) {
  const size_t lanes = hn::Lanes(DF());
  size_t i = 0;
  for (; i + lanes <= dim; i += lanes) fn(i, Full());
  if (i < dim) fn(i, Partial{dim - i});
}

// Elements of type T (float, hwy::float16_t, hwy::bfloat16_t) at p, widened
// to f32: f16 with PromoteTo (F16C where present), bf16 by a shift.
template <typename T>
HWY_INLINE VF Load(Full, const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(DF(), p);
  } else {
    return hn::PromoteTo(DF(), hn::LoadU(hn::Rebind<T, DF>(), p));
  }
}

template <typename T>
HWY_INLINE VF Load(Partial part, const T* p) {
  HWY_ALIGN T buf[HWY_LANES(float)] = {};
  std::memcpy(buf, p, part.n * sizeof(T));
  return Load(Full(), buf);
}

HWY_INLINE void Store(Full, VF v, float* p) { hn::StoreU(v, DF(), p); }

HWY_INLINE void Store(Partial part, VF v, float* p) {
  HWY_ALIGN float buf[HWY_LANES(float)];
  hn::Store(v, DF(), buf);
  std::memcpy(p, buf, part.n * sizeof(float));
}

}  // namespace kvstash::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
