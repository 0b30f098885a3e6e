#include "kernels/ops_fast.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "hwy/tests/hwy_gtest.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::RandomFloats;

constexpr double kU = 0x1p-24;  // unit roundoff of float

// Lengths around the vector widths (4, 8, 16 floats) and larger ones.
constexpr size_t kLengths[] = {1, 2, 3, 4, 7, 8, 15, 16, 17, 33, 100, 2048};

// Every test runs once per Highway target that this CPU supports.
class OpsFastTest : public hwy::TestWithParamTarget {};
// (HWY_TARGET_INSTANTIATE_TEST_SUITE_P, spelled out: its unqualified
// `testing::` would find kvstash::kernels::testing.)
INSTANTIATE_TEST_SUITE_P(
    OpsFastTestGroup, OpsFastTest,
    ::testing::ValuesIn(::hwy::SupportedAndGeneratedTargets()),
    ::hwy::TestParamTargetName);

TEST_P(OpsFastTest, RmsNormMatchesReference) {
  std::mt19937 rng(51);
  for (size_t n : kLengths) {
    const std::vector<float> x = RandomFloats(rng, n, -3.0f, 3.0f);
    const std::vector<float> w = RandomFloats(rng, n, 0.5f, 1.5f);
    std::vector<float> ref(n);
    std::vector<float> fast(n + 1, NAN);
    RmsNorm(x.data(), w.data(), n, 1e-5f, ref.data());
    RmsNormFast(x.data(), w.data(), n, 1e-5f, fast.data());
    EXPECT_TRUE(std::isnan(fast[n])) << "wrote past out";
    for (size_t i = 0; i < n; ++i) {
      // Both sums of squares are within n u of the exact one.
      EXPECT_NEAR(fast[i], ref[i], (n + 8) * kU * std::fabs(ref[i]))
          << n << " " << i;
    }
  }
}

TEST_P(OpsFastTest, RmsNormOutputMayAliasInput) {
  std::mt19937 rng(52);
  std::vector<float> x = RandomFloats(rng, 37);
  const std::vector<float> w = RandomFloats(rng, 37);
  std::vector<float> separate(37);
  RmsNormFast(x.data(), w.data(), 37, 1e-6f, separate.data());
  RmsNormFast(x.data(), w.data(), 37, 1e-6f, x.data());
  EXPECT_EQ(x, separate);
}

TEST_P(OpsFastTest, RopeEqualsReferenceBitForBit) {
  struct Shape {
    size_t n_heads, head_dim, rot_dims;
  };
  const Shape shapes[] = {{1, 2, 2},     {3, 8, 8},   {2, 10, 6},
                          {4, 64, 64},   {2, 36, 34}, {1, 80, 80},
                          {5, 128, 128}, {2, 64, 32}, {1, 70, 66}};
  std::mt19937 rng(53);
  for (RopeStyle style : {RopeStyle::kAdjacent, RopeStyle::kHalves}) {
    for (const Shape& s : shapes) {
      for (int pos : {0, 1, 7, 100, 4095, 100000}) {
        for (float base : {10000.0f, 500000.0f}) {
          const std::vector<float> x0 =
              RandomFloats(rng, s.n_heads * s.head_dim, -4.0f, 4.0f);
          std::vector<float> ref = x0;
          Rope(ref.data(), s.n_heads, s.head_dim, s.rot_dims, pos, base, style);
          std::vector<float> table(RopeTableFloats(s.rot_dims));
          FillRopeTable(s.rot_dims, pos, base, style, table.data());
          std::vector<float> fast = x0;
          RopeFast(fast.data(), s.n_heads, s.head_dim, s.rot_dims, style,
                   table.data());
          ASSERT_EQ(fast, ref)
              << "style " << static_cast<int>(style) << " head_dim "
              << s.head_dim << " rot_dims " << s.rot_dims << " pos " << pos;
        }
        // Scaled frequencies (YaRN with frequency factors: every path).
        RopeScaling scaling;
        scaling.kind = RopeScaling::Kind::kYarn;
        scaling.factor = 4.0f;
        scaling.original_context = 4096;
        for (size_t j = 0; j < s.rot_dims / 2; ++j) {
          scaling.freq_factors.push_back(1.0f + 0.5f * float(j % 3));
        }
        const std::vector<float> x0 =
            RandomFloats(rng, s.n_heads * s.head_dim, -4.0f, 4.0f);
        std::vector<float> ref = x0;
        Rope(ref.data(), s.n_heads, s.head_dim, s.rot_dims, pos, 10000.0f,
             style, scaling);
        std::vector<float> table(RopeTableFloats(s.rot_dims));
        FillRopeTable(s.rot_dims, pos, 10000.0f, style, table.data(), scaling);
        std::vector<float> fast = x0;
        RopeFast(fast.data(), s.n_heads, s.head_dim, s.rot_dims, style,
                 table.data());
        ASSERT_EQ(fast, ref) << "scaled, rot_dims " << s.rot_dims;
      }
    }
  }
}

