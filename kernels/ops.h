// Elementwise and row operations of the transformer: RMSNorm, rotary position
// embedding, softmax, SiLU. Scalar references; in-place where noted.
#pragma once

#include <cstddef>
#include <utility>

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

// The angle by which Rope turns pair j at position `pos`:
// pos * base^(-2j/rot_dims), computed in float with std::pow.
float RopeAngle(int pos, size_t j, size_t rot_dims, float base);

// Rotates the first `rot_dims` dims of each of `n_heads` heads of `x`
// ([n_heads][head_dim], in place) for position `pos`: pair j (0 <= j <
// rot_dims/2) turns by RopeAngle(pos, j, rot_dims, base).
// REQUIRES: rot_dims even, rot_dims <= head_dim.
void Rope(float* x, size_t n_heads, size_t head_dim, size_t rot_dims, int pos,
          float base, RopeStyle style);

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
