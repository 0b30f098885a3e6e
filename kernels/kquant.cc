// The K-quant super-blocks (Q4_K, Q5_K, Q6_K; layouts in dtype.h): where each
// element's bits live, decoding as ggml decodes, and a quantizer.
//
// Quantizing is done in two levels. Each sub-block first gets a float scale
// (and, for Q4_K / Q5_K, a min) from a small search: for a handful of
// candidate scales around the range's, the elements are rounded to the
// integer grid and the best scale (and min) for those integers is fitted by
// least squares; the fit with the smallest squared error wins. The sub-block
// scales are then stored as integers against the super-block's f16 factors,
// and the elements are rounded again with the scales exactly as stored, so
// that what decodes is the nearest grid point of the stored scale.

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "base/check.h"
#include "kernels/dtype.h"
#include "kernels/dtype_internal.h"

namespace kvstash::kernels {
namespace {

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block.
void ScaleMin(const uint8_t* scales, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = (scales[j + 4] & 0xF) | (scales[j - 4] >> 6) << 4;
    *min = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4;
  }
}

// The inverse of ScaleMin for all eight sub-blocks.
void PackScaleMins(const int (&scale)[8], const int (&min)[8],
                   uint8_t* scales) {
  std::fill(scales, scales + kKScaleBytes, uint8_t{0});
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales[j] |= static_cast<uint8_t>(scale[j]);
      scales[j + 4] |= static_cast<uint8_t>(min[j]);
    } else {
      scales[j + 4] =
          static_cast<uint8_t>((scale[j] & 0xF) | (min[j] & 0xF) << 4);
      scales[j - 4] |= static_cast<uint8_t>((scale[j] >> 4) << 6);
      scales[j] |= static_cast<uint8_t>((min[j] >> 4) << 6);
    }
  }
}

int RoundClamp(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::nearbyint(v)), lo, hi);
}

// Sub-block fit x ~ scale * q - min with q in [0, nmax] and min >= 0 (the
// sub-block's minimum is clamped to at most 0, so that min >= 0 as stored).
struct AffineFit {
  float scale = 0.0f;
  float min = 0.0f;
};

AffineFit FitAffine(const float* x, int n, int nmax) {
  float lo = std::min(0.0f, *std::min_element(x, x + n));
  const float hi = *std::max_element(x, x + n);
  if (hi <= lo) return {0.0f, -lo};
  AffineFit best{(hi - lo) / nmax, -lo};
  float best_err = INFINITY;
  for (int step = -4; step <= 8; ++step) {
    const float inv = (nmax + 0.1f * step) / (hi - lo);
    // Least squares of x = a q + b over the rounded q, b clamped to <= 0.
    double sq = 0, sqq = 0, sx = 0, sxq = 0;
    int q[kSuperBlock / 8];
    for (int i = 0; i < n; ++i) {
      q[i] = RoundClamp((x[i] - lo) * inv, 0, nmax);
      sq += q[i];
      sqq += double(q[i]) * q[i];
      sx += x[i];
      sxq += double(x[i]) * q[i];
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) continue;
    double a = (n * sxq - sq * sx) / det;
    double b = (sqq * sx - sq * sxq) / det;
    if (b > 0) {  // the fit wants a positive offset: refit with b = 0
      b = 0;
      a = sqq > 0 ? sxq / sqq : 0;
    }
    if (a <= 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = a * q[i] + b - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = static_cast<float>(err);
      best = {static_cast<float>(a), static_cast<float>(-b)};
    }
  }
  return best;
}

// Sub-block fit x ~ scale * q with q in [-nmax, nmax - 1] (Q6_K: nmax 32);
// the scale has the sign that lets the value of largest magnitude use -nmax.
float FitSymmetric(const float* x, int n, int nmax) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax == 0.0f) return 0.0f;
  float best = max / -nmax;
  float best_err = INFINITY;
  for (int step = -9; step <= 9; ++step) {
    const float inv = -(nmax + 0.1f * step) / max;
    double sxq = 0, sqq = 0;
    int q[16];
    for (int i = 0; i < n; ++i) {
      q[i] = RoundClamp(x[i] * inv, -nmax, nmax - 1);
      sxq += double(x[i]) * q[i];
      sqq += double(q[i]) * q[i];
    }
    if (sqq == 0) continue;
    const double a = sxq / sqq;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const double e = a * q[i] - x[i];
      err += e * e;
    }
    if (err < best_err) {
      best_err = static_cast<float>(err);
      best = static_cast<float>(a);
    }
  }
  return best;
}

