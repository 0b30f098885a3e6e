// Element types of weights and activations, and the conversions between them.
//
// Weight rows are stored in one of eight types. F32/F16/BF16 store one value
// per element; Q8_0 and Q4_0 store blocks of 32 elements with one f16 scale
// each, bit-compatible with the GGUF/ggml block layouts:
//   Q8_0: { f16 d; int8 qs[32]; }            x[i] = d * qs[i]
//   Q4_0: { f16 d; uint8 qs[16]; }           x[i]    = d * ((qs[i] & 0xF) - 8)
//                                            x[i+16] = d * ((qs[i] >> 4) - 8)
// The K-quants (ggml's "k-quants", the types of Q4_K_M and friends) store
// super-blocks of 256 elements made of sub-blocks with small integer scales,
// themselves scaled by f16 super-block factors; also bit-compatible with ggml:
//   Q4_K: sub-block j (32 elements) has a 6-bit scale s_j and min m_j;
//         x = d * s_j * q - dmin * m_j, q a 4-bit unsigned quant.
//   Q5_K: as Q4_K with 5-bit quants (4 low bits in qs, the 5th in qh).
//   Q6_K: sub-block k (16 elements) has an int8 scale s_k;
//         x = d * s_k * (q - 32), q a 6-bit unsigned quant.
// KQuantElem (below) says where each element's bits and scales live. A row
// of a quantized type must hold a whole number of its blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace kvstash::kernels {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kQ8_0,
  kQ4_0,
  kQ4_K,
  kQ5_K,
  kQ6_K
};

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

inline constexpr int kSuperBlock = 256;  // elements per K-quant super-block

// Q4_K and Q5_K pack their eight 6-bit scales s_j and mins m_j into 12 bytes:
// for j < 4, s_j = scales[j] & 63 and m_j = scales[j + 4] & 63; for j >= 4,
// s_j = (scales[j + 4] & 0xF) | (scales[j - 4] >> 6) << 4 and
// m_j = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4.
inline constexpr int kKScaleBytes = 12;

struct BlockQ4_K {
  uint16_t d;     // f16 scale of the sub-block scales
  uint16_t dmin;  // f16 scale of the sub-block mins
  uint8_t scales[kKScaleBytes];
  // Sub-blocks 2i and 2i + 1 share qs[32 i .. 32 i + 31]: element l of 2i in
  // the low nibble of qs[32 i + l], element l of 2i + 1 in the high nibble.
  uint8_t qs[kSuperBlock / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  // The 5th bit of element l of sub-block j is bit j of qh[l].
  uint8_t qh[kSuperBlock / 8];
  uint8_t qs[kSuperBlock / 2];  // the low 4 bits, laid out as in Q4_K
};
static_assert(sizeof(BlockQ5_K) == 176);

struct BlockQ6_K {
  // Element e = 128 h + 32 c + l (h < 2, c < 4, l < 32): its low 4 bits are
  // the low (c < 2) or high (c >= 2) nibble of ql[64 h + 32 (c % 2) + l], its
  // high 2 bits are bits 2c, 2c + 1 of qh[32 h + l]; its scale is
  // scales[e / 16].
  uint8_t ql[kSuperBlock / 2];
  uint8_t qh[kSuperBlock / 4];
  int8_t scales[kSuperBlock / 16];
  uint16_t d;  // f16 scale of the sub-block scales
};
static_assert(sizeof(BlockQ6_K) == 210);

// True for the types stored in 256-element super-blocks.
constexpr bool IsKQuant(DType t) {
  return t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ6_K;
}

// Element e (< 256) of a K-quant super-block in integer form: the element is
// scale * q + offset, where scale = d * sub_scale and offset = -dmin * sub_min
// (Q4_K, Q5_K) or -32 * d * sub_scale (Q6_K). `sub_block` is e / 32 for Q4_K
// and Q5_K, e / 16 for Q6_K.
struct KQuantElem {
  int q;          // 0..15 (Q4_K), 0..31 (Q5_K), 0..63 (Q6_K)
  int sub_scale;  // 0..63, or -128..127 for Q6_K
  int sub_min;    // 0..63; 0 for Q6_K
};
// REQUIRES: IsKQuant(t); `block` points at one super-block of type t.
KQuantElem KQuantElemAt(DType t, const void* block, int e);

// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k".
std::string_view DTypeName(DType t);
// Parses a DTypeName; returns false for an unknown name.
bool ParseDType(std::string_view name, DType* out);

// Elements per storage block (1 for float types, 32 for Q8_0 / Q4_0, 256 for
// the K-quants).
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
// ggml. The K-quants are quantized per sub-block by a search over candidate
// scales with a least-squares fit of scale (and min) for each (the approach
// of ggml's reference quantizers, without importance weights), then the
// sub-block scales are quantized against the super-block's largest and the
// elements re-quantized with the scales as stored.
// REQUIRES: n % DTypeBlockElems(t) == 0; src finite for quantized types.
void QuantizeRow(DType t, const float* src, size_t n, void* dst);
// Decodes one row of `n` elements of type `t` into floats ([n] at `dst`).
// REQUIRES: n % DTypeBlockElems(t) == 0.
void DequantizeRow(DType t, const void* src, size_t n, float* dst);

}  // namespace kvstash::kernels
