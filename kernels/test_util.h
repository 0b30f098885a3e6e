// Test-only helpers: an independent decoder of every weight type (double
// arithmetic from the bit layouts in dtype.h) and random inputs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/dtype.h"

namespace kvstash::kernels::testing {

// The value of IEEE half `h`, from the format's definition.
inline double HalfValue(uint16_t h) {
  const double sign = (h & 0x8000) != 0 ? -1.0 : 1.0;
  const int exp = (h >> 10) & 0x1F;
  const int mant = h & 0x3FF;
  if (exp == 0x1F) return mant == 0 ? sign * INFINITY : NAN;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

// Element `i` of a row of type `t`, decoded without the code under test.
inline double RefElem(DType t, const void* row, size_t i) {
  const auto* bytes = static_cast<const uint8_t*>(row);
  auto u16 = [bytes](size_t offset) {
    return static_cast<uint16_t>(bytes[offset] | bytes[offset + 1] << 8);
  };
  switch (t) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, bytes + 4 * i, sizeof(f));
      return f;
    }
    case DType::kF16:
      return HalfValue(u16(2 * i));
    case DType::kBF16: {
      const uint32_t bits = static_cast<uint32_t>(u16(2 * i)) << 16;
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      return f;
    }
    case DType::kQ8_0: {
      const size_t block = (i / 32) * 34;
      const auto q = static_cast<int8_t>(bytes[block + 2 + i % 32]);
      return HalfValue(u16(block)) * q;
    }
    case DType::kQ4_0: {
      const size_t block = (i / 32) * 18;
      const size_t j = i % 32;
      const uint8_t byte = bytes[block + 2 + j % 16];
      const int q = j < 16 ? (byte & 0xF) : (byte >> 4);
      return HalfValue(u16(block)) * (q - 8);
    }
  }
  return NAN;
}

inline std::vector<float> RandomFloats(std::mt19937& rng, size_t n,
                                       float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

inline constexpr DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kBF16,
                                       DType::kQ8_0, DType::kQ4_0};

}  // namespace kvstash::kernels::testing
