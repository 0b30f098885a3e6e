// Products of a weight matrix with activations. The weight matrix W has `rows`
// rows of `cols` elements, stored row after row in type `wt` (row stride
// RowBytes(wt, cols)), as GGUF stores a tensor with ne0 = cols, ne1 = rows.
// Activations are f32. These are the scalar references: every element is
// computed as a dot product of the dequantized row with x, accumulated in f32
// in element order. Faster versions are tested against them.
#pragma once

#include <cstddef>

#include "kernels/dtype.h"

namespace kvstash::kernels {

// REQUIRES (both): cols % DTypeBlockElems(wt) == 0; y does not overlap x or w.

// y[r] = dot(W[r, :], x)            x: [cols], y: [rows]
void MatVec(DType wt, const void* w, size_t rows, size_t cols, const float* x,
            float* y);

// y[t][r] = dot(W[r, :], x[t, :])   x: [n][cols], y: [n][rows]
void MatMul(DType wt, const void* w, size_t rows, size_t cols, const float* x,
            size_t n, float* y);

}  // namespace kvstash::kernels
