#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <span>
#include <vector>

#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::RandomFloats;

// out[h] = sum_t softmax_t(scale q[h].k_t) v_t over the first n_ctx rows of
// contiguous k, v ([total][head_dim]), in double.
std::vector<double> NaiveAttention(const std::vector<float>& q, size_t n_q,
                                   size_t head_dim, const std::vector<float>& k,
                                   const std::vector<float>& v, size_t n_ctx,
                                   float scale) {
  std::vector<double> out(n_q * head_dim, 0.0);
  for (size_t h = 0; h < n_q; ++h) {
    std::vector<double> s(n_ctx);
    double max = -INFINITY;
    for (size_t t = 0; t < n_ctx; ++t) {
      double dot = 0;
      for (size_t i = 0; i < head_dim; ++i) {
        dot += static_cast<double>(q[h * head_dim + i]) * k[t * head_dim + i];
      }
      s[t] = dot * scale;
      max = std::max(max, s[t]);
    }
    double sum = 0;
    for (double& x : s) sum += x = std::exp(x - max);
    for (size_t t = 0; t < n_ctx; ++t) {
      for (size_t i = 0; i < head_dim; ++i) {
        out[h * head_dim + i] += s[t] / sum * v[t * head_dim + i];
      }
    }
  }
  return out;
}

// K and V of `total` positions, held contiguously and also split into runs
// of the given sizes, each run in its own allocation.
struct Cache {
  size_t head_dim;
  std::vector<float> k;  // [total][head_dim]
  std::vector<float> v;  // [total][head_dim]
  std::vector<std::vector<float>> run_k;
  std::vector<std::vector<float>> run_v;
  std::vector<KvRun> runs;

  Cache(size_t dim, const std::vector<size_t>& run_sizes, std::mt19937& rng)
      : head_dim(dim) {
    size_t total = 0;
    for (size_t n : run_sizes) total += n;
    k = RandomFloats(rng, total * dim);
    v = RandomFloats(rng, total * dim);
    size_t start = 0;
    for (size_t n : run_sizes) {
      run_k.emplace_back(k.begin() + start * dim,
                         k.begin() + (start + n) * dim);
      run_v.emplace_back(v.begin() + start * dim,
                         v.begin() + (start + n) * dim);
      start += n;
    }
    for (size_t r = 0; r < run_sizes.size(); ++r) {
      runs.push_back({run_k[r].data(), run_v[r].data(), run_sizes[r]});
    }
  }
  KvRun Whole() const { return {k.data(), v.data(), k.size() / head_dim}; }
};

// Runs Attention with a scores buffer of exactly n_ctx floats followed by a
// guard value that must survive.
std::vector<float> RunAttention(const std::vector<float>& q, size_t n_q,
                                size_t head_dim, std::span<const KvRun> runs,
                                size_t n_ctx, float scale) {
  constexpr float kGuard = 12345.0f;
  std::vector<float> scores(n_ctx + 1, kGuard);
  std::vector<float> out(n_q * head_dim, NAN);
  Attention(q.data(), n_q, head_dim, runs, n_ctx, scale, scores.data(),
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
};

TEST(AttentionTest, MatchesNaiveDouble) {
  std::mt19937 rng(31);
  for (const AttentionCase& c : kCases) {
    Cache cache(c.head_dim, c.run_sizes, rng);
    const std::vector<float> q =
        RandomFloats(rng, c.n_q * c.head_dim, -2.0f, 2.0f);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    const std::vector<float> out =
        RunAttention(q, c.n_q, c.head_dim, cache.runs, c.n_ctx, scale);
    const std::vector<double> ref =
        NaiveAttention(q, c.n_q, c.head_dim, cache.k, cache.v, c.n_ctx, scale);
    for (size_t i = 0; i < out.size(); ++i) {
      // |v| <= 1: float error of the scores, softmax and the weighted sum.
      EXPECT_NEAR(out[i], ref[i], 1e-5) << "n_ctx " << c.n_ctx << " " << i;
    }
  }
}

TEST(AttentionTest, SplitRunsEqualOneRun) {
  std::mt19937 rng(32);
  for (const AttentionCase& c : kCases) {
    Cache cache(c.head_dim, c.run_sizes, rng);
    const std::vector<float> q = RandomFloats(rng, c.n_q * c.head_dim);
    const KvRun whole[] = {cache.Whole()};
    EXPECT_EQ(RunAttention(q, c.n_q, c.head_dim, cache.runs, c.n_ctx, 0.3f),
              RunAttention(q, c.n_q, c.head_dim, whole, c.n_ctx, 0.3f))
        << "n_ctx " << c.n_ctx;
  }
}

TEST(AttentionTest, HeadsOfAGroupAreIndependent) {
  std::mt19937 rng(33);
  constexpr size_t kNq = 4;
  constexpr size_t kDim = 12;
  Cache cache(kDim, {10, 6}, rng);
  const std::vector<float> q = RandomFloats(rng, kNq * kDim);
  const std::vector<float> group =
      RunAttention(q, kNq, kDim, cache.runs, 14, 0.5f);
  for (size_t h = 0; h < kNq; ++h) {
    const std::vector<float> qh(q.begin() + h * kDim,
                                q.begin() + (h + 1) * kDim);
    const std::vector<float> alone =
        RunAttention(qh, 1, kDim, cache.runs, 14, 0.5f);
    EXPECT_EQ(std::vector<float>(group.begin() + h * kDim,
                                 group.begin() + (h + 1) * kDim),
              alone)
        << "head " << h;
  }
}

TEST(AttentionTest, OnePositionReturnsItsValue) {
  std::mt19937 rng(34);
  Cache cache(9, {4}, rng);
  const std::vector<float> q = RandomFloats(rng, 9);
  const std::vector<float> out = RunAttention(q, 1, 9, cache.runs, 1, 1.0f);
  EXPECT_EQ(out, std::vector<float>(cache.v.begin(), cache.v.begin() + 9));
}

}  // namespace
}  // namespace kvstash::kernels
