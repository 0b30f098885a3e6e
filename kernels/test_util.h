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
    case DType::kQ4_K:
    case DType::kQ5_K: {
      // { f16 d, dmin; u8 scales[12]; (Q5_K: u8 qh[32];) u8 qs[128] }
      const bool q5 = t == DType::kQ5_K;
      const size_t block = (i / 256) * (q5 ? 176 : 144);
      const size_t e = i % 256, j = e / 32, l = e % 32;
      const uint8_t* sc = bytes + block + 4;
      // 6-bit scale/min j: j < 4 in the low 6 bits of bytes j / j + 4; else
      // low nibbles from byte j + 4 and the top 2 bits of bytes j - 4 / j.
      const int scale =
          j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
      const int min =
          j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
      const uint8_t* qs = bytes + block + (q5 ? 48 : 16);
      int q =
          (j % 2 == 0) ? qs[32 * (j / 2) + l] & 0xF : qs[32 * (j / 2) + l] >> 4;
      if (q5) q += ((bytes[block + 16 + l] >> j) & 1) * 16;
      return HalfValue(u16(block)) * scale * q -
             HalfValue(u16(block + 2)) * min;
    }
    case DType::kQ6_K: {
      // { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }
      const size_t block = (i / 256) * 210;
      const size_t e = i % 256, half = e / 128, quarter = e % 128 / 32;
      const size_t l = e % 32;
      const uint8_t low = bytes[block + 64 * half + 32 * (quarter & 1) + l];
      const int lo4 = quarter < 2 ? low & 0xF : low >> 4;
      const int hi2 = (bytes[block + 128 + 32 * half + l] >> (2 * quarter)) & 3;
      const auto scale = static_cast<int8_t>(bytes[block + 192 + e / 16]);
      return HalfValue(u16(block + 208)) * scale * (lo4 + 16 * hi2 - 32);
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

inline constexpr DType kAllDTypes[] = {DType::kF32,  DType::kF16,  DType::kBF16,
                                       DType::kQ8_0, DType::kQ4_0, DType::kQ4_K,
                                       DType::kQ5_K, DType::kQ6_K};

}  // namespace kvstash::kernels::testing
