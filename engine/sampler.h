// Sampler: turns a row of logits into the next token id.
//
// Order of operations: logit_bias is added (OpenAI's), then the repetition
// penalty over the last `repeat_last_n` tokens of the history (llama.cpp's:
// a positive logit is divided by the penalty, a negative one multiplied),
// then OpenAI's presence and frequency penalties over the generated tokens
// (the history after the prompt): logit -= frequency_penalty * count +
// presence_penalty * (count > 0); then greedy argmax when temperature <= 0;
// otherwise top-k, temperature, softmax, top-p (smallest set whose mass
// reaches p), min-p (drop tokens below min_p * the top probability), and a
// draw from the renormalised distribution. Deterministic for a given seed on
// every platform (std::mt19937_64, own float conversion). Not thread-safe.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace kvstash {

struct SamplerOptions {
  float temperature = 0.8f;         // <= 0: greedy
  int top_k = 40;                   // <= 0: off
  float top_p = 0.95f;              // >= 1: off
  float min_p = 0.05f;              // <= 0: off
  float repetition_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;
  float presence_penalty = 0.0f;   // [-2, 2]; 0: off
  float frequency_penalty = 0.0f;  // [-2, 2]; 0: off
  // (token id, bias in [-100, 100]) added to the logits; ids outside the
  // vocabulary are ignored here (the server refuses them).
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;

  // InvalidArgument naming the first value out of range.
  Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);

  // Picks the next token from `logits` ([vocab], modified in place).
  // `history` is the sequence so far: its first `prompt_tokens` are the
  // prompt, the rest were generated.
  int32_t Sample(std::span<float> logits, std::span<const int32_t> history,
                 size_t prompt_tokens = 0);

 private:
  float Uniform();  // in [0, 1)

  SamplerOptions options_;
  std::mt19937_64 rng_;
  struct Candidate {
    int32_t id;
    float value;  // logit, then probability
  };
  std::vector<Candidate> candidates_;
};

}  // namespace kvstash
