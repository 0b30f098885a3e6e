#include <cmath>

#include "compress/policies.h"

namespace kvstash::compress {

void ScoreLadder(const ScoreInput& in, const Protection& protection,
                 const std::vector<int>& budgets, Scores* scores) {
  const int layers = in.config().n_layers;
  scores->resize(size_t(in.pairs()));
  for (int pair = 0; pair < in.pairs(); ++pair) {
    const int rows = in.rows(pair);
    const int sinks = std::min(protection.sinks, rows);
    const int recent = protection.recent[size_t(pair)];
    // The middle rows [sinks, rows - recent) and the span this layer keeps.
    const int mid_begin = sinks, mid_end = std::max(sinks, rows - recent);
    const int span = std::max(0, budgets[size_t(pair)] - sinks - recent);
    const double step =
        layers > 1 ? double(in.layer_of(pair)) / double(layers - 1) : 0.0;
    const double center =
        mid_begin + double(std::max(0, mid_end - mid_begin - span)) * step +
        span / 2.0;
    std::vector<float>& s = (*scores)[size_t(pair)];
    s.resize(size_t(rows));
    for (int r = 0; r < rows; ++r)
      s[size_t(r)] = -float(std::abs(r + 0.5 - center));
  }
}

}  // namespace kvstash::compress
