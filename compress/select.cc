#include <algorithm>
#include <numeric>

#include "compress/policies.h"

namespace kvstash::compress {

KvSelection Select(const ScoreInput& in, const Scores& scores,
                   const Protection& protection,
                   const std::vector<int>& budgets) {
  KvSelection selection;
  selection.rows.resize(size_t(in.pairs()));
  std::vector<int32_t> candidates;
  for (int pair = 0; pair < in.pairs(); ++pair) {
    const int rows = in.rows(pair);
    const int keep = std::clamp(budgets[size_t(pair)], 0, rows);
    const int sinks = std::min(protection.sinks, keep);
    const int recent = std::min(protection.recent[size_t(pair)], keep - sinks);
    std::vector<int32_t>& kept = selection.rows[size_t(pair)];
    for (int r = 0; r < sinks; ++r) kept.push_back(r);
    candidates.resize(size_t(std::max(0, rows - recent - sinks)));
    std::iota(candidates.begin(), candidates.end(), sinks);
    const std::vector<float>& s = scores[size_t(pair)];
    const size_t chosen = size_t(keep - sinks - recent);
    std::partial_sort(candidates.begin(), candidates.begin() + chosen,
                      candidates.end(), [&](int32_t a, int32_t b) {
                        return s[size_t(a)] != s[size_t(b)]
                                   ? s[size_t(a)] > s[size_t(b)]
                                   : a > b;
                      });
    candidates.resize(chosen);
    std::sort(candidates.begin(), candidates.end());
    kept.insert(kept.end(), candidates.begin(), candidates.end());
    for (int r = rows - recent; r < rows; ++r) kept.push_back(r);
  }
  return selection;
}

}  // namespace kvstash::compress
