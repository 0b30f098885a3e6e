#include "kernels/kv_format.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::HalfValue;
using testing::RandomFloats;

constexpr KvType kAllTypes[] = {KvType::kF32,   KvType::kF16,  KvType::kBF16,
                                KvType::kQ8,    KvType::kQ4,   KvType::kQ4H,
                                KvType::kKivi2, KvType::kKivi4};
constexpr size_t kDims[] = {8, 16, 24, 40, 64, 128};

// f32 has 24 significant bits: the relative rounding error of one operation.
constexpr double kF32Eps = 0x1.0p-24;

uint16_t U16At(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | p[1] << 8);  // little endian
}

// f16 value of the half at p, decoded without the code under test.
double HalfAt(const uint8_t* p) { return HalfValue(U16At(p)); }

void PutHalf(float f, uint8_t* p) {
  const uint16_t h = F32ToF16(f);
  p[0] = static_cast<uint8_t>(h);
  p[1] = static_cast<uint8_t>(h >> 8);
}

float RoundToF16(float x) { return F16ToF32(F32ToF16(x)); }

// Rows of n_rows x head_dim values: uniform in [-amp, amp], then a few
// outliers (one element of each row times 10) so that groups differ in scale.
std::vector<float> TestRows(std::mt19937& rng, size_t n_rows, size_t head_dim,
                            float amp) {
  std::vector<float> x = RandomFloats(rng, n_rows * head_dim, -amp, amp);
  std::uniform_int_distribution<size_t> at(0, head_dim - 1);
  for (size_t r = 0; r < n_rows; ++r) x[r * head_dim + at(rng)] *= 10.0f;
  return x;
}

std::vector<float> Decode(KvType t, KvSide side, const uint8_t* run,
                          size_t token, size_t head_dim) {
  std::vector<float> out(head_dim);
  KvDecodeRow(t, side, run, token, head_dim, out.data());
  return out;
}

// Packs codes per the layout of the header comment, independently of the
// code under test: chunks of S * (8 / bits) elements (S = KvPackStripe), byte
// j of a chunk holding elements j, j + S, ... from bit 0 up.
std::vector<uint8_t> RefPack(int bits, const std::vector<uint8_t>& codes) {
  const size_t n = codes.size(), per_byte = 8 / size_t(bits);
  const size_t s = KvPackStripe(bits, n);
  std::vector<uint8_t> out(n * size_t(bits) / 8, 0);
  for (size_t i = 0; i < n; ++i) {
    const size_t chunk = i / (s * per_byte), r = i % (s * per_byte);
    out[chunk * s + r % s] |= uint8_t(codes[i] << (r / s * size_t(bits)));
  }
  return out;
}

// ------------------------------------------------------------ names, sizes

TEST(KvFormatTest, NamesRoundTrip) {
  for (KvType t : kAllTypes) {
    KvType parsed = KvType::kF32;
    ASSERT_TRUE(ParseKvType(KvTypeName(t), &parsed)) << KvTypeName(t);
    EXPECT_EQ(parsed, t);
    EXPECT_NE(KvTypeNames().find(std::string(KvTypeName(t))),
              std::string::npos);
  }
  KvType out = KvType::kQ8;
  for (const char* bad : {"", "q5", "F16", "f16 ", "kivi", "q4_0", "kivi8"}) {
    EXPECT_FALSE(ParseKvType(bad, &out)) << "'" << bad << "'";
  }
  EXPECT_EQ(out, KvType::kQ8) << "a rejected name changed *out";
  EXPECT_EQ(KvFormatName({KvType::kF16, KvType::kF16}), "f16");
  EXPECT_EQ(KvFormatName({KvType::kQ8, KvType::kQ4H}), "k=q8,v=q4h");
}

TEST(KvFormatTest, SupportsHeadDims) {
  EXPECT_NE(KvFormatSupports(KvType::kQ8, 12), "");
  EXPECT_EQ(KvFormatSupports(KvType::kF16, 12), "");
  for (KvType t : kAllTypes) {
    EXPECT_NE(KvFormatSupports(t, 0), "") << KvTypeName(t);
    for (size_t d : kDims) EXPECT_EQ(KvFormatSupports(t, d), "") << d;
    if (KvIsFloat(t)) {
      EXPECT_EQ(KvFormatSupports(t, 13), "") << KvTypeName(t);
    } else {
      for (size_t d : {4, 12, 13, 36}) {
        EXPECT_NE(KvFormatSupports(t, d), "") << KvTypeName(t) << " " << d;
      }
    }
  }
}

