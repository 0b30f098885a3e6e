#include "kernels/matmul_fast.h"

#include <gtest/gtest.h>
#include <link.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "hwy/aligned_allocator.h"
#include "hwy/tests/hwy_gtest.h"
#include "kernels/dtype.h"
#include "kernels/matmul.h"
#include "kernels/test_util.h"

// Outside kvstash::kernels, whose `testing` namespace would hide ::testing
// inside the Highway test macros.
namespace kvstash_matmul_fast_test {
namespace {

using kvstash::kernels::DequantizeRow;
using kvstash::kernels::DType;
using kvstash::kernels::DTypeBlockElems;
using kvstash::kernels::DTypeName;
using kvstash::kernels::F16ToF32;
using kvstash::kernels::F32ToBF16;
using kvstash::kernels::F32ToF16;
using kvstash::kernels::IsKQuant;
using kvstash::kernels::kQuantBlock;
using kvstash::kernels::KQuantElemAt;
using kvstash::kernels::kSuperBlock;
using kvstash::kernels::MatMul;
using kvstash::kernels::MatMulRows;
using kvstash::kernels::PrepareActivations;
using kvstash::kernels::PreparedActivationBytes;
using kvstash::kernels::QuantizeRow;
using kvstash::kernels::RowBytes;
using kvstash::kernels::testing::kAllDTypes;
using kvstash::kernels::testing::RandomFloats;

// Runs every test once per Highway target compiled in and supported by this
// CPU (the AVX3_DL run covers the VNNI and, where present, BF16 kernels).
class MatMulFastTest : public hwy::TestWithParamTarget {};
HWY_TARGET_INSTANTIATE_TEST_SUITE_P(MatMulFastTest);

constexpr DType kKQuants[] = {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K};

// A random [rows][cols] weight matrix of type `t`, and its decoded values.
struct Weights {
  Weights(DType t, size_t rows, size_t cols, std::mt19937& rng)
      : type(t),
        rows(rows),
        cols(cols),
        bytes(rows * RowBytes(t, cols)),
        values(rows * cols) {
    for (size_t r = 0; r < rows; ++r) {
      const std::vector<float> row = RandomFloats(rng, cols);
      QuantizeRow(t, row.data(), cols, bytes.data() + r * RowBytes(t, cols));
    }
    Decode();
  }
  // Weights of the given bytes ([rows][RowBytes(t, cols)]).
  Weights(DType t, size_t rows, size_t cols, std::vector<uint8_t> raw)
      : type(t),
        rows(rows),
        cols(cols),
        bytes(std::move(raw)),
        values(rows * cols) {
    Decode();
  }
  void Decode() {
    for (size_t r = 0; r < rows; ++r) {
      DequantizeRow(type, bytes.data() + r * RowBytes(type, cols), cols,
                    values.data() + r * cols);
    }
  }
  // The min dmin * m_j of element i of row r (0 but for Q4_K and Q5_K).
  double Min(size_t r, size_t i) const {
    if (type != DType::kQ4_K && type != DType::kQ5_K) return 0;
    const size_t block_bytes = RowBytes(type, kSuperBlock);
    const uint8_t* block =
        bytes.data() + r * RowBytes(type, cols) + i / kSuperBlock * block_bytes;
    uint16_t dmin;
    std::memcpy(&dmin, block + 2, sizeof(dmin));
    return std::fabs(F16ToF32(dmin)) *
           KQuantElemAt(type, block, static_cast<int>(i % kSuperBlock)).sub_min;
  }
  DType type;
  size_t rows;
  size_t cols;
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // [rows][cols]
};

// PrepareActivations into a fresh aligned buffer.
hwy::AlignedFreeUniquePtr<uint8_t[]> Prepare(DType t, const float* x,
                                             size_t cols, size_t n) {
  const size_t bytes = PreparedActivationBytes(t, cols, n);
  auto buf = hwy::AllocateAligned<uint8_t>(std::max<size_t>(bytes, 1));
  PrepareActivations(t, x, cols, n, buf.get());
  return buf;
}

// The bound stated in matmul_fast.h for y[t][r] against the scalar MatMul.
double Tolerance(const Weights& w, const float* xt, size_t r) {
  const float* wr = w.values.data() + r * w.cols;
  double sum_abs = 0;  // S
  for (size_t i = 0; i < w.cols; ++i) sum_abs += std::fabs(wr[i] * xt[i]);
  switch (w.type) {
    case DType::kF32:
    case DType::kF16:
      return 1e-5 * sum_abs;
    case DType::kBF16:
      return (0x1p-8 + 1e-5) * sum_abs;
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K: {
      // Rounding x to the step d_b moves each element by at most d_b / 2.
      // Q4_K / Q5_K: the f32 rounding of scale * q, as large as min + |W|,
      // counts too.
      double quant = 0;
      double mins = 0;
      for (size_t i = 0; i < w.cols; ++i) {
        mins += w.Min(r, i) * std::fabs(xt[i]);
      }
      for (size_t b = 0; b < w.cols / kQuantBlock; ++b) {
        double amax = 0;
        double w_abs = 0;
        for (size_t i = b * kQuantBlock; i < (b + 1) * kQuantBlock; ++i) {
          amax = std::max(amax, std::fabs(static_cast<double>(xt[i])));
          w_abs += std::fabs(wr[i]);
        }
        quant += amax / 127 / 2 * w_abs;
      }
      return 1.001 * quant + 1e-5 * (sum_abs + quant + mins);
    }
  }
  return 0;
}

std::vector<size_t> ColsFor(DType t) {
  if (DTypeBlockElems(t) == 1) return {1, 15, 16, 17, 33, 64, 100, 257};
  if (IsKQuant(t)) return {256, 512, 2304};
  return {32, 64, 96, 160, 320};
}

// Columns of whole blocks of type t: `quant` for Q8_0 / Q4_0, a multiple of
// 256 for the K-quants.
size_t Cols(DType t, size_t floats, size_t quant, size_t k_quant) {
  if (DTypeBlockElems(t) == 1) return floats;
  return IsKQuant(t) ? k_quant : quant;
}

// Checks MatMulRows over all rows of w against MatMul for n random tokens.
void ExpectMatchesReference(const Weights& w, size_t n, std::mt19937& rng) {
  const DType t = w.type;
  const size_t rows = w.rows, cols = w.cols;
  const std::vector<float> x = RandomFloats(rng, n * cols);
  std::vector<float> want(n * rows);
  MatMul(t, w.bytes.data(), rows, cols, x.data(), n, want.data());
  const auto prepared = Prepare(t, x.data(), cols, n);
  std::vector<float> got(n * rows, std::numeric_limits<float>::quiet_NaN());
  MatMulRows(t, w.bytes.data(), cols, x.data(), prepared.get(), n, 0, rows,
             got.data(), rows);
  for (size_t tok = 0; tok < n; ++tok) {
    for (size_t r = 0; r < rows; ++r) {
      ASSERT_NEAR(got[tok * rows + r], want[tok * rows + r],
                  Tolerance(w, x.data() + tok * cols, r))
          << DTypeName(t) << " rows " << rows << " cols " << cols << " n " << n
          << " token " << tok << " row " << r;
    }
  }
}

void ExpectMatchesReference(DType t, size_t rows, size_t cols, size_t n,
                            std::mt19937& rng) {
  ExpectMatchesReference(Weights(t, rows, cols, rng), n, rng);
}

TEST_P(MatMulFastTest, MatchesScalarReferenceForEveryType) {
  std::mt19937 rng(21);
  for (DType t : kAllDTypes) {
    for (size_t cols : ColsFor(t)) {
      for (size_t rows : {1, 5, 13}) {
        for (size_t n : {1, 2, 4, 7}) {
          ExpectMatchesReference(t, rows, cols, n, rng);
        }
      }
    }
  }
}

TEST_P(MatMulFastTest, MatchesScalarReferenceForEveryBatchSize) {
  std::mt19937 rng(22);
  for (DType t : kAllDTypes) {
    const size_t cols = Cols(t, 71, 96, 256);
    for (size_t n = 1; n <= 20; ++n)
      ExpectMatchesReference(t, 11, cols, n, rng);
  }
}

// K-quants: decode (1-3 tokens) and batches, row counts around the tiles
// (8 rows for decode, 32 for a batch), several super-blocks per row.
TEST_P(MatMulFastTest, KQuantsMatchScalarReference) {
  std::mt19937 rng(27);
  for (DType t : kKQuants) {
    for (size_t cols : {256, 512, 2304}) {
      for (size_t rows : {1, 7, 9, 33, 40}) {
        const Weights w(t, rows, cols, rng);
        for (size_t n : {1, 2, 3, 4, 6, 7, 13, 20}) {
          ExpectMatchesReference(w, n, rng);
        }
      }
    }
  }
}

// K-quant rows of random bytes (any quants, scales and mins, with finite
// f16 factors), and of the largest quants and scales against activations of
// equal magnitude, where the integer sums are largest.
TEST_P(MatMulFastTest, KQuantsOfAnyBitsMatchScalarReference) {
  std::mt19937 rng(28);
  for (DType t : kKQuants) {
    constexpr size_t kRows = 37, kCols = 512;
    const size_t block_bytes = RowBytes(t, kSuperBlock);
    // Offsets of the f16 factors in a super-block (d, dmin; d for Q6_K).
    const std::vector<size_t> halves =
        t == DType::kQ6_K ? std::vector<size_t>{block_bytes - 2}
                          : std::vector<size_t>{0, 2};
    for (int fill : {-1, 0x80, 0xFF}) {
      std::vector<uint8_t> raw(kRows * RowBytes(t, kCols));
      std::uniform_int_distribution<int> byte(0, 255);
      for (uint8_t& b : raw) {
        b = static_cast<uint8_t>(fill < 0 ? byte(rng) : fill);
      }
      for (size_t block = 0; block < raw.size() / block_bytes; ++block) {
        for (size_t h : halves) {
          const float f =
              fill < 0 ? RandomFloats(rng, 1, -0.01f, 0.01f)[0] : 1.0f / 1024;
          const uint16_t bits = F32ToF16(f);
          std::memcpy(raw.data() + block * block_bytes + h, &bits, 2);
        }
      }
      const Weights w(t, kRows, kCols, std::move(raw));
      for (size_t n : {1, 3, 5}) {
        SCOPED_TRACE(testing::Message() << "fill " << fill << " n " << n);
        if (fill < 0) {
          ExpectMatchesReference(w, n, rng);
          continue;
        }
        // x = +-1 everywhere: every activation quantizes to +-127.
        std::vector<float> x(n * kCols, fill == 0x80 ? -1.0f : 1.0f);
        std::vector<float> want(n * kRows);
        MatMul(t, w.bytes.data(), kRows, kCols, x.data(), n, want.data());
        const auto prepared = Prepare(t, x.data(), kCols, n);
        std::vector<float> got(n * kRows);
        MatMulRows(t, w.bytes.data(), kCols, x.data(), prepared.get(), n, 0,
                   kRows, got.data(), kRows);
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_NEAR(got[i], want[i],
                      Tolerance(w, x.data() + i / kRows * kCols, i % kRows))
              << DTypeName(t) << " element " << i;
        }
      }
    }
  }
}

// Rows long enough for several column chunks and L2 row blocks, and batches
// of several token blocks.
TEST_P(MatMulFastTest, MatchesScalarReferenceForLargeShapes) {
  std::mt19937 rng(23);
  for (DType t : kAllDTypes) {
    ExpectMatchesReference(t, 70, Cols(t, 4100, 4128, 4352), 9, rng);
    ExpectMatchesReference(t, 6, Cols(t, 40, 64, 256), 200, rng);
  }
}

// Expects results bit-identical whatever the row split and batch composition,
// and MatMulRows to write exactly its rows of y, for one shape.
void ExpectInvariant(DType t, size_t rows, size_t cols, std::mt19937& rng) {
  constexpr size_t kTokens = 17;
  const size_t ldy = rows + 3;
  constexpr float kUntouched = -12345.0f;
  const Weights w(t, rows, cols, rng);
  const std::vector<float> x = RandomFloats(rng, kTokens * cols);
  const auto prepared = Prepare(t, x.data(), cols, kTokens);

  std::vector<float> whole(kTokens * ldy, kUntouched);
  MatMulRows(t, w.bytes.data(), cols, x.data(), prepared.get(), kTokens, 0,
             rows, whole.data(), ldy);

  // Rows in uneven pieces: each call writes its rows only.
  std::vector<float> pieces(kTokens * ldy, kUntouched);
  const size_t cuts[] = {0, 1, 6, 7, 13, rows};
  ASSERT_LT(13u, rows);
  for (size_t i = 0; i + 1 < std::size(cuts); ++i) {
    MatMulRows(t, w.bytes.data(), cols, x.data(), prepared.get(), kTokens,
               cuts[i], cuts[i + 1], pieces.data(), ldy);
    for (size_t tok = 0; tok < kTokens; ++tok) {
      for (size_t r = cuts[i + 1]; r < ldy; ++r) {
        ASSERT_EQ(pieces[tok * ldy + r], kUntouched)
            << DTypeName(t) << " row " << r << " written early";
      }
    }
  }
  ASSERT_EQ(
      std::memcmp(pieces.data(), whole.data(), whole.size() * sizeof(float)), 0)
      << DTypeName(t);

  // Each token alone (decode) gives the bits it got inside the batch.
  for (size_t tok = 0; tok < kTokens; ++tok) {
    const float* xt = x.data() + tok * cols;
    const auto one = Prepare(t, xt, cols, 1);
    std::vector<float> y(rows);
    MatMulRows(t, w.bytes.data(), cols, xt, one.get(), 1, 0, rows, y.data(),
               rows);
    ASSERT_EQ(
        std::memcmp(y.data(), whole.data() + tok * ldy, rows * sizeof(float)),
        0)
        << DTypeName(t) << " token " << tok;
  }
}

// Shapes: a small one, and one with several 32-row panels, a partial one and
// more than one 1024-column chunk with an odd number of blocks (of
// super-blocks for the K-quants).
TEST_P(MatMulFastTest, ResultsDoNotDependOnRowRangeOrBatch) {
  std::mt19937 rng(24);
  for (DType t : kAllDTypes) {
    ExpectInvariant(t, 19, Cols(t, 47, 96, 256), rng);
    ExpectInvariant(t, 77, Cols(t, 1100, 33 * kQuantBlock, 5 * kSuperBlock),
                    rng);
    if (IsKQuant(t)) ExpectInvariant(t, 21, 9 * kSuperBlock, rng);
  }
}

// Interleaved rows give the bits of the rows as stored, for decode and
// batches, whole and in row ranges of 16, on a shape with a partial 32-row
// panel and an odd number of super-blocks over more than one chunk.
TEST_P(MatMulFastTest, InterleavedRowsGiveTheBitsOfTheRowsAsStored) {
  std::mt19937 rng(27);
  for (const auto& [t, rows, cols, row_bytes] :
       {std::tuple<DType, size_t, size_t, size_t>{DType::kQ4_K, 16, kSuperBlock,
                                                  148},
        {DType::kQ4_K, 48, 5 * kSuperBlock, 148},
        {DType::kQ5_K, 16, kSuperBlock, 180},
        {DType::kQ5_K, 48, 5 * kSuperBlock, 180},
        {DType::kQ6_K, 16, kSuperBlock, 212},
        {DType::kQ6_K, 48, 5 * kSuperBlock, 212}}) {
    if (!kvstash::kernels::UsesInterleavedRows(t)) {
      GTEST_SKIP() << "this target reads " << DTypeName(t) << " rows as stored";
    }
    const Weights w(t, rows, cols, rng);
    const size_t bytes = kvstash::kernels::InterleavedBytes(t, rows, cols);
    ASSERT_EQ(bytes, rows * (cols / kSuperBlock) * row_bytes);
    auto interleaved = hwy::AllocateAligned<uint8_t>(bytes);
    kvstash::kernels::InterleaveRows(t, w.bytes.data(), rows, cols,
                                     interleaved.get());
    for (size_t n : {1, 2, 3, 4, 7, 17}) {
      const std::vector<float> x = RandomFloats(rng, n * cols);
      const auto prepared = Prepare(t, x.data(), cols, n);
      std::vector<float> stored(n * rows), whole(n * rows, -1.0f),
          pieces(n * rows, -1.0f);
      MatMulRows(t, w.bytes.data(), cols, x.data(), prepared.get(), n, 0, rows,
                 stored.data(), rows);
      kvstash::kernels::MatMulInterleavedRows(t, interleaved.get(), cols,
                                              prepared.get(), n, 0, rows,
                                              whole.data(), rows);
      for (size_t r = 0; r < rows; r += 16) {
        kvstash::kernels::MatMulInterleavedRows(t, interleaved.get(), cols,
                                                prepared.get(), n, r, r + 16,
                                                pieces.data(), rows);
      }
      EXPECT_EQ(std::memcmp(stored.data(), whole.data(),
                            stored.size() * sizeof(float)),
                0)
          << DTypeName(t) << " " << rows << " x " << cols << ", " << n
          << " tokens";
      EXPECT_EQ(std::memcmp(stored.data(), pieces.data(),
                            stored.size() * sizeof(float)),
                0)
          << DTypeName(t) << " " << rows << " x " << cols << ", " << n
          << " tokens in pieces";
    }
  }
}

TEST_P(MatMulFastTest, EmptyCallsWriteNothing) {
  std::mt19937 rng(26);
  for (DType t : kAllDTypes) {
    const size_t cols = Cols(t, 5, 32, 256);
    const Weights w(t, 3, cols, rng);
    const std::vector<float> x = RandomFloats(rng, cols);
    const auto prepared = Prepare(t, x.data(), cols, 1);
    std::vector<float> y(3, -1.0f);
    MatMulRows(t, w.bytes.data(), cols, x.data(), prepared.get(), 0, 0, 3,
               y.data(), 3);
    MatMulRows(t, w.bytes.data(), cols, x.data(), prepared.get(), 1, 2, 2,
               y.data(), 3);
    EXPECT_EQ(y, std::vector<float>(3, -1.0f)) << DTypeName(t);
  }
}

// PrepareActivations gives the documented bytes on every target.
TEST_P(MatMulFastTest, PreparedActivationsFollowTheirDefinition) {
  std::mt19937 rng(25);
  constexpr size_t kTokens = 3;
  for (size_t cols : {1, 31, 33, 96}) {
    std::vector<float> x = RandomFloats(rng, kTokens * cols, -3.0f, 3.0f);
    x[0] = std::numeric_limits<float>::quiet_NaN();
    const auto got = Prepare(DType::kBF16, x.data(), cols, kTokens);
    const auto* bf = reinterpret_cast<const uint16_t*>(got.get());
    const size_t stride =
        PreparedActivationBytes(DType::kBF16, cols, 1) / sizeof(uint16_t);
    ASSERT_GE(stride, cols);
    for (size_t t = 0; t < kTokens; ++t) {
      for (size_t i = 0; i < stride; ++i) {
        const uint16_t want = i < cols ? F32ToBF16(x[t * cols + i]) : 0;
        ASSERT_EQ(bf[t * stride + i], want) << "cols " << cols << " i " << i;
      }
    }
  }
  for (DType t : {DType::kQ8_0, DType::kQ4_0}) {
    constexpr size_t kCols = 96;
    constexpr size_t kBlocks = kCols / kQuantBlock;
    std::vector<float> x = RandomFloats(rng, kTokens * kCols, -3.0f, 3.0f);
    std::fill_n(x.begin() + kQuantBlock, kQuantBlock, 0.0f);  // d = 0
    x[2 * kQuantBlock] = 127.0f / 2;  // exact halves: ties to even
    x[2 * kQuantBlock + 1] = 0.75f;   // d = 0.5: 1.5 rounds to 2
    x[2 * kQuantBlock + 2] = 1.25f;   // 2.5 rounds to 2
    const auto got = Prepare(t, x.data(), kCols, kTokens);
    const auto* q = reinterpret_cast<const int8_t*>(got.get());
    const size_t bytes = PreparedActivationBytes(t, kCols, kTokens);
    const auto* d = reinterpret_cast<const float*>(
        got.get() + bytes - kTokens * kBlocks * sizeof(float));
    const auto* sums = reinterpret_cast<const int32_t*>(d) - kTokens * kBlocks;
    for (size_t b = 0; b < kTokens * kBlocks; ++b) {
      float amax = 0;
      for (size_t i = 0; i < kQuantBlock; ++i) {
        amax = std::max(amax, std::fabs(x[b * kQuantBlock + i]));
      }
      const float want_d = amax / 127.0f;
      ASSERT_EQ(d[b], want_d) << "block " << b;
      const float inv = want_d != 0 ? 1.0f / want_d : 0.0f;
      int32_t want_sum = 0;
      for (size_t i = 0; i < kQuantBlock; ++i) {
        const size_t e = b * kQuantBlock + i;
        ASSERT_EQ(q[e], static_cast<int8_t>(std::nearbyint(x[e] * inv)))
            << "element " << e;
        want_sum += q[e];
      }
      ASSERT_EQ(sums[b], want_sum) << "block " << b;
    }
  }
  // K-quants: the same int8 blocks and scales, with sums of each 16 int8
  // values and f32 block sums: q [n][cols], sums [n][cols / 16],
  // d [n][cols / 32], block sums [n][cols / 32].
  for (DType t : kKQuants) {
    constexpr size_t kCols = 512;
    constexpr size_t kBlocks = kCols / kQuantBlock;
    std::vector<float> x = RandomFloats(rng, kTokens * kCols, -3.0f, 3.0f);
    std::fill_n(x.begin() + kQuantBlock, kQuantBlock, 0.0f);  // d = 0
    const auto got = Prepare(t, x.data(), kCols, kTokens);
    const size_t bytes = PreparedActivationBytes(t, kCols, kTokens);
    const auto* q = reinterpret_cast<const int8_t*>(got.get());
    const auto* block_sums = reinterpret_cast<const float*>(
        got.get() + bytes - kTokens * kBlocks * sizeof(float));
    const float* d = block_sums - kTokens * kBlocks;
    const auto* sums =
        reinterpret_cast<const int32_t*>(d) - kTokens * kCols / 16;
    for (size_t b = 0; b < kTokens * kBlocks; ++b) {
      float amax = 0;
      for (size_t i = 0; i < kQuantBlock; ++i) {
        amax = std::max(amax, std::fabs(x[b * kQuantBlock + i]));
      }
      ASSERT_EQ(d[b], amax / 127.0f) << DTypeName(t) << " block " << b;
      const float inv = amax != 0 ? 1.0f / (amax / 127.0f) : 0.0f;
      int32_t want_sum[2] = {0, 0};
      for (size_t i = 0; i < kQuantBlock; ++i) {
        const size_t e = b * kQuantBlock + i;
        ASSERT_EQ(q[e], static_cast<int8_t>(std::nearbyint(x[e] * inv)))
            << DTypeName(t) << " element " << e;
        want_sum[i / 16] += q[e];
      }
      ASSERT_EQ(sums[2 * b], want_sum[0]) << DTypeName(t) << " block " << b;
      ASSERT_EQ(sums[2 * b + 1], want_sum[1]) << DTypeName(t) << " block " << b;
      ASSERT_EQ(block_sums[b], static_cast<float>(want_sum[0] + want_sum[1]))
          << DTypeName(t) << " block " << b;
    }
  }
}

// The C library zeroes a thread's whole static TLS block (every loaded
// object's thread_local data) whenever a thread starts, so per-thread
// scratch buffers are allocated on first use instead (RunCopiedChunks): a
// 4.8 MB block once made every short-lived thread of the process (a KV
// cache load's batch) cost ~1 ms.
TEST(MatMulFastThreadStorage, StaticTlsOfTheProcessStaysSmall) {
  size_t tls = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          if (info->dlpi_phdr[i].p_type == PT_TLS) {
            *static_cast<size_t*>(data) += info->dlpi_phdr[i].p_memsz;
          }
        }
        return 0;
      },
      &tls);
  EXPECT_GT(tls, 0u);  // libc's own thread_local data at least
  EXPECT_LT(tls, size_t{64} << 10);
}

}  // namespace
}  // namespace kvstash_matmul_fast_test