// Q4_K (nmax 15) or Q5_K (nmax 31): the f16 factors, integer scales and mins,
// and the 256 quants in element order.
template <typename Block>
void QuantizeAffine(const float* x, int nmax, Block* b, uint8_t (&q)[256]) {
  AffineFit fit[8];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    fit[j] = FitAffine(x + 32 * j, 32, nmax);
    max_scale = std::max(max_scale, fit[j].scale);
    max_min = std::max(max_min, fit[j].min);
  }
  const float d = max_scale / 63.0f;
  const float dmin = max_min / 63.0f;
  int scale[8], min[8];
  for (int j = 0; j < 8; ++j) {
    scale[j] = d > 0 ? RoundClamp(fit[j].scale / d, 0, 63) : 0;
    min[j] = dmin > 0 ? RoundClamp(fit[j].min / dmin, 0, 63) : 0;
  }
  b->d = F32ToF16(d);
  b->dmin = F32ToF16(dmin);
  PackScaleMins(scale, min, b->scales);
  const float d_stored = F16ToF32(b->d);
  const float dmin_stored = F16ToF32(b->dmin);
  for (int j = 0; j < 8; ++j) {
    const float ds = d_stored * scale[j];
    const float dm = dmin_stored * min[j];
    for (int i = 0; i < 32; ++i) {
      q[32 * j + i] = static_cast<uint8_t>(
          ds != 0.0f ? RoundClamp((x[32 * j + i] + dm) / ds, 0, nmax) : 0);
    }
  }
}

void Quantize(const float* x, BlockQ4_K* b) {
  uint8_t q[256];
  QuantizeAffine(x, 15, b, q);
  for (int i = 0; i < 4; ++i) {
    for (int l = 0; l < 32; ++l) {
      b->qs[32 * i + l] =
          static_cast<uint8_t>(q[64 * i + l] | q[64 * i + 32 + l] << 4);
    }
  }
}

void Quantize(const float* x, BlockQ5_K* b) {
  uint8_t q[256];
  QuantizeAffine(x, 31, b, q);
  std::fill(std::begin(b->qh), std::end(b->qh), uint8_t{0});
  for (int i = 0; i < 4; ++i) {
    for (int l = 0; l < 32; ++l) {
      const int lo = q[64 * i + l], hi = q[64 * i + 32 + l];
      b->qs[32 * i + l] = static_cast<uint8_t>((lo & 0xF) | (hi & 0xF) << 4);
      b->qh[l] |=
          static_cast<uint8_t>((lo >> 4) << (2 * i) | (hi >> 4) << (2 * i + 1));
    }
  }
}

void Quantize(const float* x, BlockQ6_K* b) {
  float fit[16];
  float amax = 0.0f, max = 0.0f;
  for (int k = 0; k < 16; ++k) {
    fit[k] = FitSymmetric(x + 16 * k, 16, 32);
    if (std::fabs(fit[k]) > amax) {
      amax = std::fabs(fit[k]);
      max = fit[k];
    }
  }
  // The largest sub-block scale maps to -128 (as ggml stores it).
  const float d = max / -128.0f;
  b->d = F32ToF16(d);
  const float d_stored = F16ToF32(b->d);
  uint8_t q[256];
  for (int k = 0; k < 16; ++k) {
    const int s = d != 0.0f ? RoundClamp(fit[k] / d, -128, 127) : 0;
    b->scales[k] = static_cast<int8_t>(s);
    const float ds = d_stored * s;
    for (int i = 0; i < 16; ++i) {
      q[16 * k + i] = static_cast<uint8_t>(
          ds != 0.0f ? RoundClamp(x[16 * k + i] / ds, -32, 31) + 32 : 32);
    }
  }
  std::fill(std::begin(b->qh), std::end(b->qh), uint8_t{0});
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t* e = q + 128 * h + l;  // e[32 c] is element c of the four
      b->ql[64 * h + l] =
          static_cast<uint8_t>((e[0] & 0xF) | (e[64] & 0xF) << 4);
      b->ql[64 * h + 32 + l] =
          static_cast<uint8_t>((e[32] & 0xF) | (e[96] & 0xF) << 4);
      b->qh[32 * h + l] =
          static_cast<uint8_t>(e[0] >> 4 | (e[32] >> 4) << 2 |
                               (e[64] >> 4) << 4 | (e[96] >> 4) << 6);
    }
  }
}

}  // namespace

