// What the serving benchmarks share: random prompts, greedy requests that
// never stop early, and running one request through a Scheduler while
// recording when each token arrived.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "base/status.h"
#include "model/model.h"
#include "serve/scheduler.h"

namespace kvstash::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// One finished request: when it was submitted, when each token came, and its
// finish event (usage, queue and prompt seconds).
struct Run {
  std::vector<Clock::time_point> token_times;
  RequestEvent finish;
  Clock::time_point submitted;
  double ttft() const { return Seconds(submitted, token_times.front()); }
};

// Submits `request` and waits (up to 10 minutes) for its end; the request's
// error when it failed, Internal when it produced no token or timed out.
Result<Run> RunOne(Scheduler& scheduler, GenerationRequest request);

// Random prompts for one model, reproducible from a seed.
class Prompts {
 public:
  Prompts(const Model& model, uint64_t seed);
  // BOS (when the model has one) and n - 1 random ids.
  std::vector<int32_t> Random(int n);

 private:
  std::mt19937_64 rng_;
  int vocab_;
  int32_t bos_;
};

// Greedy, max_tokens tokens exactly (EOS does not stop it).
GenerationRequest Greedy(std::vector<int32_t> prompt, int max_tokens);

// Aggregate tokens/s of concurrent runs over the window where all of them
// decode: from the latest first token to the earliest last token.
double AggregateDecodeRate(const std::vector<Run>& runs);

}  // namespace kvstash::bench
