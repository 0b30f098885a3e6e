#include "kernels/attention_fast.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "hwy/tests/hwy_gtest.h"
#include "kernels/attention.h"
#include "kernels/attention_test_util.h"
#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::kKvTypes;
using testing::RandomFloats;
using testing::TestKv;

// Every test runs once per Highway target that this CPU supports.
class AttentionFastTest : public hwy::TestWithParamTarget {};
// (HWY_TARGET_INSTANTIATE_TEST_SUITE_P, spelled out: its unqualified
// `testing::` would find kvstash::kernels::testing.)
INSTANTIATE_TEST_SUITE_P(
    AttentionFastTestGroup, AttentionFastTest,
    ::testing::ValuesIn(::hwy::SupportedAndGeneratedTargets()),
    ::hwy::TestParamTargetName);

// AttentionFast with `out` followed by a guard value that must survive; out
// starts as NaN, which must not leak into the result.
std::vector<float> RunFast(const std::vector<float>& q, size_t n_q,
                           size_t head_dim, DType kv_type,
                           std::span<const KvRun> runs, size_t n_ctx,
                           float scale) {
  constexpr float kGuard = 12345.0f;
  std::vector<float> out(n_q * head_dim + 1, NAN);
  out.back() = kGuard;
  AttentionFast(q.data(), n_q, head_dim, kv_type, runs, n_ctx, scale,
                out.data());
  EXPECT_EQ(out.back(), kGuard) << "wrote past out";
  out.pop_back();
  return out;
}

std::vector<float> RunReference(const std::vector<float>& q, size_t n_q,
                                size_t head_dim, DType kv_type,
                                std::span<const KvRun> runs, size_t n_ctx,
                                float scale) {
  std::vector<float> scores(n_ctx);
  std::vector<float> out(n_q * head_dim);
  Attention(q.data(), n_q, head_dim, kv_type, runs, n_ctx, scale, scores.data(),
            out.data());
  return out;
}

// Runs of 0..40 positions covering n_ctx plus 0..20 positions more, so that
// n_ctx ends inside a run, at its end, or before empty runs.
std::vector<size_t> RandomRunSizes(std::mt19937& rng, size_t n_ctx) {
  std::uniform_int_distribution<size_t> run_size(0, 40);
  const size_t total =
      n_ctx + std::uniform_int_distribution<size_t>(0, 20)(rng);
  std::vector<size_t> sizes;
  for (size_t sum = 0; sum < total;) {
    sizes.push_back(std::min(run_size(rng), total - sum));
    sum += sizes.back();
  }
  return sizes;
}

// Every output within 1e-5 of the reference (|v| <= 1, so 1e-5 of max |v|).
constexpr double kTolerance = 1e-5;

TEST_P(AttentionFastTest, MatchesReference) {
  std::mt19937 rng(41);
  // Tile and block edges first, then anything up to 600.
  const size_t kEdgeCtx[] = {1, 2, 3, 4, 5, 31, 32, 33, 63, 64, 65, 600};
  std::uniform_int_distribution<size_t> any_ctx(1, 600);
  size_t n_case = 0;
  for (DType type : kKvTypes) {
    for (size_t n_q = 1; n_q <= 8; ++n_q) {
      for (size_t head_dim : {8, 64, 80, 128, 36, 3}) {
        const size_t n_ctx =
            n_case < std::size(kEdgeCtx) ? kEdgeCtx[n_case] : any_ctx(rng);
        ++n_case;
        TestKv kv(type, head_dim, RandomRunSizes(rng, n_ctx), rng);
        const std::vector<float> q =
            RandomFloats(rng, n_q * head_dim, -2.0f, 2.0f);
        const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        const std::vector<float> fast =
            RunFast(q, n_q, head_dim, type, kv.runs(), n_ctx, scale);
        const std::vector<float> ref =
            RunReference(q, n_q, head_dim, type, kv.runs(), n_ctx, scale);
        for (size_t i = 0; i < fast.size(); ++i) {
          ASSERT_NEAR(fast[i], ref[i], kTolerance)
              << DTypeName(type) << " n_q " << n_q << " head_dim " << head_dim
              << " n_ctx " << n_ctx << " element " << i;
        }
      }
    }
  }
}