TEST_P(OpsFastTest, SiluMulMatchesReference) {
  std::mt19937 rng(54);
  for (size_t n : kLengths) {
    std::vector<float> gate0 = RandomFloats(rng, n, -10.0f, 10.0f);
    const std::vector<float> up = RandomFloats(rng, n, -2.0f, 2.0f);
    // exp(-x) overflows below about -88.7; Highway's Exp is valid to 104.
    const float extremes[] = {0.0f,    -87.0f,   -89.0f, -100.0f,
                              -104.5f, -1000.0f, 88.0f,  1000.0f};
    for (size_t i = 0; i < n && i < std::size(extremes); ++i) {
      gate0[i * 7 % n] = extremes[i];
    }
    std::vector<float> ref = gate0;
    std::vector<float> fast = gate0;
    fast.push_back(NAN);
    SiluMul(ref.data(), up.data(), n);
    SiluMulFast(fast.data(), up.data(), n);
    EXPECT_TRUE(std::isnan(fast[n])) << "wrote past gate";
    for (size_t i = 0; i < n; ++i) {
      ASSERT_TRUE(std::isfinite(fast[i])) << gate0[i];
      // Where exp(-x) nears overflow, silu(x) is below 1e-36 in magnitude.
      EXPECT_NEAR(fast[i], ref[i], 8 * kU * std::fabs(ref[i]) + 1e-36)
          << "gate " << gate0[i];
    }
  }
}

bool IsF16Nan(uint16_t h) { return (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0; }

// Every half: widened exactly as F16ToF32 does (NaNs stay NaNs).
TEST_P(OpsFastTest, F16RowToF32EqualsScalarForEveryHalf) {
  std::vector<uint16_t> h(65536 + 3);
  for (size_t i = 0; i < h.size(); ++i) h[i] = uint16_t(i);
  std::vector<float> out(h.size() + 1, 7.0f);
  F16RowToF32Fast(h.data(), h.size(), out.data());
  EXPECT_EQ(out[h.size()], 7.0f) << "wrote past out";
  for (size_t i = 0; i < h.size(); ++i) {
    const float want = F16ToF32(h[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(out[i])) << i;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(want))
          << i;
    }
  }
}

// Floats around every rounding boundary of halves (each half's value, the
// midpoints to its neighbours and one ulp either side), subnormals,
// overflow, infinities and NaN: narrowed exactly as F32ToF16 does.
TEST_P(OpsFastTest, F32RowToF16EqualsScalar) {
  std::vector<float> x;
  for (uint32_t i = 0; i < 0x7C00; i += 3) {
    const float v = F16ToF32(uint16_t(i));
    const float next = F16ToF32(uint16_t(i + 1));
    const float mid = v + (next - v) / 2;
    for (const float f :
         {v, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      x.push_back(f);
      x.push_back(-f);
    }
  }
  for (const float f : {65504.0f, 65519.0f, 65520.0f, 1e9f, INFINITY, NAN,
                        0x1p-25f, 0x1p-26f, 1e-30f, -0.0f}) {
    x.push_back(f);
    x.push_back(-f);
  }
  std::mt19937 rng(53);
  for (const float f : RandomFloats(rng, 1001, -70000.0f, 70000.0f)) {
    x.push_back(f);
    x.push_back(f * 1e-6f);
  }
  std::vector<uint16_t> out(x.size() + 1, 0x1234);
  F32RowToF16Fast(x.data(), x.size(), out.data());
  EXPECT_EQ(out[x.size()], 0x1234) << "wrote past out";
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t want = F32ToF16(x[i]);
    if (IsF16Nan(want)) {
      EXPECT_TRUE(IsF16Nan(out[i])) << i;
    } else {
      ASSERT_EQ(out[i], want) << i << ": " << x[i];
    }
  }
}

}  // namespace
}  // namespace kvstash::kernels
