#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace kvstash {
namespace {

SamplerOptions Greedy() {
  SamplerOptions o;
  o.temperature = 0;
  return o;
}

SamplerOptions Plain(float temperature, uint64_t seed) {
  SamplerOptions o;
  o.temperature = temperature;
  o.top_k = 0;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.seed = seed;
  return o;
}

TEST(SamplerTest, GreedyIsArgmax) {
  Sampler s(Greedy());
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 2.9f};
  EXPECT_EQ(s.Sample(logits, {}), 1);
}

TEST(SamplerTest, PresenceAndFrequencyPenaltiesCountOnlyGeneratedTokens) {
  SamplerOptions o = Greedy();
  o.presence_penalty = 0.5f;
  o.frequency_penalty = 0.25f;
  Sampler s(o);
  std::vector<float> logits = {0.0f, 3.0f, 2.0f, 1.0f};
  // Prompt {3, 3}; generated {1, 1, 2}: token 3 is not penalised.
  const std::vector<int32_t> history = {3, 3, 1, 1, 2};
  EXPECT_EQ(s.Sample(logits, history, /*prompt_tokens=*/2), 1);
  EXPECT_FLOAT_EQ(logits[1], 3.0f - 0.25f * 2 - 0.5f);
  EXPECT_FLOAT_EQ(logits[2], 2.0f - 0.25f - 0.5f);
  EXPECT_FLOAT_EQ(logits[3], 1.0f);
  EXPECT_FLOAT_EQ(logits[0], 0.0f);
  // A negative penalty promotes what was generated.
  o.presence_penalty = -2.0f;
  o.frequency_penalty = 0;
  Sampler promote(o);
  std::vector<float> flat = {1.0f, 1.0f, 1.0f, 1.5f};
  EXPECT_EQ(promote.Sample(flat, history, 2), 1);
}

TEST(SamplerTest, LogitBiasIsAddedFirst) {
  SamplerOptions o = Greedy();
  o.logit_bias = {{0, 100.0f}, {1, -100.0f}, {99, 5.0f}};  // 99: ignored
  Sampler s(o);
  std::vector<float> logits = {-5.0f, 3.0f, 2.0f, 1.0f};
  EXPECT_EQ(s.Sample(logits, {}), 0);
  EXPECT_FLOAT_EQ(logits[1], -97.0f);
  // -100 on the argmax removes it even when sampling.
  SamplerOptions r = Plain(1.0f, 7);
  r.logit_bias = {{1, -100.0f}};
  Sampler sr(r);
  for (int i = 0; i < 200; ++i) {
    std::vector<float> l = {0.0f, 5.0f, 0.0f, 0.0f};
    EXPECT_NE(sr.Sample(l, {}), 1);
  }
}

TEST(SamplerTest, ValidateNamesPenaltiesAndBiasOutOfRange) {
  SamplerOptions o;
  o.presence_penalty = 2.5f;
  EXPECT_NE(o.Validate().message().find("presence_penalty"), std::string::npos);
  o = SamplerOptions();
  o.frequency_penalty = -3.0f;
  EXPECT_NE(o.Validate().message().find("frequency_penalty"),
            std::string::npos);
  o = SamplerOptions();
  o.logit_bias = {{1, 101.0f}};
  EXPECT_NE(o.Validate().message().find("logit_bias"), std::string::npos);
  o.logit_bias = {{1, -100.0f}};
  EXPECT_TRUE(o.Validate().ok());
}

TEST(SamplerTest, RepetitionPenaltyDemotesRecentTokens) {
  SamplerOptions o = Greedy();
  o.repetition_penalty = 1.5f;
  Sampler s(o);
  std::vector<float> logits = {0.1f, 3.0f, -1.0f, 2.9f};
  const std::vector<int32_t> history = {1, 1, 2};
  EXPECT_EQ(s.Sample(logits, history), 3);
  EXPECT_FLOAT_EQ(logits[1], 2.0f);   // divided once, not per occurrence
  EXPECT_FLOAT_EQ(logits[2], -1.5f);  // negative logits are multiplied
}

TEST(SamplerTest, SameSeedSameDraws) {
  std::vector<float> base = {1.0f, 1.1f, 0.9f, 1.2f, 0.8f};
  std::vector<int32_t> a, b;
  Sampler sa(Plain(1.0f, 42)), sb(Plain(1.0f, 42));
  for (int i = 0; i < 50; ++i) {
    std::vector<float> la = base, lb = base;
    a.push_back(sa.Sample(la, {}));
    b.push_back(sb.Sample(lb, {}));
  }
  EXPECT_EQ(a, b);
}

TEST(SamplerTest, DrawsFollowTheSoftmax) {
  // p = softmax(log([0.5, 0.3, 0.2])) = [0.5, 0.3, 0.2].
  std::vector<float> base = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler s(Plain(1.0f, 7));
  std::vector<int> counts(3);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = base;
    ++counts[s.Sample(l, {})];
  }
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.02);
}

TEST(SamplerTest, TopKTopPAndMinPRestrictTheCandidates) {
  std::vector<float> base = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                             std::log(0.05f)};
  auto support = [&](SamplerOptions o) {
    Sampler s(o);
    std::map<int32_t, int> seen;
    for (int i = 0; i < 2000; ++i) {
      std::vector<float> l = base;
      ++seen[s.Sample(l, {})];
    }
    std::vector<int32_t> ids;
    for (auto& [id, n] : seen) ids.push_back(id);
    return ids;
  };
  SamplerOptions k2 = Plain(1.0f, 1);
  k2.top_k = 2;
  EXPECT_EQ(support(k2), (std::vector<int32_t>{0, 1}));
  SamplerOptions p = Plain(1.0f, 2);
  p.top_p = 0.85f;  // 0.5 + 0.3 = 0.8 < 0.85 -> three tokens
  EXPECT_EQ(support(p), (std::vector<int32_t>{0, 1, 2}));
  SamplerOptions m = Plain(1.0f, 3);
  m.min_p = 0.5f;  // keeps p >= 0.25
  EXPECT_EQ(support(m), (std::vector<int32_t>{0, 1}));
}

TEST(SamplerTest, LowTemperatureApproachesGreedy) {
  std::vector<float> base = {1.0f, 2.0f, 1.5f};
  Sampler s(Plain(0.01f, 5));
  for (int i = 0; i < 100; ++i) {
    std::vector<float> l = base;
    EXPECT_EQ(s.Sample(l, {}), 1);
  }
}

TEST(SamplerTest, ValidateRejectsOutOfRange) {
  SamplerOptions o;
  o.temperature = -1;
  EXPECT_FALSE(o.Validate().ok());
  o = SamplerOptions();
  o.top_p = 0;
  EXPECT_FALSE(o.Validate().ok());
  o = SamplerOptions();
  o.min_p = 2;
  EXPECT_FALSE(o.Validate().ok());
  o = SamplerOptions();
  o.repetition_penalty = 0;
  EXPECT_FALSE(o.Validate().ok());
  EXPECT_TRUE(SamplerOptions().Validate().ok());
}

}  // namespace
}  // namespace kvstash
