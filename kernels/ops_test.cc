#include "kernels/ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <numbers>
#include <random>
#include <vector>

#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::RandomFloats;

constexpr double kU = 0x1p-24;  // unit roundoff of float

TEST(RmsNormTest, MatchesDouble) {
  std::mt19937 rng(21);
  for (size_t n : {1, 7, 64, 129}) {
    const std::vector<float> x = RandomFloats(rng, n, -3.0f, 3.0f);
    const std::vector<float> w = RandomFloats(rng, n, 0.5f, 1.5f);
    const float eps = 1e-5f;
    std::vector<float> out(n);
    RmsNorm(x.data(), w.data(), n, eps, out.data());
    double ss = 0;
    for (float v : x) ss += static_cast<double>(v) * v;
    const double inv_rms = 1 / std::sqrt(ss / n + eps);
    for (size_t i = 0; i < n; ++i) {
      const double ref = x[i] * inv_rms * w[i];
      EXPECT_NEAR(out[i], ref, (n + 8) * kU * std::fabs(ref)) << n << " " << i;
    }
  }
}

TEST(RmsNormTest, OutputMayAliasInput) {
  std::mt19937 rng(22);
  std::vector<float> x = RandomFloats(rng, 33);
  const std::vector<float> w = RandomFloats(rng, 33);
  std::vector<float> separate(33);
  RmsNorm(x.data(), w.data(), 33, 1e-6f, separate.data());
  RmsNorm(x.data(), w.data(), 33, 1e-6f, x.data());
  EXPECT_EQ(x, separate);
}

struct RopeCase {
  size_t n_heads;
  size_t head_dim;
  size_t rot_dims;
};

// Indices of rotation pair j in one head.
std::pair<size_t, size_t> PairOf(RopeStyle style, size_t j, size_t rot_dims) {
  if (style == RopeStyle::kAdjacent) return {2 * j, 2 * j + 1};
  return {j, j + rot_dims / 2};
}

// Each pair (a, b) becomes (a + ib) * e^(i pos theta_j) with theta_j =
// base^(-2j/rot_dims), computed in double; the dims past rot_dims stay as they
// were. Tolerance: the float angle pos * theta_j carries a relative error of
// up to ~16 u (mostly from powf and the rounded exponent), so it grows with
// pos.
TEST(RopeTest, MatchesComplexRotation) {
  std::mt19937 rng(23);
  const RopeCase cases[] = {
      {2, 8, 8}, {3, 16, 8}, {1, 6, 4}, {4, 64, 64}, {2, 10, 2}};
  for (RopeStyle style : {RopeStyle::kAdjacent, RopeStyle::kHalves}) {
    for (const RopeCase& c : cases) {
      for (int pos : {1, 7, 100, 1000}) {
        for (float base : {10000.0f, 1e6f}) {
          const std::vector<float> x0 =
              RandomFloats(rng, c.n_heads * c.head_dim);
          std::vector<float> x = x0;
          Rope(x.data(), c.n_heads, c.head_dim, c.rot_dims, pos, base, style);
          for (size_t h = 0; h < c.n_heads; ++h) {
            const float* in = &x0[h * c.head_dim];
            const float* out = &x[h * c.head_dim];
            for (size_t j = 0; j < c.rot_dims / 2; ++j) {
              const auto [i0, i1] = PairOf(style, j, c.rot_dims);
              const double theta =
                  pos * std::pow(static_cast<double>(base),
                                 -2.0 * j / static_cast<double>(c.rot_dims));
              const std::complex<double> ref =
                  std::complex<double>(in[i0], in[i1]) * std::polar(1.0, theta);
              const double tol =
                  std::abs(ref) * (16 * kU * pos + 8 * kU) + 1e-9;
              ASSERT_NEAR(out[i0], ref.real(), tol) << "pair " << j;
              ASSERT_NEAR(out[i1], ref.imag(), tol) << "pair " << j;
            }
            for (size_t i = c.rot_dims; i < c.head_dim; ++i) {
              ASSERT_EQ(out[i], in[i]) << "dim " << i;
            }
          }
        }
      }
    }
  }
}

// Rope with `scaling` against each pair turned by pos * inv_freq[j] and
// scaled by `magnitude`, both computed in the test in double.
void ExpectScaledRope(const RopeScaling& scaling,
                      const std::vector<double>& inv_freq, double magnitude,
                      float base, size_t head_dim) {
  std::mt19937 rng(29);
  for (RopeStyle style : {RopeStyle::kAdjacent, RopeStyle::kHalves}) {
    for (int pos : {3, 500, 20000}) {
      const std::vector<float> x0 = RandomFloats(rng, 2 * head_dim);
      std::vector<float> x = x0;
      Rope(x.data(), 2, head_dim, head_dim, pos, base, style, scaling);
      for (size_t h = 0; h < 2; ++h) {
        for (size_t j = 0; j < head_dim / 2; ++j) {
          const auto [i0, i1] = PairOf(style, j, head_dim);
          const float* in = &x0[h * head_dim];
          const std::complex<double> ref =
              std::complex<double>(in[i0], in[i1]) *
              std::polar(magnitude, pos * inv_freq[j]);
          const double tol = std::abs(ref) * (64 * kU * pos + 16 * kU) + 1e-9;
          ASSERT_NEAR(x[h * head_dim + i0], ref.real(), tol)
              << "pos " << pos << " pair " << j;
          ASSERT_NEAR(x[h * head_dim + i1], ref.imag(), tol)
              << "pos " << pos << " pair " << j;
        }
      }
    }
  }
}

std::vector<double> InvFreq(double base, size_t dims) {
  std::vector<double> f(dims / 2);
  for (size_t j = 0; j < f.size(); ++j) f[j] = std::pow(base, -2.0 * j / dims);
  return f;
}

// Position interpolation (Chen et al. 2023): every frequency / factor.
TEST(RopeTest, LinearScalingDividesEveryFrequency) {
  RopeScaling s;
  s.kind = RopeScaling::Kind::kLinear;
  s.factor = 4.0f;
  std::vector<double> f = InvFreq(10000, 64);
  for (double& v : f) v /= 4.0;
  ExpectScaledRope(s, f, 1.0, 10000.0f, 64);
}

// Llama 3.1's frequencies (its model card's rule, as the converter turns it
// into rope_freqs.weight): wavelengths below original / high_freq_factor
// keep their frequency, those above original / low_freq_factor are divided
// by factor, and the ones between are interpolated smoothly.
TEST(RopeTest, Llama3FrequencyFactors) {
  const double factor = 8, low = 1, high = 4, original = 8192;
  const std::vector<double> base_freq = InvFreq(500000, 64);
  std::vector<double> scaled;
  RopeScaling s;
  for (double f : base_freq) {
    const double wavelength = 2 * std::numbers::pi / f;
    double g;
    if (wavelength < original / high) {
      g = f;
    } else if (wavelength > original / low) {
      g = f / factor;
    } else {
      const double smooth = (original / wavelength - low) / (high - low);
      g = (1 - smooth) * f / factor + smooth * f;
    }
    scaled.push_back(g);
    s.freq_factors.push_back(float(f / g));
  }
  EXPECT_FLOAT_EQ(s.freq_factors.front(), 1.0f);  // fast pairs untouched
  EXPECT_FLOAT_EQ(s.freq_factors.back(), 8.0f);   // slow ones interpolated
  ExpectScaledRope(s, scaled, 1.0, 500000.0f, 64);
}

// YaRN (Peng et al. 2023, as Hugging Face's transformers computes it): the
// pairs that turn more than beta_fast times over the original context keep
// their frequency, those that turn less than beta_slow times are
// interpolated (/ factor), with a linear ramp in the pair index between;
// q and k are scaled by 0.1 ln(factor) + 1.
TEST(RopeTest, YarnBlendsAndScales) {
  const double base = 10000, factor = 4, original = 4096;
  const size_t dims = 64;
  auto pair_turning = [&](double rotations) {
    return dims * std::log(original / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(base));
  };
  const double low = std::max(0.0, std::floor(pair_turning(32)));
  const double high = std::min(double(dims - 1), std::ceil(pair_turning(1)));
  ASSERT_LT(low, high);
  std::vector<double> f = InvFreq(base, dims);
  for (size_t j = 0; j < f.size(); ++j) {
    const double ramp = std::clamp((j - low) / (high - low), 0.0, 1.0);
    const double extrapolate = 1 - ramp;
    f[j] = f[j] / factor * (1 - extrapolate) + f[j] * extrapolate;
  }
  RopeScaling s;
  s.kind = RopeScaling::Kind::kYarn;
  s.factor = float(factor);
  s.original_context = int(original);
  EXPECT_NEAR(RopeMagnitude(s), 0.1 * std::log(factor) + 1, 1e-6);
  ExpectScaledRope(s, f, 0.1 * std::log(factor) + 1, float(base), dims);
}

TEST(RopeTest, PositionZeroIsIdentity) {
  std::mt19937 rng(24);
  for (RopeStyle style : {RopeStyle::kAdjacent, RopeStyle::kHalves}) {
    const std::vector<float> x0 = RandomFloats(rng, 3 * 24);
    std::vector<float> x = x0;
    Rope(x.data(), 3, 24, 16, 0, 10000.0f, style);
    EXPECT_EQ(x, x0);
  }
}

