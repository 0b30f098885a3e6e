#include "engine/logprobs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace kvstash {
namespace {

TEST(LogprobsTest, LogSoftmaxIsNormalisedAndShiftInvariant) {
  const std::vector<float> row = {1.0f, 2.0f, -3.0f, 0.5f};
  std::vector<double> out(row.size());
  LogSoftmax(row, out);
  double mass = 0;
  for (double lp : out) mass += std::exp(lp);
  EXPECT_NEAR(mass, 1.0, 1e-12);
  // By hand: log(e^2 / (e^1 + e^2 + e^-3 + e^0.5)).
  const double z =
      std::exp(1.0) + std::exp(2.0) + std::exp(-3.0) + std::exp(0.5);
  EXPECT_NEAR(out[1], 2.0 - std::log(z), 1e-12);
  std::vector<float> shifted = row;
  for (float& x : shifted) x += 1000.0f;  // no overflow
  EXPECT_NEAR(TokenLogprob(shifted, 1), out[1], 1e-4);
  EXPECT_DOUBLE_EQ(TokenLogprob(row, 2), out[2]);
}

TEST(LogprobsTest, ScoreTokenReportsTheTopAlternativesInOrder) {
  const std::vector<float> row = {0.0f, 4.0f, 4.0f, 1.0f, -2.0f};
  const ScoredToken s = ScoreToken(row, 3, 3);
  EXPECT_EQ(s.token, 3);
  EXPECT_FLOAT_EQ(s.logprob, float(TokenLogprob(row, 3)));
  ASSERT_EQ(s.top.size(), 3u);
  EXPECT_EQ(s.top[0].first, 1);  // a tie goes to the lower id
  EXPECT_EQ(s.top[1].first, 2);
  EXPECT_EQ(s.top[2].first, 3);
  EXPECT_FLOAT_EQ(s.top[2].second, s.logprob);
  EXPECT_TRUE(ScoreToken(row, 0, 0).top.empty());
  EXPECT_EQ(ScoreToken(row, 0, 99).top.size(), row.size());
}

}  // namespace
}  // namespace kvstash
