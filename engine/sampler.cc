#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

namespace kvstash {

Status SamplerOptions::Validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return Status::InvalidArgument("temperature must be >= 0");
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return Status::InvalidArgument("top_p must be in (0, 1]");
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    return Status::InvalidArgument("min_p must be in [0, 1]");
  }
  if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty)) {
    return Status::InvalidArgument("repetition penalty must be > 0");
  }
  if (repeat_last_n < 0) {
    return Status::InvalidArgument("repeat_last_n must be >= 0");
  }
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f)) {
    return Status::InvalidArgument("presence_penalty must be in [-2, 2]");
  }
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f)) {
    return Status::InvalidArgument("frequency_penalty must be in [-2, 2]");
  }
  for (const auto& [id, bias] : logit_bias) {
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return Status::InvalidArgument(
          "logit_bias values must be in [-100, 100]");
    }
  }
  return Status::OK();
}

Sampler::Sampler(const SamplerOptions& options)
    : options_(options), rng_(options.seed) {}

float Sampler::Uniform() {
  // 24 random mantissa bits: exactly representable, never 1.0.
  return static_cast<float>(rng_() >> 40) * (1.0f / 16777216.0f);
}

int32_t Sampler::Sample(std::span<float> logits,
                        std::span<const int32_t> history,
                        size_t prompt_tokens) {
  const int vocab = static_cast<int>(logits.size());
  for (const auto& [id, bias] : options_.logit_bias) {
    if (id >= 0 && id < vocab) logits[id] += bias;
  }
  if (options_.repetition_penalty != 1.0f && options_.repeat_last_n > 0) {
    const size_t n = std::min<size_t>(history.size(), options_.repeat_last_n);
    std::unordered_set<int32_t> seen(history.end() - n, history.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= vocab) continue;
      float& l = logits[id];
      l = l > 0 ? l / options_.repetition_penalty
                : l * options_.repetition_penalty;
    }
  }
  if ((options_.presence_penalty != 0.0f ||
       options_.frequency_penalty != 0.0f) &&
      history.size() > prompt_tokens) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t id : history.subspan(prompt_tokens)) ++counts[id];
    for (const auto& [id, count] : counts) {
      if (id < 0 || id >= vocab) continue;
      logits[id] -=
          options_.frequency_penalty * float(count) + options_.presence_penalty;
    }
  }
  if (options_.temperature <= 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) -
                                logits.begin());
  }

  candidates_.resize(vocab);
  for (int i = 0; i < vocab; ++i) candidates_[i] = {i, logits[i]};
  auto by_value = [](const Candidate& a, const Candidate& b) {
    return a.value > b.value || (a.value == b.value && a.id < b.id);
  };
  size_t keep = candidates_.size();
  if (options_.top_k > 0 && size_t(options_.top_k) < keep) {
    keep = options_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep,
                      candidates_.end(), by_value);
    candidates_.resize(keep);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_value);
  }

  // Softmax of logit / temperature over the (sorted) candidates.
  const float max_logit = candidates_[0].value;
  double sum = 0;
  for (Candidate& c : candidates_) {
    c.value = std::exp((c.value - max_logit) / options_.temperature);
    sum += c.value;
  }
  for (Candidate& c : candidates_) c.value = static_cast<float>(c.value / sum);

  if (options_.top_p < 1.0f) {
    double mass = 0;
    size_t i = 0;
    while (i < candidates_.size()) {
      mass += candidates_[i++].value;
      if (mass >= options_.top_p) break;
    }
    candidates_.resize(i);
  }
  if (options_.min_p > 0.0f) {
    const float floor = options_.min_p * candidates_[0].value;
    size_t i = 1;
    while (i < candidates_.size() && candidates_[i].value >= floor) ++i;
    candidates_.resize(i);
  }

  double total = 0;
  for (const Candidate& c : candidates_) total += c.value;
  const double r = Uniform() * total;
  double acc = 0;
  for (const Candidate& c : candidates_) {
    acc += c.value;
    if (r < acc) return c.id;
  }
  return candidates_.back().id;
}

}  // namespace kvstash