// Scores spread over about [-25, 25]: many tiles raise the running max, and
// the weights span many orders of magnitude.
TEST_P(AttentionFastTest, WideScoresMatchReference) {
  std::mt19937 rng(42);
  for (DType type : kKvTypes) {
    for (size_t n_ctx : {17, 300}) {
      TestKv kv(type, 64, RandomRunSizes(rng, n_ctx), rng);
      const std::vector<float> q = RandomFloats(rng, 4 * 64, -2.0f, 2.0f);
      const std::vector<float> fast =
          RunFast(q, 4, 64, type, kv.runs(), n_ctx, 1.0f);
      const std::vector<float> ref =
          RunReference(q, 4, 64, type, kv.runs(), n_ctx, 1.0f);
      for (size_t i = 0; i < fast.size(); ++i) {
        ASSERT_NEAR(fast[i], ref[i], kTolerance)
            << DTypeName(type) << " n_ctx " << n_ctx << " element " << i;
      }
    }
  }
}

// Groups larger than one pass (8 heads) take several passes.
TEST_P(AttentionFastTest, LargeGroupsMatchReference) {
  std::mt19937 rng(43);
  for (size_t n_q : {9, 12, 16}) {
    TestKv kv(DType::kF16, 40, {50, 30}, rng);
    const std::vector<float> q = RandomFloats(rng, n_q * 40, -2.0f, 2.0f);
    const std::vector<float> fast =
        RunFast(q, n_q, 40, DType::kF16, kv.runs(), 77, 0.2f);
    const std::vector<float> ref =
        RunReference(q, n_q, 40, DType::kF16, kv.runs(), 77, 0.2f);
    for (size_t i = 0; i < fast.size(); ++i) {
      ASSERT_NEAR(fast[i], ref[i], kTolerance) << "n_q " << n_q << " " << i;
    }
  }
}

// Tiles follow positions, not runs: the split into runs changes nothing.
TEST_P(AttentionFastTest, SplitRunsEqualOneRun) {
  std::mt19937 rng(44);
  for (DType type : kKvTypes) {
    TestKv kv(type, 24, {3, 0, 16, 1, 29, 7}, rng);
    const std::vector<float> q = RandomFloats(rng, 3 * 24);
    const KvRun whole[] = {kv.Whole()};
    for (size_t n_ctx : {1, 19, 20, 50, 56}) {
      EXPECT_EQ(RunFast(q, 3, 24, type, kv.runs(), n_ctx, 0.3f),
                RunFast(q, 3, 24, type, whole, n_ctx, 0.3f))
          << DTypeName(type) << " n_ctx " << n_ctx;
    }
  }
}

// A head's result does not depend on the heads computed beside it.
TEST_P(AttentionFastTest, HeadsOfAGroupAreIndependent) {
  std::mt19937 rng(45);
  constexpr size_t kNq = 11;
  constexpr size_t kDim = 20;
  TestKv kv(DType::kBF16, kDim, {10, 40}, rng);
  const std::vector<float> q = RandomFloats(rng, kNq * kDim);
  const std::vector<float> group =
      RunFast(q, kNq, kDim, DType::kBF16, kv.runs(), 45, 0.5f);
  for (size_t h = 0; h < kNq; ++h) {
    const std::vector<float> qh(q.begin() + h * kDim,
                                q.begin() + (h + 1) * kDim);
    EXPECT_EQ(std::vector<float>(group.begin() + h * kDim,
                                 group.begin() + (h + 1) * kDim),
              RunFast(qh, 1, kDim, DType::kBF16, kv.runs(), 45, 0.5f))
        << "head " << h;
  }
}

TEST_P(AttentionFastTest, OnePositionReturnsItsValue) {
  std::mt19937 rng(46);
  for (DType type : kKvTypes) {
    TestKv kv(type, 19, {4}, rng);
    const std::vector<float> q = RandomFloats(rng, 2 * 19);
    const std::vector<float> out = RunFast(q, 2, 19, type, kv.runs(), 1, 1.0f);
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(out[i], kv.V(0, i % 19)) << DTypeName(type) << " " << i;
    }
  }
}

