// Token eviction in a LocalKvCache: a compacted cache gives the attention of
// the uncompressed cache with the evicted tokens masked: bit for bit what
// the fast kernel gives over the kept rows gathered into one run, and within
// 1e-5 of a double-precision softmax over the kept tokens; positions written
// after the compaction follow the kept rows; bad selections change nothing.
#include "engine/kv_compaction.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/local_kv_cache.h"
#include "kernels/attention_fast.h"

namespace kvstash {
namespace {

using kernels::KvFormat;
using kernels::KvSide;
using kernels::KvType;

constexpr int kLayers = 2, kHeads = 2, kDim = 16, kGroup = 2;
constexpr int kPositions = 40;

// Writes `n` random positions from `from` into `kv`; returns their K/V
// ([pos][layer][head][dim] each).
void Fill(LocalKvCache& kv, int from, int n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1, 1);
  kv.BeginWrite(from, from + n);
  std::vector<float> k(kHeads * kDim), v(kHeads * kDim);
  for (int l = 0; l < kLayers; ++l) {
    for (int p = from; p < from + n; ++p) {
      for (float& x : k) x = u(rng);
      for (float& x : v) x = u(rng);
      kv.Write(l, p, k.data(), v.data());
    }
    kv.Seal(l, from, from + n);
  }
}

// The decoded rows of one side of (layer, head) for a query at n - 1.
std::vector<float> Rows(const KvView& kv, int layer, int head, int n,
                        KvSide side) {
  std::vector<kernels::KvRun> runs;
  kv.Read(layer, head, n, &runs);
  std::vector<float> out;
  for (const kernels::KvRun& run : runs) {
    for (size_t t = 0; t < run.n_tokens; ++t) {
      out.resize(out.size() + kDim);
      kernels::KvDecodeRow(
          side == KvSide::kK ? run.k_type : run.v_type, side,
          static_cast<const uint8_t*>(side == KvSide::kK ? run.k : run.v), t,
          kDim, &out[out.size() - kDim]);
    }
  }
  return out;
}

// A selection keeping a random subset (at least one row) of each pair.
KvSelection RandomSelection(std::mt19937& rng, int rows) {
  KvSelection s;
  std::bernoulli_distribution keep(0.4);
  for (int i = 0; i < kLayers * kHeads; ++i) {
    std::vector<int32_t> kept;
    for (int r = 0; r < rows; ++r) {
      if (keep(rng) || (r == rows - 1 && kept.empty())) kept.push_back(r);
    }
    s.rows.push_back(kept);
  }
  return s;
}

class KvCompactionTest : public ::testing::TestWithParam<KvType> {};

TEST_P(KvCompactionTest, AttentionOverKeptRowsEqualsMaskedAttention) {
  const KvFormat format{GetParam(), GetParam()};
  std::mt19937 rng(7);
  LocalKvCache full(kLayers, kHeads, kDim, 64, format);
  Fill(full, 0, kPositions, rng);
  std::mt19937 same(7);
  LocalKvCache kv(kLayers, kHeads, kDim, 64, format);
  Fill(kv, 0, kPositions, same);
  const KvSelection selection = RandomSelection(rng, kPositions);
  ASSERT_TRUE(kv.Compact(kPositions, selection).ok());

  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> q(kGroup * kDim), out(kGroup * kDim),
      gathered_out(kGroup * kDim);
  for (float& x : q) x = u(rng);
  if (kernels::KvRotated(format.k)) {
    for (int h = 0; h < kGroup; ++h) kernels::KvRotate(&q[h * kDim], kDim);
  }
  const float scale = 1.0f / std::sqrt(float(kDim));
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) {
      const std::vector<int32_t>& kept = selection.rows[size_t(l * kHeads + h)];
      const int rows = kv.Rows(l, h, kPositions);
      ASSERT_EQ(rows, int(kept.size()));
      std::vector<kernels::KvRun> runs;
      kv.Read(l, h, kPositions, &runs);
      kernels::AttentionFast(q.data(), kGroup, kDim, runs, size_t(rows), scale,
                             out.data());
      // The kept rows of the full cache, gathered into one run.
      std::vector<kernels::KvRun> full_runs;
      full.Read(l, h, kPositions, &full_runs);
      const kernels::BlockLayout& layout = full.layout();
      std::vector<uint8_t> k_run, v_run;
      for (int32_t r : kept) {
        const kernels::KvRun& run = full_runs[size_t(r / 16)];
        for (const KvSide side : {KvSide::kK, KvSide::kV}) {
          const size_t bytes = layout.row_bytes(side);
          const auto* src =
              static_cast<const uint8_t*>(side == KvSide::kK ? run.k : run.v) +
              layout.RowOffset(side, r % 16);
          std::vector<uint8_t>& dst = side == KvSide::kK ? k_run : v_run;
          dst.insert(dst.end(), src, src + bytes);
        }
      }
      const kernels::KvRun one{k_run.data(), v_run.data(), kept.size(),
                               format.k, format.v};
      kernels::AttentionFast(q.data(), kGroup, kDim, {&one, 1}, kept.size(),
                             scale, gathered_out.data());
      EXPECT_EQ(std::memcmp(out.data(), gathered_out.data(),
                            out.size() * sizeof(float)),
                0)
          << "layer " << l << " head " << h;
      // Masked attention over the full cache, in double.
      const std::vector<float> keys = Rows(full, l, h, kPositions, KvSide::kK);
      const std::vector<float> values =
          Rows(full, l, h, kPositions, KvSide::kV);
      for (int g = 0; g < kGroup; ++g) {
        std::vector<double> w;
        double max = -INFINITY, sum = 0;
        for (int32_t r : kept) {
          double dot = 0;
          for (int d = 0; d < kDim; ++d) {
            dot += double(q[g * kDim + d]) * keys[size_t(r) * kDim + d];
          }
          w.push_back(dot * scale);
          max = std::max(max, w.back());
        }
        for (double& x : w) sum += (x = std::exp(x - max));
        for (int d = 0; d < kDim; ++d) {
          double ref = 0;
          for (size_t i = 0; i < kept.size(); ++i) {
            ref += w[i] / sum * values[size_t(kept[i]) * kDim + d];
          }
          EXPECT_NEAR(out[g * kDim + d], ref, 1e-5);
        }
      }
    }
  }
}

