#include "kernels/dtype.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::HalfValue;
using testing::kAllDTypes;
using testing::RandomFloats;
using testing::RefElem;

bool IsHalfNaN(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF); }
bool IsBF16NaN(uint16_t h) { return (h & 0x7F80) == 0x7F80 && (h & 0x7F); }

TEST(DTypeTest, NamesRoundTrip) {
  EXPECT_EQ(DTypeName(DType::kF32), "f32");
  EXPECT_EQ(DTypeName(DType::kF16), "f16");
  EXPECT_EQ(DTypeName(DType::kBF16), "bf16");
  EXPECT_EQ(DTypeName(DType::kQ8_0), "q8_0");
  EXPECT_EQ(DTypeName(DType::kQ4_0), "q4_0");
  for (DType t : kAllDTypes) {
    DType parsed = DType::kF32;
    ASSERT_TRUE(ParseDType(DTypeName(t), &parsed)) << DTypeName(t);
    EXPECT_EQ(parsed, t);
  }
  DType unused;
  EXPECT_FALSE(ParseDType("q3_k", &unused));
  EXPECT_FALSE(ParseDType("", &unused));
  EXPECT_FALSE(ParseDType("F32", &unused));
}

TEST(DTypeTest, BlockSizesAndRowBytes) {
  EXPECT_EQ(DTypeBlockElems(DType::kF32), 1u);
  EXPECT_EQ(DTypeBlockBytes(DType::kF32), 4u);
  EXPECT_EQ(DTypeBlockElems(DType::kF16), 1u);
  EXPECT_EQ(DTypeBlockBytes(DType::kF16), 2u);
  EXPECT_EQ(DTypeBlockElems(DType::kBF16), 1u);
  EXPECT_EQ(DTypeBlockBytes(DType::kBF16), 2u);
  EXPECT_EQ(DTypeBlockElems(DType::kQ8_0), 32u);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ8_0), 34u);
  EXPECT_EQ(DTypeBlockElems(DType::kQ4_0), 32u);
  EXPECT_EQ(DTypeBlockBytes(DType::kQ4_0), 18u);
  EXPECT_EQ(RowBytes(DType::kF32, 7), 28u);
  EXPECT_EQ(RowBytes(DType::kF16, 7), 14u);
  EXPECT_EQ(RowBytes(DType::kBF16, 0), 0u);
  EXPECT_EQ(RowBytes(DType::kQ8_0, 96), 102u);
  EXPECT_EQ(RowBytes(DType::kQ4_0, 64), 36u);
}

TEST(F16Test, DecodesEveryHalfByDefinition) {
  for (uint32_t i = 0; i <= 0xFFFF; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float f = F16ToF32(h);
    if (IsHalfNaN(h)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
    } else {
      ASSERT_EQ(static_cast<double>(f), HalfValue(h)) << std::hex << h;
      EXPECT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << h;
    }
  }
}

TEST(F16Test, RoundTripsEveryHalf) {
  for (uint32_t i = 0; i <= 0xFFFF; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const uint16_t back = F32ToF16(F16ToF32(h));
    if (IsHalfNaN(h)) {
      // A NaN stays a NaN with its sign and payload; it comes back quiet.
      EXPECT_EQ(back, h | 0x0200) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(F16Test, KnownValues) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToF16(0.0f), 0x0000);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);  // largest finite half
  EXPECT_EQ(F32ToF16(65519.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);  // tie with 65536: rounds to inf
  EXPECT_EQ(F32ToF16(1e10f), 0x7C00);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(F32ToF16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_TRUE(IsHalfNaN(F32ToF16(std::numeric_limits<float>::quiet_NaN())));
  // A float NaN whose payload lies only in the bits that are dropped.
  EXPECT_TRUE(IsHalfNaN(F32ToF16(std::bit_cast<float>(0x7F800001u))));
  EXPECT_EQ(F32ToF16(0x1p-14f), 0x0400);         // smallest normal
  EXPECT_EQ(F32ToF16(1023 * 0x1p-24f), 0x03FF);  // largest subnormal
  EXPECT_EQ(F32ToF16(0x1p-24f), 0x0001);         // smallest subnormal
  EXPECT_EQ(F32ToF16(0x1p-25f), 0x0000);         // tie with 0: to even
  EXPECT_EQ(F32ToF16(1.5f * 0x1p-25f), 0x0001);
  EXPECT_EQ(F32ToF16(3 * 0x1p-25f), 0x0002);  // tie 1 | 2: to even
  EXPECT_EQ(F32ToF16(1e-10f), 0x0000);
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(F32ToF16(1.0f + 0x1p-11f), 0x3C00);      // tie: to even
  EXPECT_EQ(F32ToF16(1.0f + 3 * 0x1p-11f), 0x3C02);  // tie: to even
  EXPECT_EQ(F32ToF16(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);
  EXPECT_EQ(F32ToF16(1.0f - 0x1p-12f), 0x3C00);  // tie; carry into exponent
  EXPECT_EQ(F16ToF32(0x3C00), 1.0f);
  EXPECT_EQ(F16ToF32(0x7BFF), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), 0x1p-24f);
  EXPECT_EQ(F16ToF32(0xFC00), -std::numeric_limits<float>::infinity());
}

// Every midpoint between two adjacent halves rounds to the even one, and the
// floats just below and above it round down and up.
TEST(F16Test, RoundsToNearestEvenAtEveryMidpoint) {
  for (uint16_t h = 0; h < 0x7C00; ++h) {
    const uint16_t next = h + 1;  // 0x7C00 (inf) stands for 65536 above max
    const double hi = next == 0x7C00 ? 65536.0 : HalfValue(next);
    const auto mid = static_cast<float>((HalfValue(h) + hi) / 2);
    ASSERT_EQ(static_cast<double>(mid), (HalfValue(h) + hi) / 2);
    const uint16_t even = (h & 1) == 0 ? h : next;
    ASSERT_EQ(F32ToF16(mid), even) << std::hex << h;
    ASSERT_EQ(F32ToF16(-mid), even | 0x8000) << std::hex << h;
    ASSERT_EQ(F32ToF16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    ASSERT_EQ(F32ToF16(std::nextafter(mid, 1e30f)), next) << std::hex << h;
  }
}

TEST(BF16Test, KnownValues) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  EXPECT_EQ(F32ToBF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToBF16(1.0f + 0x1p-8f), 0x3F80);      // tie: to even
  EXPECT_EQ(F32ToBF16(1.0f + 3 * 0x1p-8f), 0x3F82);  // tie: to even
  EXPECT_EQ(F32ToBF16(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::max()), 0x7F80);  // to inf
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(F32ToBF16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(BF16ToF32(0x3F80), 1.0f);
  EXPECT_EQ(BF16ToF32(0xC040), -3.0f);
}

TEST(BF16Test, KeepsNaN) {
  for (uint32_t bits : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u,
                        0x7FFFFFFFu, 0x7F80FFFFu}) {
    const uint16_t b = F32ToBF16(std::bit_cast<float>(bits));
    EXPECT_TRUE(IsBF16NaN(b)) << std::hex << bits;
    EXPECT_TRUE(b & 0x0040) << "quiet bit, " << std::hex << bits;
    EXPECT_EQ(b & 0x8000, (bits >> 16) & 0x8000) << std::hex << bits;
  }
}

TEST(BF16Test, RoundTripsAndRoundsToNearestEvenEverywhere) {
  for (uint32_t i = 0; i <= 0xFFFF; ++i) {
    const auto b = static_cast<uint16_t>(i);
    const uint32_t bits = i << 16;
    if (IsBF16NaN(b)) {
      EXPECT_TRUE(IsBF16NaN(F32ToBF16(BF16ToF32(b))));
      continue;
    }
    ASSERT_EQ(F32ToBF16(BF16ToF32(b)), b) << std::hex << b;
    if ((b & 0x7F80) == 0x7F80) continue;  // infinity: no value above it
    // Midpoint between b and the next magnitude, and its neighbours.
    const auto next = static_cast<uint16_t>(b + 1);
    const uint16_t even = (b & 1) == 0 ? b : next;
    ASSERT_EQ(F32ToBF16(std::bit_cast<float>(bits | 0x8000)), even)
        << std::hex << b;
    ASSERT_EQ(F32ToBF16(std::bit_cast<float>(bits | 0x7FFF)), b)
        << std::hex << b;
    ASSERT_EQ(F32ToBF16(std::bit_cast<float>(bits | 0x8001)), next)
        << std::hex << b;
  }
}

std::vector<uint8_t> Quantize(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> bytes(RowBytes(t, x.size()));
  QuantizeRow(t, x.data(), x.size(), bytes.data());
  return bytes;
}

// Q8_0 with amax = 127 (so d = 1): q = roundf(x), halves away from zero.
TEST(QuantTest, Q8_0UnitScaleBlockBytes) {
  std::vector<float> x(32, 0.0f);
  const float head[] = {127.0f, -127.0f, 2.5f, -2.5f, 0.49f, -0.5f, 3.7f};
  std::copy(std::begin(head), std::end(head), x.begin());
  std::vector<uint8_t> expected(34, 0);
  const uint8_t expected_head[] = {0x00, 0x3C, 0x7F, 0x81, 0x03,
                                   0xFD, 0x00, 0xFF, 0x04};
  std::copy(std::begin(expected_head), std::end(expected_head),
            expected.begin());
  EXPECT_EQ(Quantize(DType::kQ8_0, x), expected);
}

// x[j] = j / 4: d = 7.75/127 (f16 0x2BD0). Expected bytes computed apart from
// this code by emulating ggml's float32 arithmetic step by step.
TEST(QuantTest, Q8_0RampBlockBytes) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = 0.25f * j;
  const std::vector<uint8_t> expected = {
      0xD0, 0x2B, 0,  4,   8,   12,  16,  20,  25,  29, 33, 37,
      41,   45,   49, 53,  57,  61,  66,  70,  74,  78, 82, 86,
      90,   94,   98, 102, 107, 111, 115, 119, 123, 127};
  EXPECT_EQ(Quantize(DType::kQ8_0, x), expected);
}

// Q4_0 with max = -8 (so d = 1): q = min(15, trunc(x + 8.5)).
TEST(QuantTest, Q4_0NegativeMaxBlockBytes) {
  std::vector<float> x(32, 0.0f);
  x[0] = -8.0f;   // q 0
  x[1] = 7.0f;    // q 15
  x[2] = 7.6f;    // q 16, clamped to 15
  x[3] = -0.6f;   // q 7
  x[4] = 0.5f;    // q 9
  x[5] = -0.5f;   // q 8
  x[16] = 1.2f;   // q 9, high nibble of byte 0
  x[17] = -7.9f;  // q 0, high nibble of byte 1
  std::vector<uint8_t> expected(18, 0x88);
  const uint8_t expected_head[] = {0x00, 0x3C, 0x90, 0x0F,
                                   0x8F, 0x87, 0x89, 0x88};
  std::copy(std::begin(expected_head), std::end(expected_head),
            expected.begin());
  EXPECT_EQ(Quantize(DType::kQ4_0, x), expected);
}

// Q4_0 with max = +8 (so d = -1): -max lands on q 16 and is clamped to 15.
TEST(QuantTest, Q4_0PositiveMaxBlockBytes) {
  std::vector<float> x(32, 0.0f);
  x[0] = 8.0f;   // q 0
  x[1] = -8.0f;  // q 16 -> 15
  x[2] = 3.0f;   // q 5
  std::vector<uint8_t> expected(18, 0x88);
  const uint8_t expected_head[] = {0x00, 0xBC, 0x80, 0x8F, 0x85};
  std::copy(std::begin(expected_head), std::end(expected_head),
            expected.begin());
  const std::vector<uint8_t> got = Quantize(DType::kQ4_0, x);
  EXPECT_EQ(got, expected);
  std::vector<float> deq(32);
  DequantizeRow(DType::kQ4_0, got.data(), 32, deq.data());
  EXPECT_EQ(deq[0], 8.0f);
  EXPECT_EQ(deq[1], -7.0f);
  EXPECT_EQ(deq[2], 3.0f);
}

// x[j] = j/4 - 3: max = 4.75, d = -0.59375 (f16 0xB8C0). Expected bytes
// computed apart from this code by emulating ggml's float32 arithmetic.
TEST(QuantTest, Q4_0RampBlockBytes) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = 0.25f * j - 3.0f;
  const std::vector<uint8_t> expected = {0xC0, 0xB8, 0x6D, 0x6D, 0x5C, 0x5C,
                                         0x5B, 0x4B, 0x4B, 0x3A, 0x3A, 0x39,
                                         0x29, 0x28, 0x18, 0x18, 0x07, 0x07};
  EXPECT_EQ(Quantize(DType::kQ4_0, x), expected);
}

