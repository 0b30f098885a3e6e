#include "kernels/dtype.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <iterator>

#include "base/check.h"
#include "kernels/dtype_internal.h"

namespace kvstash::kernels {
namespace {

struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t block_elems;
  size_t block_bytes;
};

// Indexed by the enum value.
constexpr DTypeInfo kDTypes[] = {
    {DType::kF32, "f32", 1, sizeof(float)},
    {DType::kF16, "f16", 1, sizeof(uint16_t)},
    {DType::kBF16, "bf16", 1, sizeof(uint16_t)},
    {DType::kQ8_0, "q8_0", kQuantBlock, sizeof(BlockQ8_0)},
    {DType::kQ4_0, "q4_0", kQuantBlock, sizeof(BlockQ4_0)},
    {DType::kQ4_K, "q4_k", kSuperBlock, sizeof(BlockQ4_K)},
    {DType::kQ5_K, "q5_k", kSuperBlock, sizeof(BlockQ5_K)},
    {DType::kQ6_K, "q6_k", kSuperBlock, sizeof(BlockQ6_K)},
};

constexpr bool TableMatchesEnum() {
  for (size_t i = 0; i < std::size(kDTypes); ++i) {
    if (static_cast<size_t>(kDTypes[i].type) != i) return false;
  }
  return true;
}
static_assert(TableMatchesEnum());

const DTypeInfo& Info(DType t) {
  const auto i = static_cast<size_t>(t);
  KV_CHECK(i < std::size(kDTypes));
  return kDTypes[i];
}

// ggml's quantize_row_q8_0_ref for one block of 32 values.
void QuantizeBlock(const float* x, BlockQ8_0* b) {
  float amax = 0.0f;
  for (int j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b->d = F32ToF16(d);
  for (int j = 0; j < kQuantBlock; ++j) {
    b->qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  }
}

// ggml's quantize_row_q4_0_ref for one block of 32 values.
void QuantizeBlock(const float* x, BlockQ4_0* b) {
  float amax = 0.0f;
  float max = 0.0f;  // the value of largest magnitude, sign kept
  for (int j = 0; j < kQuantBlock; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b->d = F32ToF16(d);
  // x * id lies in [-8, 8], so the truncation below stays within int8_t.
  auto quantize = [id](float v) {
    return std::min(15, static_cast<int>(static_cast<int8_t>(v * id + 8.5f)));
  };
  constexpr int kHalf = kQuantBlock / 2;
  for (int j = 0; j < kHalf; ++j) {
    b->qs[j] =
        static_cast<uint8_t>(quantize(x[j]) | quantize(x[j + kHalf]) << 4);
  }
}

void DequantizeBlock(const BlockQ8_0& b, float* out) {
  const float d = F16ToF32(b.d);
  for (int j = 0; j < kQuantBlock; ++j) out[j] = d * b.qs[j];
}

void DequantizeBlock(const BlockQ4_0& b, float* out) {
  const float d = F16ToF32(b.d);
  constexpr int kHalf = kQuantBlock / 2;
  for (int j = 0; j < kHalf; ++j) {
    out[j] = d * ((b.qs[j] & 0xF) - 8);
    out[j + kHalf] = d * ((b.qs[j] >> 4) - 8);
  }
}

template <typename Block>
void QuantizeBlocks(const float* src, size_t n, void* dst) {
  auto* blocks = static_cast<Block*>(dst);
  for (size_t i = 0; i < n / kQuantBlock; ++i) {
    QuantizeBlock(src + i * kQuantBlock, &blocks[i]);
  }
}

// Decodes `count` elements starting at block-aligned element `begin`.
template <typename Block>
void DequantizeBlocks(const void* row, size_t begin, size_t count, float* out) {
  const auto* blocks = static_cast<const Block*>(row) + begin / kQuantBlock;
  for (size_t i = 0; i < count / kQuantBlock; ++i) {
    DequantizeBlock(blocks[i], out + i * kQuantBlock);
  }
}

}  // namespace

std::string_view DTypeName(DType t) { return Info(t).name; }

bool ParseDType(std::string_view name, DType* out) {
  for (const DTypeInfo& info : kDTypes) {
    if (info.name == name) {
      *out = info.type;
      return true;
    }
  }
  return false;
}

size_t DTypeBlockElems(DType t) { return Info(t).block_elems; }

size_t DTypeBlockBytes(DType t) { return Info(t).block_bytes; }

size_t RowBytes(DType t, size_t n) {
  const DTypeInfo& info = Info(t);
  KV_CHECK(n % info.block_elems == 0);
  return n / info.block_elems * info.block_bytes;
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  const uint32_t mant = h & 0x3FF;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    const float magnitude = static_cast<float>(mant) * 0x1p-24f;
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exp == 0x1F) {
    // Infinity, or NaN with its payload kept.
    return std::bit_cast<float>(sign | 0x7F800000u | mant << 13);
  }
  // Normal: rebias the exponent from 15 to 127.
  return std::bit_cast<float>(sign | (exp + 112) << 23 | mant << 13);
}

uint16_t F32ToF16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const uint32_t abs = bits & 0x7FFFFFFF;
  if (abs > 0x7F800000) {
    // NaN: keep the top of the payload and set the quiet bit.
    return static_cast<uint16_t>(sign | 0x7E00 | ((abs >> 13) & 0x3FF));
  }
  if (abs >= 0x477FF000) {
    // Infinity, or at least 65520 (halfway from 65504 up), which rounds to it.
    return static_cast<uint16_t>(sign | 0x7C00);
  }
  if (abs >= 0x38800000) {
    // Normal half (>= 2^-14). Round the 13 dropped bits to nearest even; a
    // carry out of the mantissa correctly bumps the exponent. 0x38000000
    // rebiases the exponent from 127 to 15.
    const uint32_t rounded = abs + 0xFFF + ((abs >> 13) & 1);
    return static_cast<uint16_t>(sign | (rounded - 0x38000000) >> 13);
  }
  // Subnormal half (or zero): the result is round(|f| * 2^24), where |f| =
  // mant24 * 2^(exp - 150).
  const int exp = static_cast<int>(abs >> 23);
  const int shift = 126 - exp;  // |f| * 2^24 = mant24 >> shift
  if (shift > 24) return static_cast<uint16_t>(sign);  // below 2^-25: to 0
  const uint32_t mant24 = (abs & 0x7FFFFF) | 0x800000;
  uint32_t q = mant24 >> shift;
  const uint32_t rem = mant24 & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1) != 0)) ++q;
  return static_cast<uint16_t>(sign | q);
}