KQuantElem KQuantElemAt(DType t, const void* block, int e) {
  KV_CHECK(e >= 0 && e < kSuperBlock);
  KQuantElem out{};
  switch (t) {
    case DType::kQ4_K:
    case DType::kQ5_K: {
      // Q4_K and Q5_K share the header and the low-bit layout.
      const auto* b = static_cast<const BlockQ4_K*>(block);
      const int j = e / 32, l = e % 32;
      ScaleMin(b->scales, j, &out.sub_scale, &out.sub_min);
      const uint8_t* qs =
          t == DType::kQ4_K ? b->qs : static_cast<const BlockQ5_K*>(block)->qs;
      const uint8_t byte = qs[32 * (j / 2) + l];
      out.q = j % 2 == 0 ? byte & 0xF : byte >> 4;
      if (t == DType::kQ5_K) {
        const uint8_t qh = static_cast<const BlockQ5_K*>(block)->qh[l];
        out.q |= (qh >> j & 1) << 4;
      }
      return out;
    }
    case DType::kQ6_K: {
      const auto* b = static_cast<const BlockQ6_K*>(block);
      const int h = e / 128, c = e % 128 / 32, l = e % 32;
      const uint8_t low = b->ql[64 * h + 32 * (c % 2) + l];
      const int nibble = c < 2 ? low & 0xF : low >> 4;
      out.q = nibble | (b->qh[32 * h + l] >> (2 * c) & 3) << 4;
      out.sub_scale = b->scales[e / 16];
      return out;
    }
    default:
      KV_CHECK_MSG(false, "not a K-quant type");
  }
  return out;
}

namespace internal {

void QuantizeKQuantBlock(DType t, const float* x, void* block) {
  switch (t) {
    case DType::kQ4_K:
      return Quantize(x, static_cast<BlockQ4_K*>(block));
    case DType::kQ5_K:
      return Quantize(x, static_cast<BlockQ5_K*>(block));
    case DType::kQ6_K:
      return Quantize(x, static_cast<BlockQ6_K*>(block));
    default:
      KV_CHECK_MSG(false, "not a K-quant type");
  }
}

// As ggml's dequantize_row_q{4,5,6}_K: x = (d * s) * q - (dmin * m) for Q4_K
// and Q5_K, x = d * s * (q - 32) for Q6_K, in float.
void DequantizeKQuantBlock(DType t, const void* block, float* out) {
  if (t == DType::kQ6_K) {
    const float d = F16ToF32(static_cast<const BlockQ6_K*>(block)->d);
    for (int e = 0; e < kSuperBlock; ++e) {
      const KQuantElem q = KQuantElemAt(t, block, e);
      out[e] =
          d * static_cast<float>(q.sub_scale) * static_cast<float>(q.q - 32);
    }
    return;
  }
  const auto* b = static_cast<const BlockQ4_K*>(block);
  const float d = F16ToF32(b->d), dmin = F16ToF32(b->dmin);
  for (int e = 0; e < kSuperBlock; ++e) {
    const KQuantElem q = KQuantElemAt(t, block, e);
    const float scale = d * static_cast<float>(q.sub_scale);
    const float min = dmin * static_cast<float>(q.sub_min);
    out[e] = scale * static_cast<float>(q.q) - min;
  }
}

}  // namespace internal
}  // namespace kvstash::kernels
