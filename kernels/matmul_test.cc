#include "kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::kAllDTypes;
using testing::RandomFloats;
using testing::RefElem;

// A random [rows][cols] weight matrix stored in type `t`.
struct Weights {
  DType type;
  size_t rows;
  size_t cols;
  std::vector<uint8_t> bytes;

  Weights(DType t, size_t r, size_t c, std::mt19937& rng)
      : type(t), rows(r), cols(c), bytes(r * RowBytes(t, c)) {
    for (size_t i = 0; i < rows; ++i) {
      const std::vector<float> row = RandomFloats(rng, cols);
      QuantizeRow(t, row.data(), cols, Row(i));
    }
  }
  uint8_t* Row(size_t r) { return bytes.data() + r * RowBytes(type, cols); }
};

// Column counts to try: any for float types, whole blocks for quantized ones
// (32 elements, or 256 for the K-quants).
std::vector<size_t> ColsFor(DType t) {
  if (DTypeBlockElems(t) == 1) return {1, 7, 33, 100, 257};
  if (IsKQuant(t)) return {256, 512, 768};
  return {32, 96, 320};
}

// Checks y = W x against a double-precision dot of the independently decoded
// rows. The tolerance is the worst case of a float dot product of n terms
// summed in order: (n + 1) u sum_i |w_i x_i|, u = 2^-24.
void ExpectMatchesDoubleDot(Weights& w, const float* x, const float* y) {
  for (size_t r = 0; r < w.rows; ++r) {
    double dot = 0;
    double sum_abs = 0;
    for (size_t i = 0; i < w.cols; ++i) {
      const double term = RefElem(w.type, w.Row(r), i) * x[i];
      dot += term;
      sum_abs += std::fabs(term);
    }
    const double tol = 1.01 * (w.cols + 1) * 0x1p-24 * sum_abs;
    ASSERT_NEAR(y[r], dot, tol)
        << DTypeName(w.type) << " cols " << w.cols << " row " << r;
  }
}

TEST(MatVecTest, MatchesDoubleDotForEveryType) {
  std::mt19937 rng(11);
  for (DType t : kAllDTypes) {
    for (size_t cols : ColsFor(t)) {
      for (size_t rows : {1, 5, 17}) {
        Weights w(t, rows, cols, rng);
        const std::vector<float> x = RandomFloats(rng, cols);
        std::vector<float> y(rows);
        MatVec(t, w.bytes.data(), rows, cols, x.data(), y.data());
        ExpectMatchesDoubleDot(w, x.data(), y.data());
      }
    }
  }
}

TEST(MatMulTest, MatchesDoubleDotForEveryType) {
  std::mt19937 rng(12);
  constexpr size_t kRows = 9;
  constexpr size_t kTokens = 11;
  for (DType t : kAllDTypes) {
    for (size_t cols : ColsFor(t)) {
      Weights w(t, kRows, cols, rng);
      const std::vector<float> x = RandomFloats(rng, kTokens * cols);
      std::vector<float> y(kTokens * kRows);
      MatMul(t, w.bytes.data(), kRows, cols, x.data(), kTokens, y.data());
      for (size_t tok = 0; tok < kTokens; ++tok) {
        ExpectMatchesDoubleDot(w, &x[tok * cols], &y[tok * kRows]);
      }
    }
  }
}

// Token counts below, at and past the internal token block, bit for bit.
TEST(MatMulTest, EqualsMatVecTokenByToken) {
  std::mt19937 rng(13);
  constexpr size_t kRows = 6;
  for (DType t : kAllDTypes) {
    const size_t cols = ColsFor(t)[1];
    Weights w(t, kRows, cols, rng);
    for (size_t n : {1, 3, 8, 13, 17}) {
      const std::vector<float> x = RandomFloats(rng, n * cols);
      std::vector<float> y(n * kRows);
      MatMul(t, w.bytes.data(), kRows, cols, x.data(), n, y.data());
      for (size_t tok = 0; tok < n; ++tok) {
        std::vector<float> expected(kRows);
        MatVec(t, w.bytes.data(), kRows, cols, &x[tok * cols], expected.data());
        const std::vector<float> got(y.begin() + tok * kRows,
                                     y.begin() + (tok + 1) * kRows);
        ASSERT_EQ(got, expected)
            << DTypeName(t) << " n " << n << " token " << tok;
      }
    }
  }
}

}  // namespace
}  // namespace kvstash::kernels