uint16_t F32ToBF16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7FFFFFFF) > 0x7F800000) {
    // NaN: truncating could clear all payload bits, so force the quiet bit.
    return static_cast<uint16_t>((bits >> 16) | 0x0040);
  }
  const uint32_t rounded = bits + 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(rounded >> 16);
}

void QuantizeRow(DType t, const float* src, size_t n, void* dst) {
  KV_CHECK(n % DTypeBlockElems(t) == 0);
  switch (t) {
    case DType::kF32:
      std::copy_n(src, n, static_cast<float*>(dst));
      return;
    case DType::kF16:
      std::transform(src, src + n, static_cast<uint16_t*>(dst), F32ToF16);
      return;
    case DType::kBF16:
      std::transform(src, src + n, static_cast<uint16_t*>(dst), F32ToBF16);
      return;
    case DType::kQ8_0:
      QuantizeBlocks<BlockQ8_0>(src, n, dst);
      return;
    case DType::kQ4_0:
      QuantizeBlocks<BlockQ4_0>(src, n, dst);
      return;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: {
      auto* out = static_cast<uint8_t*>(dst);
      const size_t bytes = DTypeBlockBytes(t);
      for (size_t i = 0; i < n / kSuperBlock; ++i) {
        internal::QuantizeKQuantBlock(t, src + i * kSuperBlock,
                                      out + i * bytes);
      }
      return;
    }
  }
  KV_CHECK_MSG(false, "unknown DType");
}

void DequantizeRow(DType t, const void* src, size_t n, float* dst) {
  KV_CHECK(n % DTypeBlockElems(t) == 0);
  internal::DecodeElems(t, src, 0, n, dst);
}

namespace internal {

void DecodeElems(DType t, const void* row, size_t begin, size_t count,
                 float* out) {
  switch (t) {
    case DType::kF32:
      std::copy_n(static_cast<const float*>(row) + begin, count, out);
      return;
    case DType::kF16: {
      const uint16_t* h = static_cast<const uint16_t*>(row) + begin;
      std::transform(h, h + count, out, F16ToF32);
      return;
    }
    case DType::kBF16: {
      const uint16_t* h = static_cast<const uint16_t*>(row) + begin;
      std::transform(h, h + count, out, BF16ToF32);
      return;
    }
    case DType::kQ8_0:
      DequantizeBlocks<BlockQ8_0>(row, begin, count, out);
      return;
    case DType::kQ4_0:
      DequantizeBlocks<BlockQ4_0>(row, begin, count, out);
      return;
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: {
      const size_t bytes = DTypeBlockBytes(t);
      const auto* blocks =
          static_cast<const uint8_t*>(row) + begin / kSuperBlock * bytes;
      for (size_t i = 0; i < count / kSuperBlock; ++i) {
        internal::DequantizeKQuantBlock(t, blocks + i * bytes,
                                        out + i * kSuperBlock);
      }
      return;
    }
  }
  KV_CHECK_MSG(false, "unknown DType");
}

}  // namespace internal
}  // namespace kvstash::kernels
