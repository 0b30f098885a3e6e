#include "kernels/attention_fast.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hwy/tests/hwy_gtest.h"
#include "kernels/attention.h"
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
                           size_t head_dim, std::span<const KvRun> runs,
                           size_t n_ctx, float scale) {
  constexpr float kGuard = 12345.0f;
  std::vector<float> out(n_q * head_dim + 1, NAN);
  out.back() = kGuard;
  AttentionFast(q.data(), n_q, head_dim, runs, n_ctx, scale, out.data());
  EXPECT_EQ(out.back(), kGuard) << "wrote past out";
  out.pop_back();
  return out;
}

std::vector<float> RunReference(const std::vector<float>& q, size_t n_q,
                                size_t head_dim, std::span<const KvRun> runs,
                                size_t n_ctx, float scale) {
  std::vector<float> scores(n_ctx);
  std::vector<float> out(n_q * head_dim);
  Attention(q.data(), n_q, head_dim, runs, n_ctx, scale, scores.data(),
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

// The runs of a sequence of n_ctx plus 0..5 positions in blocks of
// `block_tokens`, as a KIVI sequence reads them: whole (sealed) blocks, then
// its own block of 1..block_tokens positions (the f16 residual).
std::vector<size_t> BlockRunSizes(std::mt19937& rng, size_t n_ctx,
                                  size_t block_tokens) {
  const size_t total = n_ctx + std::uniform_int_distribution<size_t>(0, 5)(rng);
  const size_t sealed = (total - 1) / block_tokens;
  std::vector<size_t> sizes(sealed, block_tokens);
  sizes.push_back(total - sealed * block_tokens);
  return sizes;
}

// How the positions of a test cache are cut into runs.
struct Layout {
  // 0: RandomRunSizes, all of one format. Else blocks of this many tokens,
  // the last one an f16 residual (BlockRunSizes).
  size_t block_tokens = 0;
};

TestKv MakeKv(std::mt19937& rng, KvFormat format, size_t head_dim, size_t n_ctx,
              Layout layout) {
  if (layout.block_tokens == 0) {
    return TestKv(format, head_dim, RandomRunSizes(rng, n_ctx), rng);
  }
  return TestKv(format, head_dim,
                BlockRunSizes(rng, n_ctx, layout.block_tokens), rng,
                /*f16_last=*/true);
}

// Every output within 1e-5 max(1, max |v|) of the reference: K and V are
// drawn from [-1, 1], so 1e-5 where |v| <= 1, the existing bound of f32 rows
// (kernels/attention_fast.h); decoded q4h values, in the rotated basis, can
// pass 1, and the error grows with them. The same bound holds for every type:
// the kernel computes on the values of the stored rows (f16 scales times
// codes of at most 8 bits are exact in f32, so KIVI's min + scale * code
// rounds once, FMA or not), and where it folds a scale into the weights or
// (KIVI keys) into the query, each product takes one more rounding, 2^-24
// relative: a score moves by at most about 2^-24 * scale * sum_i |q_i|
// (|k_i| + 2 |min_i|) <= 2^-24 * 128 * 2 * 3 / sqrt(128) < 4e-7 per rounding
// chain here (head_dim <= 128, |q| <= 2), and an output by |v| times that.
// Measured over every pair and shape below: at most 4e-7.
constexpr double kTolerance = 1e-5;

std::string Label(KvFormat format, Layout layout, size_t n_q, size_t head_dim,
                  size_t n_ctx) {
  std::string s = KvFormatName(format);
  if (layout.block_tokens != 0) {
    s += " in blocks of " + std::to_string(layout.block_tokens) +
         " +f16 residual";
  }
  return s + " n_q " + std::to_string(n_q) + " head_dim " +
         std::to_string(head_dim) + " n_ctx " + std::to_string(n_ctx);
}

// AttentionFast against Attention over a fresh cache; q in [-2, 2].
void ExpectMatchesReference(std::mt19937& rng, KvFormat format, Layout layout,
                            size_t n_q, size_t head_dim, size_t n_ctx,
                            float scale) {
  const TestKv kv = MakeKv(rng, format, head_dim, n_ctx, layout);
  const std::vector<float> q = RandomFloats(rng, n_q * head_dim, -2.0f, 2.0f);
  const std::vector<float> fast =
      RunFast(q, n_q, head_dim, kv.runs(), n_ctx, scale);
  const std::vector<float> ref =
      RunReference(q, n_q, head_dim, kv.runs(), n_ctx, scale);
  const double tolerance = kTolerance * std::max(1.0f, kv.MaxAbsV());
  for (size_t i = 0; i < fast.size(); ++i) {
    ASSERT_NEAR(fast[i], ref[i], tolerance)
        << Label(format, layout, n_q, head_dim, n_ctx) << " element " << i;
  }
}

float DefaultScale(size_t head_dim) {
  return 1.0f / std::sqrt(static_cast<float>(head_dim));
}

TEST_P(AttentionFastTest, MatchesReference) {
  std::mt19937 rng(41);
  // Tile and block edges first, then anything up to 600.
  const size_t kEdgeCtx[] = {1, 2, 3, 4, 5, 31, 32, 33, 63, 64, 65, 600};
  std::uniform_int_distribution<size_t> any_ctx(1, 600);
  size_t n_case = 0;
  for (KvType t : kAllKvTypes) {
    for (size_t n_q = 1; n_q <= 8; ++n_q) {
      // Every group size for the float types; the quantized ones (which
      // ShapesMatchReference covers more) at a few, to bound the run time.
      if (!KvIsFloat(t) && n_q != 1 && n_q != 3 && n_q != 4 && n_q != 8) {
        continue;
      }
      for (size_t dim : {8, 64, 80, 128, 36, 3}) {
        const size_t head_dim = LegalDim(Uniform(t), dim);
        const size_t n_ctx =
            n_case < std::size(kEdgeCtx) ? kEdgeCtx[n_case] : any_ctx(rng);
        ++n_case;
        ExpectMatchesReference(rng, Uniform(t), {}, n_q, head_dim, n_ctx,
                               DefaultScale(head_dim));
        if (HasFatalFailure()) return;
      }
    }
  }
}

// Every K type with every V type, in random runs of one format and in blocks
// as a sequence reads them (for KIVI sides: sealed blocks, then the f16
// residual of its own block), at a few
// shapes: head_dim 8 takes the lane-by-lane loads of the packed types on
// AVX2 and AVX-512, 40 a partial last vector.
TEST_P(AttentionFastTest, AllTypePairsMatchReference) {
  std::mt19937 rng(50);
  struct Shape {
    size_t n_q, head_dim, n_ctx;
    Layout layout;
  };
  const Shape kShapes[] = {
      {4, 64, 70, {16}},  // residual from 64 or 48 on
      {3, 8, 33, {}},
      {1, 40, 65, {20}},  // type boundaries off the tiles of 32
  };
  for (KvType k : kAllKvTypes) {
    for (KvType v : kAllKvTypes) {
      for (const Shape& s : kShapes) {
        ExpectMatchesReference(rng, {k, v}, s.layout, s.n_q, s.head_dim,
                               s.n_ctx, DefaultScale(s.head_dim));
        if (HasFatalFailure()) return;
      }
    }
  }
}

// A few pairs (every type on each side) at every shape: head_dim x n_q x
// n_ctx at tile (32) and block edges, in random runs and in blocks.
TEST_P(AttentionFastTest, ShapesMatchReference) {
  std::mt19937 rng(51);
  const KvFormat kPairs[] = {
      {KvType::kKivi4, KvType::kKivi2}, {KvType::kKivi2, KvType::kQ8},
      {KvType::kQ4H, KvType::kKivi4},   {KvType::kQ4, KvType::kQ4H},
      {KvType::kQ8, KvType::kBF16},     {KvType::kF16, KvType::kQ4},
      {KvType::kF32, KvType::kF32},
  };
  const size_t kCtx[] = {1, 16, 31, 32, 33, 47, 48, 49, 63, 64, 65, 97, 150};
  const Layout kLayouts[] = {{}, {16}, {20}, {32}};
  size_t n_case = 0;
  for (const KvFormat& f : kPairs) {
    for (size_t head_dim : {8, 16, 24, 40, 64, 128}) {
      for (size_t n_q : {1, 3, 4, 8}) {
        const size_t n_ctx = kCtx[n_case % std::size(kCtx)];
        const Layout layout = kLayouts[n_case / 3 % std::size(kLayouts)];
        ++n_case;
        ExpectMatchesReference(rng, f, layout, n_q, head_dim, n_ctx,
                               DefaultScale(head_dim));
        if (HasFatalFailure()) return;
      }
    }
  }
}

// Runs of any types one after the other (tiles split where the types
// change, on and off tile edges), against the reference.
TEST_P(AttentionFastTest, RunsOfDifferentTypesMatchReference) {
  std::mt19937 rng(55);
  std::uniform_int_distribution<size_t> type(0, std::size(kAllKvTypes) - 1);
  for (int iter = 0; iter < 12; ++iter) {
    for (size_t head_dim : {8, 40, 64}) {
      const std::vector<size_t> run_sizes = RandomRunSizes(rng, 120);
      std::vector<KvFormat> formats;
      for (size_t r = 0; r < run_sizes.size(); ++r) {
        formats.push_back({kAllKvTypes[type(rng)], kAllKvTypes[type(rng)]});
      }
      const TestKv kv(formats, head_dim, run_sizes, rng);
      const std::vector<float> q = RandomFloats(rng, 3 * head_dim, -2.0f, 2.0f);
      for (size_t n_ctx : {1, 31, 33, 64, 100, 120}) {
        const std::vector<float> fast =
            RunFast(q, 3, head_dim, kv.runs(), n_ctx, DefaultScale(head_dim));
        const std::vector<float> ref = RunReference(
            q, 3, head_dim, kv.runs(), n_ctx, DefaultScale(head_dim));
        const double tolerance = kTolerance * std::max(1.0f, kv.MaxAbsV());
        for (size_t i = 0; i < fast.size(); ++i) {
          ASSERT_NEAR(fast[i], ref[i], tolerance)
              << "iteration " << iter << " head_dim " << head_dim << " n_ctx "
              << n_ctx << " element " << i;
        }
      }
    }
  }
}

// Scores spread over about [-25, 25]: many tiles raise the running max, and
// the weights span many orders of magnitude.
TEST_P(AttentionFastTest, WideScoresMatchReference) {
  std::mt19937 rng(42);
  for (KvType t : kAllKvTypes) {
    for (size_t n_ctx : {17, 300}) {
      ExpectMatchesReference(rng, Uniform(t), {}, 4, 64, n_ctx, 1.0f);
      if (HasFatalFailure()) return;
    }
  }
  ExpectMatchesReference(rng, Uniform(KvType::kKivi2), {16}, 4, 64, 300, 1.0f);
}

// Groups larger than one pass (8 heads) take several passes.
TEST_P(AttentionFastTest, LargeGroupsMatchReference) {
  std::mt19937 rng(43);
  for (size_t n_q : {9, 12, 16}) {
    ExpectMatchesReference(rng, Uniform(KvType::kF16), {}, n_q, 40, 77, 0.2f);
    ExpectMatchesReference(rng, {KvType::kKivi4, KvType::kQ4}, {16}, n_q, 40,
                           77, 0.2f);
    if (HasFatalFailure()) return;
  }
}

// Tiles follow positions, not runs: splitting one run into several (of the
// same type and values) changes nothing.
TEST_P(AttentionFastTest, SplitRunsEqualOneRun) {
  std::mt19937 rng(44);
  for (KvType t : kAllKvTypes) {
    for (size_t head_dim : {24, 64}) {
      TestKv kv(Uniform(t), head_dim, {56}, rng);
      const SplitRuns split(kv.runs()[0], head_dim, {3, 0, 16, 1, 29, 7});
      const std::vector<float> q = RandomFloats(rng, 3 * head_dim);
      for (size_t n_ctx : {1, 19, 20, 50, 56}) {
        EXPECT_EQ(RunFast(q, 3, head_dim, split.runs(), n_ctx, 0.3f),
                  RunFast(q, 3, head_dim, kv.runs(), n_ctx, 0.3f))
            << KvTypeName(t) << " head_dim " << head_dim << " n_ctx " << n_ctx;
      }
    }
  }
}

// A head's result does not depend on the heads computed beside it.
TEST_P(AttentionFastTest, HeadsOfAGroupAreIndependent) {
  std::mt19937 rng(45);
  constexpr size_t kNq = 11;
  struct Case {
    KvFormat format;
    size_t dim;
    bool f16_last;
  };
  const Case kFormats[] = {{Uniform(KvType::kBF16), 20, false},
                           {Uniform(KvType::kQ4), 24, false},
                           {{KvType::kKivi2, KvType::kQ8}, 16, true}};
  for (const Case& c : kFormats) {
    TestKv kv(c.format, c.dim, {10, 40}, rng, c.f16_last);
    const std::vector<float> q = RandomFloats(rng, kNq * c.dim);
    const std::vector<float> group =
        RunFast(q, kNq, c.dim, kv.runs(), 45, 0.5f);
    for (size_t h = 0; h < kNq; ++h) {
      const std::vector<float> qh(q.begin() + h * c.dim,
                                  q.begin() + (h + 1) * c.dim);
      EXPECT_EQ(std::vector<float>(group.begin() + h * c.dim,
                                   group.begin() + (h + 1) * c.dim),
                RunFast(qh, 1, c.dim, kv.runs(), 45, 0.5f))
          << KvFormatName(c.format) << " head " << h;
    }
  }
}

TEST_P(AttentionFastTest, OnePositionReturnsItsValue) {
  std::mt19937 rng(46);
  for (KvType t : kAllKvTypes) {
    const size_t dim = LegalDim(Uniform(t), 19);
    TestKv kv(Uniform(t), dim, {4}, rng);
    const std::vector<float> q = RandomFloats(rng, 2 * dim);
    const std::vector<float> out = RunFast(q, 2, dim, kv.runs(), 1, 1.0f);
    for (size_t i = 0; i < out.size(); ++i) {
      EXPECT_EQ(out[i], kv.V(0, i % dim)) << KvTypeName(t) << " " << i;
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

// AttentionFastTokens over `kv`, with q and out rows spaced wider than n_q
// heads, equals AttentionFast of each token alone bit for bit and leaves the
// gaps between out rows alone.
void ExpectTokensEqualEachAlone(std::mt19937& rng, const TestKv& kv,
                                const std::string& what, size_t head_dim,
                                size_t n_q, const std::vector<size_t>& n_ctx) {
  const size_t n_tokens = n_ctx.size();
  const size_t row = n_q * head_dim;
  const size_t q_stride = row + 3;
  const size_t out_stride = row + 5;
  const std::vector<float> q =
      RandomFloats(rng, n_tokens * q_stride, -2.0f, 2.0f);
  const float scale = DefaultScale(head_dim);
  constexpr float kGuard = 12345.0f;
  std::vector<float> out(n_tokens * out_stride, kGuard);
  for (size_t j = 0; j < n_tokens; ++j) {
    std::fill_n(out.begin() + j * out_stride, row, NAN);
  }
  AttentionFastTokens(q.data(), q_stride, n_tokens, n_q, head_dim, kv.runs(),
                      n_ctx.data(), scale, out.data(), out_stride);
  for (size_t j = 0; j < n_tokens; ++j) {
    const std::vector<float> q_j(q.begin() + j * q_stride,
                                 q.begin() + j * q_stride + row);
    const std::vector<float> alone =
        RunFast(q_j, n_q, head_dim, kv.runs(), n_ctx[j], scale);
    const float* got = out.data() + j * out_stride;
    if (std::memcmp(got, alone.data(), row * sizeof(float)) != 0) {
      std::string runs, contexts;
      for (const KvRun& r : kv.runs()) {
        runs.append(" ").append(std::to_string(r.n_tokens)).append(":");
        runs.append(KvTypeName(r.k_type))
            .append("/")
            .append(KvTypeName(r.v_type));
      }
      for (size_t c : n_ctx) contexts.append(" ").append(std::to_string(c));
      FAIL() << what << " n_q " << n_q << " head_dim " << head_dim << ": token "
             << j << " of n_ctx" << contexts
             << " differs from the token alone; runs" << runs;
    }
    for (size_t i = row; i < out_stride; ++i) {
      ASSERT_EQ(got[i], kGuard) << "wrote between the out rows of token " << j;
    }
  }
}

// The same over random K/V up to n_ctx.back() in runs of odd sizes (or in
// blocks).
void ExpectTokensEqualEachAlone(std::mt19937& rng, KvFormat format,
                                size_t head_dim, size_t n_q,
                                const std::vector<size_t>& n_ctx,
                                Layout layout = {}) {
  const TestKv kv = MakeKv(rng, format, head_dim, n_ctx.back(), layout);
  ExpectTokensEqualEachAlone(rng, kv,
                             Label(format, layout, n_q, head_dim, n_ctx.back()),
                             head_dim, n_q, n_ctx);
}

TEST_P(AttentionFastTest, TokensEqualEachTokenAlone) {
  std::mt19937 rng(47);
  for (KvType t : kAllKvTypes) {
    for (size_t head_dim : {8, 64, 80, 128}) {
      for (size_t n_q : {1, 3, 4, 8}) {
        for (size_t n_tokens = 1; n_tokens <= 9; ++n_tokens) {
          // Every count for the float types, a few for the others (run time).
          if (!KvIsFloat(t) && n_tokens != 1 && n_tokens != 2 &&
              n_tokens != 5 && n_tokens != 9) {
            continue;
          }
          ExpectTokensEqualEachAlone(rng, Uniform(t), head_dim, n_q,
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
  for (KvType t : kAllKvTypes) {
    ExpectTokensEqualEachAlone(rng, Uniform(t), 64, 3,
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
  for (KvType t : kAllKvTypes) {
    for (const auto& [n_q, n_tokens] : kShapes) {
      ExpectTokensEqualEachAlone(rng, Uniform(t), 40, n_q,
                                 RandomContexts(rng, n_tokens));
      if (HasFatalFailure()) return;
    }
  }
}

// A KIVI sequence (sealed blocks, then its f16 residual) in prefill: the
// tokens' rows equal each token alone, whatever the block size.
TEST_P(AttentionFastTest, ResidualTokensEqualEachTokenAlone) {
  std::mt19937 rng(52);
  const KvFormat kFormats[] = {Uniform(KvType::kKivi4),
                               Uniform(KvType::kKivi2),
                               {KvType::kKivi2, KvType::kQ4H}};
  for (const KvFormat& f : kFormats) {
    for (size_t block : {16, 32, 20}) {
      for (size_t n_tokens : {2, 5, 9}) {
        ExpectTokensEqualEachAlone(rng, f, 64, 4, RandomContexts(rng, n_tokens),
                                   {block});
        if (HasFatalFailure()) return;
      }
    }
  }
}

// As the engine reads a KIVI sequence (engine/transformer.cc, Attend): the
// tokens of one call are consecutive positions of one block b (one read
// window), and the runs are the sealed blocks before it, then block b read
// from the f16 residual up to the last token.
void ExpectWindowsEqualEachTokenAlone(std::mt19937& rng, KvFormat format,
                                      size_t block_tokens) {
  constexpr size_t kHeadDim = 64;
  constexpr size_t kNq = 4;
  constexpr size_t kTokensPerCall = kAttentionPassRows / kNq;
  for (size_t b : {0, 1, 2, 3}) {
    for (size_t p0 = b * block_tokens; p0 < (b + 1) * block_tokens;
         p0 += kTokensPerCall) {
      std::vector<size_t> n_ctx;
      for (size_t p = p0;
           p < std::min(p0 + kTokensPerCall, (b + 1) * block_tokens); ++p) {
        n_ctx.push_back(p + 1);
      }
      std::vector<size_t> run_sizes(b, block_tokens);
      run_sizes.push_back(n_ctx.back() - b * block_tokens);
      const TestKv kv(format, kHeadDim, run_sizes, rng, /*f16_last=*/true);
      ExpectTokensEqualEachAlone(rng, kv,
                                 KvFormatName(format) + " in blocks of " +
                                     std::to_string(block_tokens) +
                                     ", window " + std::to_string(b),
                                 kHeadDim, kNq, n_ctx);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// Blocks of 16 and multiples of 32: the residual starts on a tile edge or
// within the first tile of the window.
TEST_P(AttentionFastTest, ResidualWindowsEqualEachTokenAlone) {
  std::mt19937 rng(53);
  for (const KvFormat& f :
       {Uniform(KvType::kKivi4), KvFormat{KvType::kKivi2, KvType::kQ8}}) {
    for (size_t block_tokens : {16, 32, 64}) {
      ExpectWindowsEqualEachTokenAlone(rng, f, block_tokens);
      if (HasFatalFailure()) return;
    }
  }
}

// Blocks of 20 (or 48, ...: any --block-tokens that puts the residual off a
// tile edge, past the window's first tile): a window's tokens in one
// AttentionFastTokens call take the positions before n_ctx[0] / 32 * 32
// together, the token alone walks to its n_ctx; both must cut the tiles at
// the same places (multiples of 32 and the type boundary: runs 20:kivi4
// 16:f16, n_ctx 33..36 give [0, 20) [20, 32) [32, 33) either way).
TEST_P(AttentionFastTest, ResidualWindowsOffTileEdgesEqualEachTokenAlone) {
  std::mt19937 rng(54);
  for (const KvFormat& f :
       {Uniform(KvType::kKivi4), KvFormat{KvType::kKivi2, KvType::kQ8}}) {
    for (size_t block_tokens : {20, 48}) {
      ExpectWindowsEqualEachTokenAlone(rng, f, block_tokens);
    }
  }
}

}  // namespace
}  // namespace kvstash::kernels