TEST_P(KvCompactionTest, LaterPositionsFollowTheKeptRowsAndFreeBlocks) {
  const KvFormat format{GetParam(), GetParam()};
  std::mt19937 rng(3);
  LocalKvCache kv(kLayers, kHeads, kDim, 48, format);
  Fill(kv, 0, kPositions, rng);
  EXPECT_EQ(kv.BlocksHeld(kPositions), 3);
  KvSelection s;
  for (int i = 0; i < kLayers * kHeads; ++i) {
    std::vector<int32_t> kept;
    for (int r = 0; r < 10 + i; ++r) kept.push_back(r * 3);
    s.rows.push_back(kept);
  }
  ASSERT_TRUE(kv.Compact(kPositions, s).ok());
  // The longest pair keeps 13 rows: one block, and room for 48 - 13 more.
  EXPECT_EQ(kv.BlocksHeld(kPositions), 1);
  EXPECT_EQ(kv.capacity(), 48 + kPositions - 13);
  std::vector<float> before = Rows(kv, 1, 1, kPositions, KvSide::kV);
  Fill(kv, kPositions, 20, rng);
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) {
      EXPECT_EQ(kv.Rows(l, h, kPositions + 20), 10 + l * kHeads + h + 20);
    }
  }
  std::vector<float> after = Rows(kv, 1, 1, kPositions + 20, KvSide::kV);
  ASSERT_EQ(after.size(), before.size() + 20 * kDim);
  EXPECT_TRUE(std::equal(before.begin(), before.end(), after.begin()));
  EXPECT_EQ(kv.BlocksHeld(kPositions + 20), 3);  // 13 + 20 rows
}

// Into fresh blocks (as a server compacts): the kept rows are copied, every
// other row of the receiving blocks is zeroed, whatever they held before.
TEST_P(KvCompactionTest, FreshBlocksHoldTheKeptRowsAndNothingElse) {
  kernels::BlockLayout layout{kLayers, kHeads, kDim, 16,
                              KvFormat{GetParam(), GetParam()}};
  const size_t bb = layout.block_bytes();
  std::vector<uint8_t> arena(5 * bb);
  std::mt19937 rng(5);
  for (uint8_t& b : arena) b = uint8_t(rng());
  const std::vector<int32_t> from = {0, 1, 2}, to = {4, 3};
  KvSelection s;
  for (int i = 0; i < kLayers * kHeads; ++i) {
    std::vector<int32_t> kept;
    for (int r = 0; r < 14 + 2 * i; ++r) kept.push_back(r * 2);  // 14..20
    s.rows.push_back(kept);
  }
  const std::vector<uint8_t> source = arena;
  KvCompaction c;
  ASSERT_TRUE(
      CompactRows(layout, arena.data(), from, to, kPositions, s, &c).ok());
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) {
      const int kept = 14 + 2 * (l * kHeads + h);
      for (const KvSide side : {KvSide::kK, KvSide::kV}) {
        const size_t n = layout.row_bytes(side);
        for (int r = 0; r < 32; ++r) {
          const uint8_t* got = arena.data() + size_t(to[size_t(r / 16)]) * bb +
                               layout.Offset(l, side, h, r % 16);
          if (r < kept) {
            const uint8_t* want = source.data() +
                                  size_t(from[size_t(2 * r / 16)]) * bb +
                                  layout.Offset(l, side, h, 2 * r % 16);
            EXPECT_EQ(std::memcmp(got, want, n), 0) << l << h << r;
          } else {
            EXPECT_EQ(std::count(got, got + n, 0), ptrdiff_t(n)) << l << h << r;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(PerTokenTypes, KvCompactionTest,
                         ::testing::Values(KvType::kF32, KvType::kF16,
                                           KvType::kQ8, KvType::kQ4H),
                         [](const auto& info) {
                           return std::string(kernels::KvTypeName(info.param));
                         });

TEST(KvCompactionErrors, BadSelectionsChangeNothing) {
  std::mt19937 rng(1);
  LocalKvCache kv(kLayers, kHeads, kDim, 48, {});
  Fill(kv, 0, 20, rng);
  const std::vector<float> keys = Rows(kv, 0, 0, 20, KvSide::kK);
  KvSelection too_few;
  too_few.rows.resize(3);
  KvSelection unsorted;
  unsorted.rows.assign(4, {1, 0});
  KvSelection out_of_range;
  out_of_range.rows.assign(4, {0, 20});
  for (const KvSelection* s : {&too_few, &unsorted, &out_of_range}) {
    const Status status = kv.Compact(20, *s);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
    EXPECT_FALSE(kv.compaction().compacted());
    EXPECT_EQ(Rows(kv, 0, 0, 20, KvSide::kK), keys);
  }
  LocalKvCache kivi(kLayers, kHeads, kDim, 48,
                    {KvType::kKivi4, KvType::kKivi4});
  Fill(kivi, 0, 20, rng);
  KvSelection all;
  all.rows.assign(4, {0, 1});
  EXPECT_EQ(kivi.Compact(20, all).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstash
