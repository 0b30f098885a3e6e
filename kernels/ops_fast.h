// Fast elementwise operations: the SIMD counterparts of RmsNorm, Rope and
// SiluMul (kernels/ops.h), chosen at run time for the CPU (Highway). AddInPlace
// has no fast version: the compiler vectorizes the reference.
//
// Accuracy against the references:
//   RmsNormFast: the sum of squares in another order; relative error of each
//     output <= (n + 8) * 2^-24 more than the reference's.
//   RopeFast: bit-identical to Rope (the same float operations: products
//     rounded, then added; ops_fast.cc is built with -ffp-contract=off).
//   SiluMulFast: exp from Highway (<= 1 ulp off std::exp); relative error
//     <= 8 * 2^-24 more than the reference's. Where exp(-x) overflows (x below
//     about -88.7) both give -0 or a value below 1e-36 in magnitude.
//   F16RowToF32Fast, F32RowToF16Fast: bit-identical to F16ToF32 / F32ToF16
//     (kernels/dtype.h) element by element (exact widening; narrowing rounds
//     to nearest even, with infinities, NaN and subnormals).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace kvstash::kernels {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]. `out` may alias `x`.
// REQUIRES: n > 0.
void RmsNormFast(const float* x, const float* weight, size_t n, float eps,
                 float* out);

// Floats of the table FillRopeTable writes for `rot_dims` rotated dims.
inline size_t RopeTableFloats(size_t rot_dims) { return 2 * rot_dims; }

// The rotation of position `pos` as RopeFast applies it, with the angles
// computed exactly as Rope computes them (RopeAngle, std::cos, std::sin,
// times RopeMagnitude).
// Every rotated dim i gets out[i] = x[i] * c[i] + x[partner(i)] * s[i]:
// table = [c: rot_dims][s: rot_dims], where pair j = (i0, i1) of `style` has
// c[i0] = c[i1] = cos(angle_j), s[i0] = -sin(angle_j), s[i1] = sin(angle_j).
// One table serves every head and every layer of that position.
// REQUIRES: rot_dims even; table holds RopeTableFloats(rot_dims) floats.
void FillRopeTable(size_t rot_dims, int pos, float base, RopeStyle style,
                   float* table, const RopeScaling& scaling = {});

// Rope(x, n_heads, head_dim, rot_dims, pos, base, style, scaling) with
// `table` filled by FillRopeTable(rot_dims, pos, base, style, table,
// scaling). x: [n_heads][head_dim],
// in place. REQUIRES: rot_dims even, rot_dims <= head_dim.
void RopeFast(float* x, size_t n_heads, size_t head_dim, size_t rot_dims,
              RopeStyle style, const float* table);

// gate[i] = silu(gate[i]) * up[i], in place.
void SiluMulFast(float* gate, const float* up, size_t n);

// IEEE half rows to and from f32 (the f16 KV type's rows), n elements.
void F16RowToF32Fast(const uint16_t* h, size_t n, float* out);
void F32RowToF16Fast(const float* x, size_t n, uint16_t* out);

}  // namespace kvstash::kernels
