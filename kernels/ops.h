// Elementwise and row operations of the transformer: RMSNorm, rotary position
// embedding, softmax, SiLU. Scalar references; in-place where noted.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace kvstash::kernels {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]. `out` may alias `x`.
void RmsNorm(const float* x, const float* weight, size_t n, float eps,
             float* out);

enum class RopeStyle {
  kAdjacent,  // rotate pairs (2i, 2i+1): llama / llama2.c ("normal" in ggml)
  kHalves,    // rotate pairs (i, i + rot_dims/2): qwen2 ("neox" in ggml)
};

// The dims (i0, i1) of a head that pair j (0 <= j < rot_dims/2) rotates.
inline std::pair<size_t, size_t> RopePair(RopeStyle style, size_t j,
                                          size_t rot_dims) {
  if (style == RopeStyle::kAdjacent) return {2 * j, 2 * j + 1};
  return {j, j + rot_dims / 2};
}

// How a model stretches its rotation frequencies beyond the context it was
// first trained on (GGUF `<arch>.rope.scaling.*`, `rope_freqs.weight`). With
// theta_j = base^(-2j/rot_dims) the frequency of pair j:
//   kNone:   theta_j;
//   kLinear: theta_j / factor (position interpolation);
//   kYarn:   a blend theta_j * (1 - g_j) / factor + theta_j * g_j, where g_j
//            = 1 for the pairs that turn fast (j <= low), 0 for the slow
//            ones (j >= high) and linear in j between, with low = floor(c(
//            beta_fast)), high = ceil(c(beta_slow)) and c(n) = rot_dims *
//            ln(original_context / (2 pi n)) / (2 ln base) the pair that
//            turns n times over the original context (low at least 0,
//            high at most rot_dims - 1); the rotated values are also scaled by
//            attn_factor * (1 + 0.1 ln factor) (YaRN's attention
//            temperature, applied to q and k alike);
// and then, whatever the kind, divided by freq_factors[j] when given (Llama
// 3.1+: its converter writes them from the model's low/high frequency
// factors). Magnitudes other than YaRN's are attn_factor (1 by default).
struct RopeScaling {
  enum class Kind { kNone, kLinear, kYarn };
  Kind kind = Kind::kNone;
  float factor = 1.0f;
  int original_context = 0;  // kYarn: the context it was trained on
  float beta_fast = 32.0f;   // kYarn: rotations over the original context
  float beta_slow = 1.0f;
  float attn_factor = 1.0f;
  std::vector<float> freq_factors;  // [rot_dims / 2] or empty
  bool active() const { return kind != Kind::kNone || !freq_factors.empty(); }
};

// The angle by which Rope turns pair j at position `pos`: pos times the
// frequency above; without scaling pos * base^(-2j/rot_dims), computed in
// float with std::pow.
float RopeAngle(int pos, size_t j, size_t rot_dims, float base,
                const RopeScaling& scaling = {});

// The factor the rotated values are multiplied by (see RopeScaling).
float RopeMagnitude(const RopeScaling& scaling);

// Rotates the first `rot_dims` dims of each of `n_heads` heads of `x`
// ([n_heads][head_dim], in place) for position `pos`: pair j (0 <= j <
// rot_dims/2) turns by RopeAngle(pos, j, rot_dims, base, scaling) and is
// scaled by RopeMagnitude(scaling).
// REQUIRES: rot_dims even, rot_dims <= head_dim; freq_factors empty or of
// rot_dims / 2 entries.
void Rope(float* x, size_t n_heads, size_t head_dim, size_t rot_dims, int pos,
          float base, RopeStyle style, const RopeScaling& scaling = {});

// x = softmax(x), in place, computed with the maximum subtracted.
// REQUIRES: n > 0.
void Softmax(float* x, size_t n);

// x[i] = silu(x[i]) = x[i] / (1 + exp(-x[i])), in place.
void Silu(float* x, size_t n);

// gate[i] = silu(gate[i]) * up[i], in place (the SwiGLU activation).
void SiluMul(float* gate, const float* up, size_t n);

// y[i] += b[i].
void AddInPlace(float* y, const float* b, size_t n);

}  // namespace kvstash::kernels