// Zero blocks get scale 0: +0 for Q8_0 (0/127) and -0 for Q4_0 (0/-8), as
// ggml stores them.
TEST(QuantTest, ZeroBlocksHaveZeroScale) {
  const std::vector<float> x(32, 0.0f);
  std::vector<uint8_t> q8_0(34, 0);
  std::vector<uint8_t> q4_0(18, 0x88);
  q4_0[0] = 0x00;
  q4_0[1] = 0x80;
  EXPECT_EQ(Quantize(DType::kQ8_0, x), q8_0);
  EXPECT_EQ(Quantize(DType::kQ4_0, x), q4_0);
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
    std::vector<float> deq(32, 1.0f);
    DequantizeRow(t, Quantize(t, x).data(), 32, deq.data());
    EXPECT_EQ(deq, x) << DTypeName(t);
  }
}

// Blocks of random values at several magnitudes.
std::vector<float> VariedBlocks(std::mt19937& rng, size_t n_blocks) {
  const float scales[] = {1e-3f, 0.5f, 1.0f, 300.0f};
  std::vector<float> x;
  for (size_t b = 0; b < n_blocks; ++b) {
    const float s = scales[b % std::size(scales)];
    for (float v : RandomFloats(rng, 32, -s, s)) x.push_back(v);
  }
  return x;
}

