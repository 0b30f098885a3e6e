#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <span>
#include <vector>

#include "kernels/attention_test_util.h"
#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::kKvTypes;
using testing::RandomFloats;
using testing::TestKv;

// out[h] = sum_t softmax_t(scale q[h].k_t) v_t over the first n_ctx positions
// of `kv`, in double.
std::vector<double> NaiveAttention(const std::vector<float>& q, size_t n_q,
                                   size_t head_dim, const TestKv& kv,
                                   size_t n_ctx, float scale) {
  std::vector<double> out(n_q * head_dim, 0.0);
  for (size_t h = 0; h < n_q; ++h) {
    std::vector<double> s(n_ctx);
    double max = -INFINITY;
    for (size_t t = 0; t < n_ctx; ++t) {
      double dot = 0;
      for (size_t i = 0; i < head_dim; ++i) {
        dot += q[h * head_dim + i] * kv.K(t, i);
      }
      s[t] = dot * scale;
      max = std::max(max, s[t]);
    }
    double sum = 0;
    for (double& x : s) sum += x = std::exp(x - max);
    for (size_t t = 0; t < n_ctx; ++t) {
      for (size_t i = 0; i < head_dim; ++i) {
        out[h * head_dim + i] += s[t] / sum * kv.V(t, i);
      }
    }
  }
  return out;
}

// Runs Attention with a scores buffer of exactly n_ctx floats followed by a
// guard value that must survive.
std::vector<float> RunAttention(const std::vector<float>& q, size_t n_q,
                                size_t head_dim, DType kv_type,
                                std::span<const KvRun> runs, size_t n_ctx,
                                float scale) {
  constexpr float kGuard = 12345.0f;
  std::vector<float> scores(n_ctx + 1, kGuard);
  std::vector<float> out(n_q * head_dim, NAN);
  Attention(q.data(), n_q, head_dim, kv_type, runs, n_ctx, scale, scores.data(),
            out.data());
  EXPECT_EQ(scores[n_ctx], kGuard) << "wrote past n_ctx scores";
  return out;
}

struct AttentionCase {
  size_t n_q;
  size_t head_dim;
  std::vector<size_t> run_sizes;
  size_t n_ctx;
};

const AttentionCase kCases[] = {
    {1, 8, {1}, 1},
    {1, 5, {16}, 16},
    {4, 16, {16, 16, 5}, 37},       // GQA group of 4, paged
    {2, 13, {3, 1, 7, 16, 2}, 29},  // uneven runs
    {3, 32, {16, 16, 16}, 23},      // n_ctx ends inside the second run
    {2, 7, {5, 9}, 5},              // n_ctx ends exactly at a run boundary
    {2, 70, {40, 30}, 70},          // rows longer than the decode chunk
};

TEST(AttentionTest, MatchesNaiveDouble) {
  std::mt19937 rng(31);
  for (DType type : kKvTypes) {
    for (const AttentionCase& c : kCases) {
      TestKv kv(type, c.head_dim, c.run_sizes, rng);
      const std::vector<float> q =
          RandomFloats(rng, c.n_q * c.head_dim, -2.0f, 2.0f);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      const std::vector<float> out =
          RunAttention(q, c.n_q, c.head_dim, type, kv.runs(), c.n_ctx, scale);
      const std::vector<double> ref =
          NaiveAttention(q, c.n_q, c.head_dim, kv, c.n_ctx, scale);
      for (size_t i = 0; i < out.size(); ++i) {
        // |v| <= 1: float error of the scores, softmax and the weighted sum.
        EXPECT_NEAR(out[i], ref[i], 1e-5)
            << DTypeName(type) << " n_ctx " << c.n_ctx << " " << i;
      }
    }
  }
}

TEST(AttentionTest, SplitRunsEqualOneRun) {
  std::mt19937 rng(32);
  for (DType type : kKvTypes) {
    for (const AttentionCase& c : kCases) {
      TestKv kv(type, c.head_dim, c.run_sizes, rng);
      const std::vector<float> q = RandomFloats(rng, c.n_q * c.head_dim);
      const KvRun whole[] = {kv.Whole()};
      EXPECT_EQ(
          RunAttention(q, c.n_q, c.head_dim, type, kv.runs(), c.n_ctx, 0.3f),
          RunAttention(q, c.n_q, c.head_dim, type, whole, c.n_ctx, 0.3f))
          << DTypeName(type) << " n_ctx " << c.n_ctx;
    }
  }
}

TEST(AttentionTest, HeadsOfAGroupAreIndependent) {
  std::mt19937 rng(33);
  constexpr size_t kNq = 4;
  constexpr size_t kDim = 12;
  for (DType type : kKvTypes) {
    TestKv kv(type, kDim, {10, 6}, rng);
    const std::vector<float> q = RandomFloats(rng, kNq * kDim);
    const std::vector<float> group =
        RunAttention(q, kNq, kDim, type, kv.runs(), 14, 0.5f);
    for (size_t h = 0; h < kNq; ++h) {
      const std::vector<float> qh(q.begin() + h * kDim,
                                  q.begin() + (h + 1) * kDim);
      const std::vector<float> alone =
          RunAttention(qh, 1, kDim, type, kv.runs(), 14, 0.5f);
      EXPECT_EQ(std::vector<float>(group.begin() + h * kDim,
                                   group.begin() + (h + 1) * kDim),
                alone)
          << DTypeName(type) << " head " << h;
    }
  }
}

TEST(AttentionTest, OnePositionReturnsItsValue) {
  std::mt19937 rng(34);
  for (DType type : kKvTypes) {
    TestKv kv(type, 9, {4}, rng);
    const std::vector<float> q = RandomFloats(rng, 9);
    const std::vector<float> out =
        RunAttention(q, 1, 9, type, kv.runs(), 1, 1.0f);
    for (size_t i = 0; i < 9; ++i) {
      EXPECT_EQ(out[i], kv.V(0, i)) << DTypeName(type) << " " << i;
    }
  }
}

}  // namespace
}  // namespace kvstash::kernels
