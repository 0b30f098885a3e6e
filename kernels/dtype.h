// Element types of weights and activations, and the conversions between them.
//
// Weight rows are stored in one of five types. F32/F16/BF16 store one value per
// element; Q8_0 and Q4_0 store blocks of 32 elements with one f16 scale each,
// bit-compatible with the GGUF/ggml block layouts:
//   Q8_0: { f16 d; int8 qs[32]; }            x[i] = d * qs[i]
//   Q4_0: { f16 d; uint8 qs[16]; }           x[i]    = d * ((qs[i] & 0xF) - 8)
//                                            x[i+16] = d * ((qs[i] >> 4) - 8)
// A row of a quantized type must hold a multiple of 32 elements.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace kvstash::kernels {

enum class DType : uint8_t { kF32, kF16, kBF16, kQ8_0, kQ4_0 };

inline constexpr int kQuantBlock = 32;  // elements per Q8_0 / Q4_0 block

struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[kQuantBlock];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_0 {
  uint16_t d;                   // f16 scale
  uint8_t qs[kQuantBlock / 2];  // element i in the low nibble, i+16 high
};
static_assert(sizeof(BlockQ4_0) == 18);

std::string_view DTypeName(DType t);  // "f32", "f16", "bf16", "q8_0", "q4_0"
// Parses a DTypeName; returns false for an unknown name.
bool ParseDType(std::string_view name, DType* out);

// Elements per storage block (1 for float types, 32 for quantized ones).
size_t DTypeBlockElems(DType t);
// Bytes per storage block.
size_t DTypeBlockBytes(DType t);
// Bytes of a row of `n` elements. REQUIRES: n % DTypeBlockElems(t) == 0.
size_t RowBytes(DType t, size_t n);

// IEEE half <-> float, round-to-nearest-even, with infinities, NaN, subnormals.
float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);

// bfloat16 <-> float; F32ToBF16 rounds to nearest even and keeps NaN a NaN.
inline float BF16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
uint16_t F32ToBF16(float f);

// Encodes `n` floats as one row of type `t` into `dst` (RowBytes(t, n) bytes).
// Quantization follows ggml's reference rounding (Q8_0: d = amax/127,
// q = round(x/d); Q4_0: d = m/-8 where m is the value of largest magnitude,
// q = min(15, trunc(x/d + 8.5))); an all-zero Q4_0 block gets d = -0 as in
// ggml. REQUIRES: n % DTypeBlockElems(t) == 0; src finite for Q8_0 / Q4_0.
void QuantizeRow(DType t, const float* src, size_t n, void* dst);
// Decodes one row of `n` elements of type `t` into floats ([n] at `dst`).
// REQUIRES: n % DTypeBlockElems(t) == 0.
void DequantizeRow(DType t, const void* src, size_t n, float* dst);

}  // namespace kvstash::kernels