// n_tokens context lengths, non-decreasing from 1..200: steps of 0 (tokens
// that end together), 1 (the tokens of a prefill) and more (across tiles).
std::vector<size_t> RandomContexts(std::mt19937& rng, size_t n_tokens) {
  constexpr size_t kSteps[] = {0, 1, 1, 1, 2, 31, 45};
  std::uniform_int_distribution<size_t> step(0, std::size(kSteps) - 1);
  std::vector<size_t> n_ctx = {
      std::uniform_int_distribution<size_t>(1, 200)(rng)};
  while (n_ctx.size() < n_tokens) {
    n_ctx.push_back(n_ctx.back() + kSteps[step(rng)]);
  }
  return n_ctx;
}

// AttentionFastTokens over random K/V up to n_ctx.back() in runs of odd
// sizes, with q and out rows spaced wider than n_q heads, equals AttentionFast
// of each token alone bit for bit and leaves the gaps between out rows alone.
void ExpectTokensEqualEachAlone(std::mt19937& rng, DType type, size_t head_dim,
                                size_t n_q, const std::vector<size_t>& n_ctx) {
  const size_t n_tokens = n_ctx.size();
  TestKv kv(type, head_dim, RandomRunSizes(rng, n_ctx.back()), rng);
  const size_t row = n_q * head_dim;
  const size_t q_stride = row + 3;
  const size_t out_stride = row + 5;
  const std::vector<float> q =
      RandomFloats(rng, n_tokens * q_stride, -2.0f, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  constexpr float kGuard = 12345.0f;
  std::vector<float> out(n_tokens * out_stride, kGuard);
  for (size_t j = 0; j < n_tokens; ++j) {
    std::fill_n(out.begin() + j * out_stride, row, NAN);
  }
  AttentionFastTokens(q.data(), q_stride, n_tokens, n_q, head_dim, type,
                      kv.runs(), n_ctx.data(), scale, out.data(), out_stride);
  for (size_t j = 0; j < n_tokens; ++j) {
    const std::vector<float> q_j(q.begin() + j * q_stride,
                                 q.begin() + j * q_stride + row);
    const std::vector<float> alone =
        RunFast(q_j, n_q, head_dim, type, kv.runs(), n_ctx[j], scale);
    const float* got = out.data() + j * out_stride;
    ASSERT_EQ(std::memcmp(got, alone.data(), row * sizeof(float)), 0)
        << DTypeName(type) << " head_dim " << head_dim << " n_q " << n_q
        << " n_tokens " << n_tokens << ": token " << j << " of n_ctx "
        << n_ctx[j];
    for (size_t i = row; i < out_stride; ++i) {
      ASSERT_EQ(got[i], kGuard) << "wrote between the out rows of token " << j;
    }
  }
}

TEST_P(AttentionFastTest, TokensEqualEachTokenAlone) {
  std::mt19937 rng(47);
  for (DType type : kKvTypes) {
    for (size_t head_dim : {8, 64, 80, 128}) {
      for (size_t n_q : {1, 3, 4, 8}) {
        for (size_t n_tokens = 1; n_tokens <= 9; ++n_tokens) {
          ExpectTokensEqualEachAlone(rng, type, head_dim, n_q,
                                     RandomContexts(rng, n_tokens));
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// Contexts ending before, at and after tile edges (tiles of 32 positions).
TEST_P(AttentionFastTest, TokensAtTileEdgesEqualEachTokenAlone) {
  std::mt19937 rng(48);
  for (DType type : kKvTypes) {
    ExpectTokensEqualEachAlone(rng, type, 64, 3,
                               {1, 31, 32, 32, 33, 63, 64, 65, 96});
    if (HasFatalFailure()) return;
  }
}

// More rows than one pass holds (kAttentionPassRows = 16) take several passes:
// of whole tokens, or of heads for larger groups.
TEST_P(AttentionFastTest, TokensInSeveralPassesEqualEachTokenAlone) {
  std::mt19937 rng(49);
  const std::pair<size_t, size_t> kShapes[] = {
      {1, 20}, {3, 7}, {12, 3}, {17, 2}, {20, 3}};  // n_q, n_tokens
  for (DType type : kKvTypes) {
    for (const auto& [n_q, n_tokens] : kShapes) {
      ExpectTokensEqualEachAlone(rng, type, 40, n_q,
                                 RandomContexts(rng, n_tokens));
      if (HasFatalFailure()) return;
    }
  }
}

}  // namespace
}  // namespace kvstash::kernels