// Q8_0 error bound per element: |x - deq| <= d/2 + 127 |d - d16| (+ float
// rounding), where d = amax/127 is the exact scale and d16 its stored f16.
TEST(QuantTest, Q8_0RoundTripErrorBound) {
  std::mt19937 rng(1);
  const std::vector<float> x = VariedBlocks(rng, 64);
  const std::vector<uint8_t> bytes = Quantize(DType::kQ8_0, x);
  std::vector<float> deq(x.size());
  DequantizeRow(DType::kQ8_0, bytes.data(), x.size(), deq.data());
  for (size_t b = 0; b < x.size() / 32; ++b) {
    double amax = 0;
    for (int j = 0; j < 32; ++j)
      amax = std::max<double>(amax, std::fabs(x[b * 32 + j]));
    const double d = amax / 127;
    const double d16 = HalfValue(
        static_cast<uint16_t>(bytes[b * 34] | bytes[b * 34 + 1] << 8));
    const double bound = d / 2 + 127 * std::fabs(d - d16) + 1e-6 * amax;
    for (int j = 0; j < 32; ++j) {
      const size_t i = b * 32 + j;
      ASSERT_LE(std::fabs(x[i] - deq[i]), bound) << "element " << i;
    }
  }
}

// Q4_0 error bound per element, with d = |max|/8 and d16 the stored scale:
// |x - deq| <= d/2 + 8 |d - d16| where q < 15, and <= d + 8 |d - d16| where
// q was clamped to 15 (the end opposite to max).
TEST(QuantTest, Q4_0RoundTripErrorBound) {
  std::mt19937 rng(2);
  const std::vector<float> x = VariedBlocks(rng, 64);
  const std::vector<uint8_t> bytes = Quantize(DType::kQ4_0, x);
  std::vector<float> deq(x.size());
  DequantizeRow(DType::kQ4_0, bytes.data(), x.size(), deq.data());
  for (size_t b = 0; b < x.size() / 32; ++b) {
    const uint8_t* block = &bytes[b * 18];
    double amax = 0;
    for (int j = 0; j < 32; ++j)
      amax = std::max<double>(amax, std::fabs(x[b * 32 + j]));
    const double d = amax / 8;
    const double d16 =
        std::fabs(HalfValue(static_cast<uint16_t>(block[0] | block[1] << 8)));
    const double slack = 8 * std::fabs(d - d16) + 1e-6 * amax;
    for (int j = 0; j < 32; ++j) {
      const size_t i = b * 32 + j;
      const uint8_t byte = block[2 + j % 16];
      const int q = j < 16 ? (byte & 0xF) : (byte >> 4);
      const double bound = (q == 15 ? d : d / 2) + slack;
      ASSERT_LE(std::fabs(x[i] - deq[i]), bound) << "element " << i;
    }
  }
}

