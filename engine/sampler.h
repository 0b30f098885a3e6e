// Sampler: turns a row of logits into the next token id.
//
// Order of operations (as llama.cpp's default chain): repetition penalty over
// the last `repeat_last_n` tokens (a positive logit is divided by the
// penalty, a negative one multiplied), then greedy argmax when temperature
// <= 0; otherwise top-k, temperature, softmax, top-p (smallest set whose mass
// reaches p), min-p (drop tokens below min_p * the top probability), and a
// draw from the renormalised distribution. Deterministic for a given seed on
// every platform (std::mt19937_64, own float conversion). Not thread-safe.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
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
  uint64_t seed = 0;

  // InvalidArgument naming the first value out of range.
  Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);

  // Picks the next token from `logits` ([vocab], modified in place).
  // `history` is the sequence so far (prompt and generated tokens).
  int32_t Sample(std::span<float> logits, std::span<const int32_t> history);

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