TEST(KvFormatTest, GroupAndStripe) {
  EXPECT_EQ(KvGroupSize(64), 32u);
  EXPECT_EQ(KvGroupSize(128), 32u);
  EXPECT_EQ(KvGroupSize(24), 8u);
  EXPECT_EQ(KvGroupSize(8), 8u);
  EXPECT_EQ(KvGroupSize(48), 16u);
  EXPECT_EQ(KvPackStripe(4, 64), 16u);
  EXPECT_EQ(KvPackStripe(2, 64), 16u);
  EXPECT_EQ(KvPackStripe(4, 8), 4u);
  EXPECT_EQ(KvPackStripe(2, 8), 2u);
  EXPECT_EQ(KvPackStripe(4, 24), 4u);
  EXPECT_EQ(KvPackStripe(2, 40), 2u);
}

// head_dim 64: groups of 32, so two f16 scales (or scale/min pairs) per row.
TEST(KvFormatTest, ByteSizes) {
  constexpr size_t kD = 64;
  constexpr KvSide kK = KvSide::kK, kV = KvSide::kV;
  for (KvSide side : {kK, kV}) {
    EXPECT_EQ(KvRowBytes(KvType::kF32, side, kD), 256u);
    EXPECT_EQ(KvRowBytes(KvType::kF16, side, kD), 128u);
    EXPECT_EQ(KvRowBytes(KvType::kBF16, side, kD), 128u);
    EXPECT_EQ(KvRowBytes(KvType::kQ8, side, kD), 2u * 2 + 64);
    EXPECT_EQ(KvRowBytes(KvType::kQ4, side, kD), 4u + 32);
    EXPECT_EQ(KvRowBytes(KvType::kQ4H, side, kD), 4u + 32);
  }
  EXPECT_EQ(KvRowBytes(KvType::kKivi4, kK, kD), 32u);
  EXPECT_EQ(KvRowBytes(KvType::kKivi2, kK, kD), 16u);
  EXPECT_EQ(KvRowBytes(KvType::kKivi4, kV, kD), 4u * 2 + 32);
  EXPECT_EQ(KvRowBytes(KvType::kKivi2, kV, kD), 8u + 16);
  EXPECT_EQ(KvRunParamBytes(KvType::kKivi4, kK, kD), 4u * 64);
  EXPECT_EQ(KvRunParamBytes(KvType::kKivi2, kK, kD), 4u * 64);
  EXPECT_EQ(KvRunBytes(KvType::kKivi4, kK, kD, 16), 4u * 64 + 16 * 32);
  EXPECT_EQ(KvRunBytes(KvType::kKivi2, kV, kD, 16), 16u * 24);
  EXPECT_EQ(KvRunBytes(KvType::kQ8, kK, kD, 16), 16u * 68);
  for (KvType t : kAllTypes) {
    if (KvIsKivi(t)) continue;
    EXPECT_EQ(KvRunParamBytes(t, kK, kD), 0u) << KvTypeName(t);
    EXPECT_EQ(KvRunParamBytes(t, kV, kD), 0u) << KvTypeName(t);
  }
  EXPECT_EQ(KvRunParamBytes(KvType::kKivi4, kV, kD), 0u);
  // head_dim 24: groups of 8, three scales.
  EXPECT_EQ(KvRowBytes(KvType::kQ8, kK, 24), 6u + 24);
  EXPECT_EQ(KvRowBytes(KvType::kQ4, kK, 24), 6u + 12);
  EXPECT_EQ(KvRowBytes(KvType::kKivi2, kV, 24), 12u + 6);
}

// ------------------------------------------------------------ round trips