// Every element decodes to the float nearest the exact value of its bits
// (the products of scales and quants are exact in float; only Q4_K / Q5_K's
// subtraction of the min rounds).
TEST(QuantTest, DequantizeRowMatchesIndependentDecoder) {
  std::mt19937 rng(3);
  for (DType t : kAllDTypes) {
    const std::vector<float> x = VariedBlocks(rng, 16);  // two super-blocks
    const std::vector<uint8_t> bytes = Quantize(t, x);
    std::vector<float> deq(x.size());
    DequantizeRow(t, bytes.data(), x.size(), deq.data());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(deq[i], static_cast<float>(RefElem(t, bytes.data(), i)))
          << DTypeName(t) << " element " << i;
    }
  }
}

TEST(KQuantTest, BlockSizes) {
  for (DType t : {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    EXPECT_TRUE(IsKQuant(t));
    EXPECT_EQ(DTypeBlockElems(t), 256u);
  }
  EXPECT_FALSE(IsKQuant(DType::kQ4_0));
  EXPECT_EQ(DTypeBlockBytes(DType::kQ4_K), 144u);  // 4.5 bits per weight
  EXPECT_EQ(DTypeBlockBytes(DType::kQ5_K), 176u);  // 5.5
  EXPECT_EQ(DTypeBlockBytes(DType::kQ6_K), 210u);  // 6.5625
  EXPECT_EQ(RowBytes(DType::kQ6_K, 512), 420u);
  DType parsed;
  ASSERT_TRUE(ParseDType("q4_k", &parsed));
  EXPECT_EQ(parsed, DType::kQ4_K);
}

// A Q4_K super-block written byte by byte: d = 1, dmin = 0.5, sub-block j
// with scale 60 + j % 4 and min 2 j + 1 (so j >= 4 use the packed high bits),
// and quant (l + j) % 16 for element l.
TEST(KQuantTest, Q4_KKnownBlock) {
  BlockQ4_K b{};
  b.d = F32ToF16(1.0f);
  b.dmin = F32ToF16(0.5f);
  int scale[8], min[8];
  for (int j = 0; j < 8; ++j) {
    scale[j] = 60 + j % 4;
    min[j] = 2 * j + 1;
  }
  for (int j = 0; j < 4; ++j) {
    b.scales[j] = static_cast<uint8_t>(scale[j] | (scale[j + 4] >> 4) << 6);
    b.scales[j + 4] = static_cast<uint8_t>(min[j] | (min[j + 4] >> 4) << 6);
    b.scales[j + 8] =
        static_cast<uint8_t>((scale[j + 4] & 0xF) | (min[j + 4] & 0xF) << 4);
  }
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32, l = e % 32;
    const int q = (l + j) % 16;
    b.qs[32 * (j / 2) + l] |= static_cast<uint8_t>(j % 2 == 0 ? q : q << 4);
  }
  float out[256];
  DequantizeRow(DType::kQ4_K, &b, 256, out);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32, l = e % 32;
    ASSERT_EQ(out[e], 1.0f * scale[j] * ((l + j) % 16) - 0.5f * min[j])
        << "element " << e;
  }
}