TEST(RopeTest, StylesPairDifferentDims) {
  // One head [1, 0, 0, 0] at angle pi/2 for pair 0 (pos * base^0):
  // adjacent rotates dims (0, 1), halves rotates dims (0, 2).
  const int pos = 1;
  std::vector<float> adjacent = {1, 0, 0, 0};
  std::vector<float> halves = {1, 0, 0, 0};
  Rope(adjacent.data(), 1, 4, 4, pos, 10000.0f, RopeStyle::kAdjacent);
  Rope(halves.data(), 1, 4, 4, pos, 10000.0f, RopeStyle::kHalves);
  EXPECT_FLOAT_EQ(adjacent[0], std::cos(1.0f));
  EXPECT_FLOAT_EQ(adjacent[1], std::sin(1.0f));
  EXPECT_EQ(adjacent[2], 0.0f);
  EXPECT_FLOAT_EQ(halves[0], std::cos(1.0f));
  EXPECT_EQ(halves[1], 0.0f);
  EXPECT_FLOAT_EQ(halves[2], std::sin(1.0f));
}

std::vector<double> SoftmaxDouble(const std::vector<float>& x) {
  double max = x[0];
  for (float v : x) max = std::max<double>(max, v);
  std::vector<double> p(x.size());
  double sum = 0;
  for (size_t i = 0; i < x.size(); ++i) sum += p[i] = std::exp(x[i] - max);
  for (double& v : p) v /= sum;
  return p;
}

TEST(SoftmaxTest, MatchesDoubleAndSumsToOne) {
  std::mt19937 rng(25);
  for (size_t n : {1, 2, 9, 100, 1000}) {
    const std::vector<float> x0 = RandomFloats(rng, n, -20.0f, 20.0f);
    std::vector<float> x = x0;
    Softmax(x.data(), n);
    const std::vector<double> ref = SoftmaxDouble(x0);
    const float max = *std::max_element(x0.begin(), x0.end());
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
      sum += x[i];
      // x - max is rounded (error up to u |x - max|) before exp amplifies it.
      const double rel = (n + 8 + std::fabs(x0[i] - max)) * kU;
      EXPECT_NEAR(x[i], ref[i], rel * ref[i]) << n << " " << i;
    }
    EXPECT_NEAR(sum, 1.0, (n + 8) * kU) << n;
  }
}

TEST(SoftmaxTest, ShiftInvariant) {
  std::mt19937 rng(26);
  const std::vector<float> x0 = RandomFloats(rng, 50, -5.0f, 5.0f);
  std::vector<float> x = x0;
  std::vector<float> shifted = x0;
  for (float& v : shifted) v += 37.0f;
  Softmax(x.data(), x.size());
  Softmax(shifted.data(), shifted.size());
  for (size_t i = 0; i < x.size(); ++i) {
    // Adding 37 rounds x to a coarser grid (ulp 2^-18 at 40), hence 1e-5.
    EXPECT_NEAR(shifted[i], x[i], 1e-5 * x[i]) << i;
  }
}

TEST(SoftmaxTest, LargeInputsStayFinite) {
  std::vector<float> x = {1000.0f, 1001.0f};
  Softmax(x.data(), 2);
  const double e = std::exp(1.0);
  EXPECT_NEAR(x[0], 1 / (1 + e), 1e-7);
  EXPECT_NEAR(x[1], e / (1 + e), 1e-7);
  std::vector<float> y = {-1e30f, 3e38f, -3e38f};
  Softmax(y.data(), 3);
  EXPECT_EQ(y, (std::vector<float>{0.0f, 1.0f, 0.0f}));
  std::vector<float> one = {-5.0f};
  Softmax(one.data(), 1);
  EXPECT_EQ(one[0], 1.0f);
}

TEST(SiluTest, MatchesDouble) {
  std::mt19937 rng(27);
  std::vector<float> x0 = RandomFloats(rng, 77, -10.0f, 10.0f);
  for (float v : {0.0f, -100.0f, -1000.0f, 100.0f, 1000.0f}) x0.push_back(v);
  std::vector<float> x = x0;
  Silu(x.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = x0[i] / (1 + std::exp(-static_cast<double>(x0[i])));
    ASSERT_TRUE(std::isfinite(x[i])) << x0[i];
    // Near x = -88 and below, expf overflows and silu flushes to -0.
    const double abs_tol = x0[i] < -80 ? 1e-33 : 0;
    EXPECT_NEAR(x[i], ref, 8 * kU * std::fabs(ref) + abs_tol) << x0[i];
  }
}

TEST(SiluTest, SiluMulIsSiluTimesUp) {
  std::mt19937 rng(28);
  const std::vector<float> gate0 = RandomFloats(rng, 41, -6.0f, 6.0f);
  const std::vector<float> up = RandomFloats(rng, 41, -2.0f, 2.0f);
  std::vector<float> gate = gate0;
  SiluMul(gate.data(), up.data(), gate.size());
  std::vector<float> expected = gate0;
  Silu(expected.data(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) expected[i] *= up[i];
  EXPECT_EQ(gate, expected);
}

TEST(AddInPlaceTest, AddsElementwise) {
  std::vector<float> y = {1.0f, -2.0f, 0.5f};
  const std::vector<float> b = {0.25f, 2.0f, -4.0f};
  AddInPlace(y.data(), b.data(), y.size());
  EXPECT_EQ(y, (std::vector<float>{1.25f, 0.0f, -3.5f}));
}

}  // namespace
}  // namespace kvstash::kernels