// f32 stores x; f16 and bf16 round to nearest, within half a unit in the last
// place: 2^-11 |x| and 2^-8 |x| (normal range).
TEST(KvFormatTest, FloatTypesRoundTrip) {
  std::mt19937 rng(1);
  for (size_t d : kDims) {
    const std::vector<float> x = TestRows(rng, 1, d, 3.0f);
    for (KvType t : {KvType::kF32, KvType::kF16, KvType::kBF16}) {
      for (KvSide side : {KvSide::kK, KvSide::kV}) {
        std::vector<uint8_t> row(KvRowBytes(t, side, d));
        KvEncodeRow(t, side, x.data(), d, row.data());
        const std::vector<float> y = Decode(t, side, row.data(), 0, d);
        const double rel = t == KvType::kF32   ? 0.0
                           : t == KvType::kF16 ? 0x1.0p-11
                                               : 0x1.0p-8;
        for (size_t i = 0; i < d; ++i) {
          ASSERT_LE(std::fabs(double(y[i]) - x[i]), rel * std::fabs(x[i]))
              << KvTypeName(t) << " " << i;
          if (t == KvType::kF16) {
            ASSERT_EQ(y[i], HalfAt(row.data() + 2 * i));
            ASSERT_EQ(y[i], RoundToF16(x[i]));
          }
        }
      }
    }
  }
}

// q8: per group of G = KvGroupSize, d = f16(amax / 127) (rounded to f16
// before the codes), q = round(x / d) with x / d computed as x * (1 / d):
// two f32 roundings, so x / d is off by at most 2 * 2^-24 * 127.1 < 2e-5 code
// units. Then |x / d| <= 127 * (1 + 2^-11) < 127.5, so the clamp to +-127
// costs at most 0.07 d, and
//   |x - d q| <= d (0.5 + 2e-5),
// d q being exact in f32 (8-bit code times 11-bit scale).
TEST(KvFormatTest, Q8RoundTrip) {
  std::mt19937 rng(2);
  for (size_t d : kDims) {
    for (float amp : {1.0f, 0.01f, 300.0f}) {
      const std::vector<float> x = TestRows(rng, 1, d, amp);
      std::vector<uint8_t> row(KvRowBytes(KvType::kQ8, KvSide::kK, d));
      KvEncodeRow(KvType::kQ8, KvSide::kK, x.data(), d, row.data());
      const std::vector<float> y =
          Decode(KvType::kQ8, KvSide::kK, row.data(), 0, d);
      const size_t g = KvGroupSize(d);
      for (size_t b = 0; b < d / g; ++b) {
        float amax = 0;
        for (size_t i = b * g; i < (b + 1) * g; ++i) {
          amax = std::max(amax, std::fabs(x[i]));
        }
        const double scale = HalfAt(row.data() + 2 * b);
        EXPECT_EQ(scale, RoundToF16(amax / 127.0f)) << "group " << b;
        for (size_t i = b * g; i < (b + 1) * g; ++i) {
          const int8_t q = static_cast<int8_t>(row[2 * (d / g) + i]);
          ASSERT_EQ(y[i], scale * q) << "the stored layout, element " << i;
          ASSERT_LE(std::fabs(y[i] - x[i]), scale * (0.5 + 2e-5))
              << "head_dim " << d << " amp " << amp << " element " << i;
        }
      }
    }
  }
}

// q4 (ggml q4_0): per group, m the value of largest magnitude, d = f16(m /
// -8), q = min(15, trunc(x / d + 8.5)), x' = d (q - 8). x / d lies in
// [-8, 8] up to the f16 rounding of d (2^-11) and the f32 error of x * (1 /
// d) (< 1e-5 code units), so x / d + 8.5 >= 0 and trunc rounds half up:
// |x - x'| <= |d| (0.5 + 1e-5). Except at the clamped top code (x / d >=
// 7.5, the far end from m): q = 15, x' = 7 d and |x - x'| <= |x / d - 7| |d|
// <= 1.01 |d|.
double Q4Bound(double x_over_d, double abs_d) {
  return abs_d * (x_over_d < 7.5 - 1e-4 ? 0.5 + 1e-5 : 1.01);
}