// Root-mean-square round-trip error relative to the data's, on blocks of
// very different magnitudes: about half a step of each type's grid.
TEST(KQuantTest, RoundTripErrorIsSmall) {
  std::mt19937 rng(5);
  const std::vector<float> x = VariedBlocks(rng, 64);  // 8 super-blocks
  const struct {
    DType type;
    double max_relative_rms;
  } cases[] = {
      {DType::kQ4_K, 0.09}, {DType::kQ5_K, 0.045}, {DType::kQ6_K, 0.025}};
  for (const auto& c : cases) {
    const std::vector<uint8_t> bytes = Quantize(c.type, x);
    std::vector<float> deq(x.size());
    DequantizeRow(c.type, bytes.data(), x.size(), deq.data());
    // Per 32 elements, as the magnitudes differ per 32.
    double worst = 0;
    for (size_t b = 0; b < x.size() / 32; ++b) {
      double err = 0, sum = 0;
      for (size_t i = 32 * b; i < 32 * b + 32; ++i) {
        err += (x[i] - deq[i]) * double(x[i] - deq[i]);
        sum += double(x[i]) * x[i];
      }
      // A sub-block far below the super-block's largest gets few steps of
      // the shared scale: only the largest sub-blocks of each super-block
      // are held to the bound.
      if (b % 4 == 3) worst = std::max(worst, std::sqrt(err / sum));
    }
    EXPECT_LE(worst, c.max_relative_rms) << DTypeName(c.type);
  }
}

TEST(KQuantTest, EdgeBlocks) {
  std::vector<std::vector<float>> blocks;
  blocks.push_back(std::vector<float>(256, 0.0f));
  blocks.push_back(std::vector<float>(256, 5.0f));
  blocks.push_back(std::vector<float>(256, -3.0f));
  std::vector<float> spike(256, 0.0f);
  spike[77] = 1000.0f;
  blocks.push_back(spike);
  for (DType t : {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K}) {
    for (const std::vector<float>& x : blocks) {
      const std::vector<uint8_t> bytes = Quantize(t, x);
      std::vector<float> deq(256);
      DequantizeRow(t, bytes.data(), 256, deq.data());
      double amax = 0;
      for (float v : x) amax = std::max<double>(amax, std::fabs(v));
      for (size_t i = 0; i < 256; ++i) {
        // Constant blocks are exact up to the f16 scales; a spike keeps its
        // neighbours at 0 and itself within a step.
        ASSERT_NEAR(deq[i], x[i], 0.02 * amax + 1e-6)
            << DTypeName(t) << " element " << i << " of a block of max "
            << amax;
      }
    }
  }
}

TEST(QuantTest, FloatTypesEncodeElementwise) {
  std::mt19937 rng(4);
  const std::vector<float> x = RandomFloats(rng, 37, -100.0f, 100.0f);
  const std::vector<uint8_t> f32 = Quantize(DType::kF32, x);
  const std::vector<uint8_t> f16 = Quantize(DType::kF16, x);
  const std::vector<uint8_t> bf16 = Quantize(DType::kBF16, x);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(RefElem(DType::kF32, f32.data(), i), x[i]);
    EXPECT_EQ(RefElem(DType::kF16, f16.data(), i), F16ToF32(F32ToF16(x[i])));
    EXPECT_EQ(RefElem(DType::kBF16, bf16.data(), i),
              BF16ToF32(F32ToBF16(x[i])));
  }
}

}  // namespace
}  // namespace kvstash::kernels
