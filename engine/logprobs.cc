#include "engine/logprobs.h"

#include <algorithm>
#include <cmath>

#include "base/check.h"

namespace kvstash {
namespace {

struct Normalizer {
  double max = 0;
  double log_sum = 0;  // log sum_i exp(row[i] - max)
};

Normalizer Normalize(std::span<const float> row) {
  KV_CHECK(!row.empty());
  Normalizer n;
  n.max = *std::max_element(row.begin(), row.end());
  double sum = 0;
  for (float x : row) sum += std::exp(double(x) - n.max);
  n.log_sum = std::log(sum);
  return n;
}

double Apply(const Normalizer& n, float x) {
  return (double(x) - n.max) - n.log_sum;
}

}  // namespace

void LogSoftmax(std::span<const float> row, std::span<double> out) {
  KV_CHECK(out.size() == row.size());
  const Normalizer n = Normalize(row);
  for (size_t i = 0; i < row.size(); ++i) out[i] = Apply(n, row[i]);
}

double TokenLogprob(std::span<const float> row, int32_t token) {
  KV_CHECK(token >= 0 && size_t(token) < row.size());
  return Apply(Normalize(row), row[size_t(token)]);
}

ScoredToken ScoreToken(std::span<const float> row, int32_t token, int top) {
  KV_CHECK(token >= 0 && size_t(token) < row.size() && top >= 0);
  const Normalizer n = Normalize(row);
  ScoredToken s;
  s.token = token;
  s.logprob = float(Apply(n, row[size_t(token)]));
  const size_t k = std::min(size_t(top), row.size());
  if (k == 0) return s;
  std::vector<int32_t> ids(row.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                    [&](int32_t a, int32_t b) {
                      return row[a] > row[b] || (row[a] == row[b] && a < b);
                    });
  s.top.reserve(k);
  for (size_t i = 0; i < k; ++i) {
    s.top.push_back({ids[i], float(Apply(n, row[size_t(ids[i])]))});
  }
  return s;
}

}  // namespace kvstash
