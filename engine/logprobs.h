// Log-probabilities of the model's next-token distribution: the log softmax
// of one row of raw logits (before any sampling transform: penalties, bias,
// temperature, truncation), computed in double precision with the same
// arithmetic for every caller, so that the server's logprobs, `kvstash
// perplexity` and `kvstash eval` give identical numbers for identical
// logits. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace kvstash {

// out[i] = log softmax(row)[i]. REQUIRES: out.size() == row.size() > 0.
void LogSoftmax(std::span<const float> row, std::span<double> out);

// log softmax(row)[token]. REQUIRES: 0 <= token < row.size().
double TokenLogprob(std::span<const float> row, int32_t token);

// The most alternatives a caller may ask for (OpenAI's top_logprobs limit).
inline constexpr int kMaxTopLogprobs = 20;

// A token's log-probability and the `top` most likely tokens of the same
// distribution (most likely first; ties by lower id), as OpenAI's logprobs
// report them.
struct ScoredToken {
  int32_t token = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob)
};

// REQUIRES: 0 <= token < row.size(); top >= 0 (capped at row.size()).
ScoredToken ScoreToken(std::span<const float> row, int32_t token, int top);

}  // namespace kvstash