TEST(KvFormatTest, Q4RoundTrip) {
  std::mt19937 rng(3);
  for (size_t d : kDims) {
    for (float amp : {1.0f, 0.01f, 300.0f}) {
      const std::vector<float> x = TestRows(rng, 1, d, amp);
      std::vector<uint8_t> row(KvRowBytes(KvType::kQ4, KvSide::kV, d));
      KvEncodeRow(KvType::kQ4, KvSide::kV, x.data(), d, row.data());
      const std::vector<float> y =
          Decode(KvType::kQ4, KvSide::kV, row.data(), 0, d);
      const size_t g = KvGroupSize(d);
      for (size_t b = 0; b < d / g; ++b) {
        float m = 0;
        for (size_t i = b * g; i < (b + 1) * g; ++i) {
          if (std::fabs(x[i]) > std::fabs(m)) m = x[i];
        }
        const double scale = HalfAt(row.data() + 2 * b);
        EXPECT_EQ(scale, RoundToF16(m / -8.0f)) << "group " << b;
        for (size_t i = b * g; i < (b + 1) * g; ++i) {
          ASSERT_LE(std::fabs(y[i] - x[i]),
                    Q4Bound(x[i] / scale, std::fabs(scale)))
              << "head_dim " << d << " amp " << amp << " element " << i;
        }
      }
    }
  }
}

// q4h: the stored row is q4 of the rotated head R x, so the decoded row y is
// within Q4Bound of R x element by element, and since R is orthonormal (and
// its own inverse) |R y - x|_2 = |y - R x|_2 <= |per-element bounds|_2, up to
// the f32 error of the two rotations (< 1e-5 |x|_2 for head_dim <= 128).
TEST(KvFormatTest, Q4HRoundTrip) {
  std::mt19937 rng(4);
  for (size_t d : kDims) {
    for (float amp : {1.0f, 50.0f}) {
      const std::vector<float> x = TestRows(rng, 1, d, amp);
      std::vector<uint8_t> row(KvRowBytes(KvType::kQ4H, KvSide::kK, d));
      KvEncodeRow(KvType::kQ4H, KvSide::kK, x.data(), d, row.data());
      std::vector<float> y = Decode(KvType::kQ4H, KvSide::kK, row.data(), 0, d);
      std::vector<float> rx = x;
      KvRotate(rx.data(), d);
      // Stored as q4 of R x: the same bytes as q4 of the rotated row.
      std::vector<uint8_t> q4(row.size());
      KvEncodeRow(KvType::kQ4, KvSide::kK, rx.data(), d, q4.data());
      EXPECT_EQ(row, q4) << "head_dim " << d;
      const size_t g = KvGroupSize(d);
      double bound2 = 0, norm2 = 0;
      for (size_t i = 0; i < d; ++i) {
        const double scale = HalfAt(row.data() + 2 * (i / g));
        const double b = Q4Bound(rx[i] / scale, std::fabs(scale));
        ASSERT_LE(std::fabs(y[i] - rx[i]), b) << "rotated element " << i;
        bound2 += b * b;
        norm2 += double(x[i]) * x[i];
      }
      KvRotate(y.data(), d);  // back to the basis of x
      double err2 = 0;
      for (size_t i = 0; i < d; ++i) err2 += (y[i] - x[i]) * (y[i] - x[i]);
      EXPECT_LE(std::sqrt(err2), std::sqrt(bound2) + 1e-5 * std::sqrt(norm2))
          << "head_dim " << d << " amp " << amp;
    }
  }
}

// KIVI, per set of values (a key channel over the run's tokens, or a value
// group of one token): lo, hi their range (of the f16 rows the run is sealed
// from), scale s = f16((hi - lo) / L) with L = 2^bits - 1, min m = f16(lo),
// q = clamp(round((x - m) / s), 0, L), x' = m + s q (one rounding, FMA).
//   Inside [0, L]: |x - x'| <= s / 2, plus f32 error (< 1e-5 s + 2^-24 |x'|).
//   Clamped at 0: x < m - s / 2, so m > lo and |x - x'| = m - x <= m - lo.
//   Clamped at L: |x - x'| <= hi - m - L s = (lo - m) + L ((hi - lo) / L - s)
//     <= |m - lo| + L 2^-11 s (f16 rounding of s), and L 2^-11 <= 0.008.
// So |x - x'| <= s / 2 + |m - lo| (the f16 rounding of the min) + slack.
// Checks the values of `set` (n values `stride` apart in x and y) against the
// stored scale and min, and that the scale is the range over the levels.
void ExpectKiviSet(int bits, const float* x, const float* y, size_t n,
                   size_t stride, double s, double m, const std::string& what) {
  double lo = x[0], hi = x[0];
  for (size_t i = 0; i < n; ++i) {
    lo = std::min<double>(lo, x[i * stride]);
    hi = std::max<double>(hi, x[i * stride]);
  }
  const double levels = (1 << bits) - 1;
  EXPECT_EQ(m, RoundToF16(float(lo))) << what << ": min";
  EXPECT_LE(std::fabs(s - (hi - lo) / levels), 0x1.0p-11 * (hi - lo) / levels)
      << what << ": scale";
  for (size_t i = 0; i < n; ++i) {
    const double xi = x[i * stride], yi = y[i * stride];
    ASSERT_LE(std::fabs(xi - yi),
              s * (0.5 + 1e-5) + std::fabs(m - lo) + kF32Eps * std::fabs(yi))
        << what << " element " << i << ": " << xi << " -> " << yi << " (scale "
        << s << ", min " << m << ")";
  }
}

