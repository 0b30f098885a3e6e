// Internals of the kernels module shared by dtype.cc and matmul.cc; not part
// of the public contract.
#pragma once

#include <cstddef>

#include "kernels/dtype.h"

namespace kvstash::kernels::internal {

// Decodes elements [begin, begin + count) of one row of type `t` into `out`
// ([count] floats). Quantized blocks are decoded whole, one at a time.
// REQUIRES: begin % DTypeBlockElems(t) == 0 and count % DTypeBlockElems(t) ==
// 0.
void DecodeElems(DType t, const void* row, size_t begin, size_t count,
                 float* out);

// One K-quant super-block (IsKQuant(t)): 256 floats to `block`, and back.
void QuantizeKQuantBlock(DType t, const float* x, void* block);
void DequantizeKQuantBlock(DType t, const void* block, float* out);

}  // namespace kvstash::kernels::internal
