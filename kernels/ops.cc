#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "base/check.h"

namespace kvstash::kernels {
namespace {

// silu(v) written as llama2.c writes it, so that results match it bit for bit.
float SiluOf(float v) { return v * (1.0f / (1.0f + std::exp(-v))); }

}  // namespace

void RmsNorm(const float* x, const float* weight, size_t n, float eps,
             float* out) {
  float ss = 0.0f;
  for (size_t i = 0; i < n; ++i) ss += x[i] * x[i];
  ss /= static_cast<float>(n);
  ss += eps;
  const float inv_rms = 1.0f / std::sqrt(ss);
  for (size_t i = 0; i < n; ++i) out[i] = weight[i] * (inv_rms * x[i]);
}

namespace {

// YaRN's pair that turns `rotations` times over the original context.
float YarnPair(float rotations, size_t rot_dims, float base,
               int original_context) {
  return static_cast<float>(rot_dims) *
         std::log(static_cast<float>(original_context) /
                  (rotations * 2.0f * std::numbers::pi_v<float>)) /
         (2.0f * std::log(base));
}

}  // namespace

float RopeAngle(int pos, size_t j, size_t rot_dims, float base,
                const RopeScaling& scaling) {
  float freq = 1.0f / std::pow(base, static_cast<float>(2 * j) /
                                         static_cast<float>(rot_dims));
  switch (scaling.kind) {
    case RopeScaling::Kind::kNone:
      break;
    case RopeScaling::Kind::kLinear:
      freq /= scaling.factor;
      break;
    case RopeScaling::Kind::kYarn: {
      const float low =
          std::max(0.0f, std::floor(YarnPair(scaling.beta_fast, rot_dims, base,
                                             scaling.original_context)));
      const float high =
          std::min(static_cast<float>(rot_dims - 1),
                   std::ceil(YarnPair(scaling.beta_slow, rot_dims, base,
                                      scaling.original_context)));
      const float ramp = std::clamp(
          (static_cast<float>(j) - low) / std::max(0.001f, high - low), 0.0f,
          1.0f);
      const float extrapolated = 1.0f - ramp;  // g_j
      freq =
          freq * (1.0f - extrapolated) / scaling.factor + freq * extrapolated;
      break;
    }
  }
  if (!scaling.freq_factors.empty()) freq /= scaling.freq_factors[j];
  return static_cast<float>(pos) * freq;
}

float RopeMagnitude(const RopeScaling& scaling) {
  if (scaling.kind == RopeScaling::Kind::kYarn && scaling.factor > 1.0f) {
    return scaling.attn_factor * (1.0f + 0.1f * std::log(scaling.factor));
  }
  return scaling.attn_factor;
}

void Rope(float* x, size_t n_heads, size_t head_dim, size_t rot_dims, int pos,
          float base, RopeStyle style, const RopeScaling& scaling) {
  KV_CHECK(rot_dims % 2 == 0 && rot_dims <= head_dim);
  KV_CHECK(scaling.freq_factors.empty() ||
           scaling.freq_factors.size() == rot_dims / 2);
  const size_t half = rot_dims / 2;
  const float magnitude = RopeMagnitude(scaling);
  for (size_t j = 0; j < half; ++j) {
    const float val = RopeAngle(pos, j, rot_dims, base, scaling);
    const float fcr = std::cos(val) * magnitude;
    const float fci = std::sin(val) * magnitude;
    const auto [i0, i1] = RopePair(style, j, rot_dims);
    for (size_t h = 0; h < n_heads; ++h) {
      float* head = x + h * head_dim;
      const float v0 = head[i0];
      const float v1 = head[i1];
      head[i0] = v0 * fcr - v1 * fci;
      head[i1] = v0 * fci + v1 * fcr;
    }
  }
}

void Softmax(float* x, size_t n) {
  KV_DCHECK(n > 0);
  const float max = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  for (size_t i = 0; i < n; ++i) x[i] /= sum;
}

void Silu(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = SiluOf(x[i]);
}

void SiluMul(float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) gate[i] = SiluOf(gate[i]) * up[i];
}

void AddInPlace(float* y, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += b[i];
}

}  // namespace kvstash::kernels