std::vector<uint16_t> ToF16(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = F32ToF16(x[i]);
  return h;
}

std::vector<float> FromF16(const std::vector<uint16_t>& h) {
  std::vector<float> x(h.size());
  for (size_t i = 0; i < h.size(); ++i) x[i] = F16ToF32(h[i]);
  return x;
}

TEST(KvFormatTest, KiviKeysRoundTrip) {
  std::mt19937 rng(5);
  for (KvType t : {KvType::kKivi2, KvType::kKivi4}) {
    const int bits = KvBits(t);
    for (size_t d : kDims) {
      for (size_t n : {1, 2, 7, 16, 32}) {
        const size_t block = n + (n % 3);  // rows past n_tokens too
        const std::vector<uint16_t> h = ToF16(TestRows(rng, n, d, 2.0f));
        const std::vector<float> x = FromF16(h);
        std::vector<uint8_t> run(KvRunBytes(t, KvSide::kK, d, block), 0xAB);
        KvSealRun(t, KvSide::kK, h.data(), n, d, block, run.data());
        std::vector<float> y(n * d);
        for (size_t p = 0; p < n; ++p) {
          KvDecodeRow(t, KvSide::kK, run.data(), p, d, &y[p * d]);
        }
        for (size_t c = 0; c < d; ++c) {
          ExpectKiviSet(bits, &x[c], &y[c], n, d, HalfAt(&run[2 * c]),
                        HalfAt(&run[2 * (d + c)]),
                        std::string(KvTypeName(t)) + " head_dim " +
                            std::to_string(d) + " n " + std::to_string(n) +
                            " channel " + std::to_string(c));
          if (::testing::Test::HasFatalFailure()) return;
        }
        const size_t used = KvRunParamBytes(t, KvSide::kK, d) +
                            n * KvRowBytes(t, KvSide::kK, d);
        EXPECT_TRUE(std::all_of(run.begin() + used, run.end(), [](uint8_t b) {
          return b == 0;
        })) << "rows past n_tokens are zero";
      }
    }
  }
}

