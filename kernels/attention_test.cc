#include "kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/attention_test_util.h"
#include "kernels/test_util.h"

namespace kvstash::kernels {
namespace {

using testing::kAllKvTypes;
using testing::LegalDim;
using testing::RandomFloats;
using testing::SplitRuns;
using testing::TestKv;
using testing::Uniform;

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
  size_t head_dim;  // LegalDim of it for quantized types
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

// The formats of the reference tests: every type for both sides, some
// mixed pairs, and KIVI sequences whose last run is the f16 residual.
struct FormatCase {
  KvFormat format;
  bool f16_last = false;
};

std::vector<FormatCase> TestFormats() {
  std::vector<FormatCase> formats;
  for (KvType t : kAllKvTypes) formats.push_back({Uniform(t)});
  formats.push_back({{KvType::kQ8, KvType::kQ4H}});
  formats.push_back({{KvType::kKivi2, KvType::kKivi4}});
  formats.push_back({{KvType::kKivi4, KvType::kQ8}});
  formats.push_back({{KvType::kBF16, KvType::kKivi2}});
  formats.push_back({Uniform(KvType::kKivi4), true});
  formats.push_back({{KvType::kKivi2, KvType::kQ4}, true});
  return formats;
}

std::string Name(const FormatCase& f) {
  return KvFormatName(f.format) + (f.f16_last ? " +f16 residual" : "");
}

TEST(AttentionTest, MatchesNaiveDouble) {
  std::mt19937 rng(31);
  for (const FormatCase& f : TestFormats()) {
    for (const AttentionCase& c : kCases) {
      const size_t head_dim = LegalDim(f.format, c.head_dim);
      TestKv kv(f.format, head_dim, c.run_sizes, rng, f.f16_last);
      const std::vector<float> q =
          RandomFloats(rng, c.n_q * head_dim, -2.0f, 2.0f);
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      const std::vector<float> out =
          RunAttention(q, c.n_q, head_dim, kv.runs(), c.n_ctx, scale);
      const std::vector<double> ref =
          NaiveAttention(q, c.n_q, head_dim, kv, c.n_ctx, scale);
      // Float error of the scores, softmax and the weighted sum: 1e-5 for
      // |v| <= 1 (K and V are drawn from [-1, 1]; decoded q4h values, in the
      // rotated basis, can be larger, and the error grows with them).
      const double tolerance = 1e-5 * std::max(1.0f, kv.MaxAbsV());
      for (size_t i = 0; i < out.size(); ++i) {
        EXPECT_NEAR(out[i], ref[i], tolerance)
            << Name(f) << " n_ctx " << c.n_ctx << " " << i;
      }
    }
  }
}

// Any sequence of run types: every run in its own format.
TEST(AttentionTest, RunsOfDifferentTypesMatchNaiveDouble) {
  std::mt19937 rng(35);
  std::uniform_int_distribution<size_t> type(0, std::size(kAllKvTypes) - 1);
  const std::vector<size_t> run_sizes = {16, 16, 3, 16, 0, 9};
  for (int iter = 0; iter < 20; ++iter) {
    std::vector<KvFormat> formats;
    for (size_t r = 0; r < run_sizes.size(); ++r) {
      formats.push_back({kAllKvTypes[type(rng)], kAllKvTypes[type(rng)]});
    }
    const size_t head_dim = 24;
    TestKv kv(formats, head_dim, run_sizes, rng);
    const std::vector<float> q = RandomFloats(rng, 3 * head_dim, -2.0f, 2.0f);
    for (size_t n_ctx : {1, 16, 17, 35, 51, 60}) {
      const std::vector<float> out =
          RunAttention(q, 3, head_dim, kv.runs(), n_ctx, 0.4f);
      const std::vector<double> ref =
          NaiveAttention(q, 3, head_dim, kv, n_ctx, 0.4f);
      const double tolerance = 1e-5 * std::max(1.0f, kv.MaxAbsV());
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_NEAR(out[i], ref[i], tolerance)
            << "iteration " << iter << " n_ctx " << n_ctx << " " << i;
      }
    }
  }
}

// The positions of one run, split into runs (of the same type and values),
// give the same result.
TEST(AttentionTest, SplitRunsEqualOneRun) {
  std::mt19937 rng(32);
  for (KvType t : kAllKvTypes) {
    for (const AttentionCase& c : kCases) {
      const size_t head_dim = LegalDim(Uniform(t), c.head_dim);
      size_t total = 0;
      for (size_t n : c.run_sizes) total += n;
      TestKv kv(Uniform(t), head_dim, {total}, rng);
      const SplitRuns split(kv.runs()[0], head_dim, c.run_sizes);
      const std::vector<float> q = RandomFloats(rng, c.n_q * head_dim);
      EXPECT_EQ(RunAttention(q, c.n_q, head_dim, split.runs(), c.n_ctx, 0.3f),
                RunAttention(q, c.n_q, head_dim, kv.runs(), c.n_ctx, 0.3f))
          << KvTypeName(t) << " n_ctx " << c.n_ctx;
    }
  }
}

TEST(AttentionTest, HeadsOfAGroupAreIndependent) {
  std::mt19937 rng(33);
  constexpr size_t kNq = 4;
  for (const FormatCase& f : TestFormats()) {
    const size_t dim = LegalDim(f.format, 12);
    TestKv kv(f.format, dim, {10, 6}, rng, f.f16_last);
    const std::vector<float> q = RandomFloats(rng, kNq * dim);
    const std::vector<float> group =
        RunAttention(q, kNq, dim, kv.runs(), 14, 0.5f);
    for (size_t h = 0; h < kNq; ++h) {
      const std::vector<float> qh(q.begin() + h * dim,
                                  q.begin() + (h + 1) * dim);
      const std::vector<float> alone =
          RunAttention(qh, 1, dim, kv.runs(), 14, 0.5f);
      EXPECT_EQ(std::vector<float>(group.begin() + h * dim,
                                   group.begin() + (h + 1) * dim),
                alone)
          << Name(f) << " head " << h;
    }
  }
}

TEST(AttentionTest, OnePositionReturnsItsValue) {
  std::mt19937 rng(34);
  for (KvType t : kAllKvTypes) {
    const size_t dim = LegalDim(Uniform(t), 9);
    TestKv kv(Uniform(t), dim, {4}, rng);
    const std::vector<float> q = RandomFloats(rng, dim);
    const std::vector<float> out = RunAttention(q, 1, dim, kv.runs(), 1, 1.0f);
    for (size_t i = 0; i < dim; ++i) {
      EXPECT_EQ(out[i], kv.V(0, i)) << KvTypeName(t) << " " << i;
    }
  }
}

}  // namespace
}  // namespace kvstash::kernels