TEST(KvFormatTest, KiviValuesRoundTrip) {
  std::mt19937 rng(6);
  for (KvType t : {KvType::kKivi2, KvType::kKivi4}) {
    const int bits = KvBits(t);
    for (size_t d : kDims) {
      constexpr size_t kN = 5;
      const std::vector<uint16_t> h = ToF16(TestRows(rng, kN, d, 2.0f));
      const std::vector<float> x = FromF16(h);
      std::vector<uint8_t> run(KvRunBytes(t, KvSide::kV, d, kN));
      KvSealRun(t, KvSide::kV, h.data(), kN, d, kN, run.data());
      const size_t g = KvGroupSize(d), row_bytes = KvRowBytes(t, KvSide::kV, d);
      for (size_t p = 0; p < kN; ++p) {
        const std::vector<float> y = Decode(t, KvSide::kV, run.data(), p, d);
        // A sealed value row is the per-token encoding of its f16 row.
        std::vector<uint8_t> row(row_bytes);
        KvEncodeRow(t, KvSide::kV, &x[p * d], d, row.data());
        EXPECT_TRUE(
            std::equal(row.begin(), row.end(), run.begin() + p * row_bytes));
        for (size_t b = 0; b < d / g; ++b) {
          const uint8_t* sm = &run[p * row_bytes + 4 * b];
          ExpectKiviSet(bits, &x[p * d + b * g], &y[b * g], g, 1, HalfAt(sm),
                        HalfAt(sm + 2),
                        std::string(KvTypeName(t)) + " head_dim " +
                            std::to_string(d) + " token " + std::to_string(p) +
                            " group " + std::to_string(b));
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
    }
  }
}

// ------------------------------------------------------------ layouts

// Rows built by hand from the header's layout decode to their codes: q4 / q4h
// with d = 1 to code - 8, KIVI with scale 1 and min 0 to the code; and
// encoding values that are exactly those codes (every group holding both
// ends of the range, so that d = 1 / the scale is 1 and the min 0) gives the
// same bytes.
TEST(KvFormatTest, PackedCodesFollowTheLayout) {
  for (size_t d : kDims) {
    const size_t g = KvGroupSize(d);
    for (KvType t :
         {KvType::kQ4, KvType::kQ4H, KvType::kKivi2, KvType::kKivi4}) {
      const int bits = KvBits(t);
      const uint8_t top = uint8_t((1 << bits) - 1);
      // Codes 0, 1, ..., top, 0, 1, ...; in the encode check below each group
      // starts with 0 (and, for KIVI, top).
      std::vector<uint8_t> codes(d);
      for (size_t i = 0; i < d; ++i) codes[i] = uint8_t(i % (top + 1u));
      for (KvSide side : {KvSide::kK, KvSide::kV}) {
        if (!KvIsKivi(t) && side == KvSide::kK) continue;  // same rows as V
        const std::vector<uint8_t> packed = RefPack(bits, codes);
        std::vector<uint8_t> run(KvRunBytes(t, side, d, 1));
        uint8_t* row = run.data() + KvRunParamBytes(t, side, d);
        size_t scales = 0;
        if (KvIsKivi(t) && side == KvSide::kK) {
          for (size_t c = 0; c < d; ++c) {
            PutHalf(1.0f, &run[2 * c]);
            PutHalf(0.0f, &run[2 * (d + c)]);
          }
        } else if (KvIsKivi(t)) {
          for (size_t b = 0; b < d / g; ++b) {
            PutHalf(1.0f, row + 4 * b);
            PutHalf(0.0f, row + 4 * b + 2);
          }
          scales = 4 * (d / g);
        } else {
          for (size_t b = 0; b < d / g; ++b) PutHalf(1.0f, row + 2 * b);
          scales = 2 * (d / g);
        }
        ASSERT_EQ(scales + packed.size(), KvRowBytes(t, side, d));
        std::copy(packed.begin(), packed.end(), row + scales);
        const std::vector<float> y = Decode(t, side, run.data(), 0, d);
        for (size_t i = 0; i < d; ++i) {
          const float want = KvIsKivi(t) ? codes[i] : codes[i] - 8.0f;
          ASSERT_EQ(y[i], want) << KvTypeName(t) << " side " << int(side)
                                << " head_dim " << d << " element " << i;
        }
        if (t == KvType::kQ4H) continue;  // rotates before encoding
        // Encode: make every group (every channel for KIVI keys) span the
        // full range of codes.
        std::vector<uint8_t> exact = codes;
        for (size_t b = 0; b < d / g; ++b) {
          exact[b * g] = 0;
          if (KvIsKivi(t)) exact[b * g + 1] = top;
        }
        std::vector<uint8_t> want_run = run;
        const std::vector<uint8_t> want_packed = RefPack(bits, exact);
        std::copy(want_packed.begin(), want_packed.end(),
                  want_run.begin() + KvRunParamBytes(t, side, d) + scales);
        std::vector<float> values(d);
        for (size_t i = 0; i < d; ++i) {
          values[i] = KvIsKivi(t) ? exact[i] : exact[i] - 8.0f;
        }
        if (KvIsKivi(t) && side == KvSide::kK) {
          // Three tokens: 0 and top in every channel, then the codes (the
          // third row must be the packed codes, all scales 1 and mins 0).
          std::vector<float> three(3 * d, 0.0f);
          for (size_t c = 0; c < d; ++c) {
            three[d + c] = top;
            three[2 * d + c] = codes[c];
          }
          std::vector<uint8_t> run3(KvRunBytes(t, side, d, 3));
          KvSealRun(t, side, ToF16(three).data(), 3, d, 3, run3.data());
          const size_t params = KvRunParamBytes(t, side, d);
          EXPECT_TRUE(
              std::equal(run3.begin(), run3.begin() + params, run.begin()))
              << "scales 1, mins 0";
          EXPECT_TRUE(std::equal(packed.begin(), packed.end(),
                                 run3.begin() + params + 2 * packed.size()))
              << KvTypeName(t) << " head_dim " << d;
        } else {
          std::vector<uint8_t> got(run.size());
          KvEncodeRow(t, side, values.data(), d, got.data());
          EXPECT_EQ(got, want_run) << KvTypeName(t) << " head_dim " << d;
        }
      }
    }
  }
}

// q8 codes are one int8 per element after the scales.
TEST(KvFormatTest, Q8CodesFollowTheLayout) {
  for (size_t d : kDims) {
    const size_t g = KvGroupSize(d), ng = d / g;
    std::vector<uint8_t> row(KvRowBytes(KvType::kQ8, KvSide::kV, d));
    for (size_t b = 0; b < ng; ++b) PutHalf(0.5f, &row[2 * b]);
    for (size_t i = 0; i < d; ++i)
      row[2 * ng + i] = uint8_t(int8_t(i % 255 - 127));
    const std::vector<float> y =
        Decode(KvType::kQ8, KvSide::kV, row.data(), 0, d);
    for (size_t i = 0; i < d; ++i) {
      ASSERT_EQ(y[i], 0.5f * float(int(i % 255) - 127)) << i;
    }
  }
}

// Row `token` of a run is found past the run params and the earlier rows.
TEST(KvFormatTest, DecodeFindsEveryRowOfARun) {
  std::mt19937 rng(7);
  constexpr size_t kD = 24, kN = 6;
  for (KvType t : kAllTypes) {
    for (KvSide side : {KvSide::kK, KvSide::kV}) {
      const std::vector<float> x = RandomFloats(rng, kN * kD);
      std::vector<uint8_t> run(KvRunBytes(t, side, kD, kN));
      if (KvHasResidual(t)) {
        KvSealRun(t, side, ToF16(x).data(), kN, kD, kN, run.data());
      } else {
        for (size_t p = 0; p < kN; ++p) {
          KvEncodeRow(t, side, &x[p * kD], kD,
                      &run[p * KvRowBytes(t, side, kD)]);
        }
      }
      for (size_t p = 0; p < kN; ++p) {
        const std::vector<float> y = Decode(t, side, run.data(), p, kD);
        std::vector<float> xp(x.begin() + p * kD, x.begin() + (p + 1) * kD);
        if (KvRotated(t)) KvRotate(xp.data(), kD);
        // Loose (kivi2 over [-1, 1]: scale 2/3): each type's own bound is
        // tested above; this one catches a row read at the wrong place.
        for (size_t i = 0; i < kD; ++i) {
          ASSERT_NEAR(y[i], xp[i], 0.4 * (std::fabs(xp[i]) + 1.0))
              << KvTypeName(t) << " side " << int(side) << " token " << p;
        }
      }
    }
  }
}

// ------------------------------------------------------------ edge cases

TEST(KvFormatTest, SealIsDeterministic) {
  std::mt19937 rng(8);
  for (KvType t : {KvType::kKivi2, KvType::kKivi4}) {
    for (KvSide side : {KvSide::kK, KvSide::kV}) {
      const std::vector<uint16_t> h = ToF16(TestRows(rng, 13, 64, 1.0f));
      std::vector<uint8_t> a(KvRunBytes(t, side, 64, 16), 0x00);
      std::vector<uint8_t> b(a.size(), 0xFF);  // whatever was there before
      KvSealRun(t, side, h.data(), 13, 64, 16, a.data());
      KvSealRun(t, side, h.data(), 13, 64, 16, b.data());
      EXPECT_EQ(a, b) << KvTypeName(t);
    }
  }
}

// All-zero groups and channels (and constant ones, scale 0) decode to their
// value, never NaN.
TEST(KvFormatTest, ZeroAndConstantGroups) {
  for (size_t d : kDims) {
    const size_t g = KvGroupSize(d);
    std::vector<float> x(2 * d, 0.0f);
    for (size_t i = g; i < d; ++i) x[i] = 0.25f * float(i % 5) - 0.5f;
    // Constant 127/128: exact in every type (q8: d = 1/128, q = 127).
    constexpr float kConst = 127.0f / 128.0f;
    for (size_t i = 0; i < d; ++i) x[d + i] = i < g ? 0.0f : kConst;
    for (KvType t : kAllTypes) {
      for (KvSide side : {KvSide::kK, KvSide::kV}) {
        std::vector<uint8_t> run(KvRunBytes(t, side, d, 2));
        if (KvHasResidual(t)) {
          KvSealRun(t, side, ToF16(x).data(), 2, d, 2, run.data());
        } else {
          for (size_t p = 0; p < 2; ++p) {
            KvEncodeRow(t, side, &x[p * d], d,
                        &run[p * KvRowBytes(t, side, d)]);
          }
        }
        for (size_t p = 0; p < 2; ++p) {
          const std::vector<float> y = Decode(t, side, run.data(), p, d);
          for (size_t i = 0; i < d; ++i) {
            ASSERT_FALSE(std::isnan(y[i]))
                << KvTypeName(t) << " head_dim " << d << " token " << p;
          }
          if (KvRotated(t)) continue;
          // The all-zero first group of every token.
          for (size_t i = 0; i < g; ++i) {
            if (KvIsKivi(t) && side == KvSide::kK) break;  // per channel
            ASSERT_EQ(y[i], 0.0f) << KvTypeName(t) << " element " << i;
          }
          // The constant groups of token 1.
          if (p == 1 && !(KvIsKivi(t) && side == KvSide::kK)) {
            for (size_t i = g; i < d; ++i) {
              ASSERT_EQ(y[i], kConst) << KvTypeName(t) << " element " << i;
            }
          }
        }
        if (KvIsKivi(t) && side == KvSide::kK) {
          // Channels 0 .. g-1 are zero over both tokens.
          for (size_t p = 0; p < 2; ++p) {
            const std::vector<float> y = Decode(t, side, run.data(), p, d);
            for (size_t c = 0; c < g; ++c) ASSERT_EQ(y[c], 0.0f) << c;
          }
        }
      }
    }
  }
  // One token sealed: every key channel is constant (scale 0).
  std::mt19937 rng(9);
  const std::vector<uint16_t> h = ToF16(RandomFloats(rng, 64));
  for (KvType t : {KvType::kKivi2, KvType::kKivi4}) {
    std::vector<uint8_t> run(KvRunBytes(t, KvSide::kK, 64, 16));
    KvSealRun(t, KvSide::kK, h.data(), 1, 64, 16, run.data());
    const std::vector<float> y = Decode(t, KvSide::kK, run.data(), 0, 64);
    for (size_t c = 0; c < 64; ++c) EXPECT_EQ(y[c], F16ToF32(h[c])) << c;
  }
}

// The block Hadamard rotation: self-inverse and orthonormal, in blocks of the
// largest power of two dividing head_dim.
TEST(KvFormatTest, RotateIsAnOrthonormalInvolution) {
  std::mt19937 rng(10);
  for (size_t d : {8, 16, 24, 40, 64, 128, 96, 3, 6}) {
    const std::vector<float> x = RandomFloats(rng, d);
    std::vector<float> y = x;
    KvRotate(y.data(), d);
    double nx = 0, ny = 0;
    for (size_t i = 0; i < d; ++i) {
      nx += double(x[i]) * x[i];
      ny += double(y[i]) * y[i];
    }
    EXPECT_NEAR(std::sqrt(ny), std::sqrt(nx), 1e-6 * std::sqrt(nx)) << d;
    KvRotate(y.data(), d);
    for (size_t i = 0; i < d; ++i) {
      ASSERT_NEAR(y[i], x[i], 1e-6) << "head_dim " << d << " element " << i;
    }
    // A unit vector spreads over its block only, as +-1 / sqrt(block).
    const size_t block = d & (~d + 1);  // lowest set bit
    std::vector<float> e(d, 0.0f);
    e[d > block ? block : 0] = 1.0f;
    KvRotate(e.data(), d);
    const size_t b0 = d > block ? block : 0;
    for (size_t i = 0; i < d; ++i) {
      const bool in_block = i >= b0 && i < b0 + block;
      EXPECT_NEAR(std::fabs(e[i]),
                  in_block ? 1.0 / std::sqrt(double(block)) : 0, 1e-7)
          << "head_dim " << d << " element " << i;
    }
  }
}

}  // namespace
}  // namespace kvstash::kernels
