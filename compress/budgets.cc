#include <algorithm>
#include <cmath>
#include <numeric>

#include "compress/policies.h"

namespace kvstash::compress {
namespace {

constexpr double kPyramidBeta = 20;
constexpr double kAdaKvFloor = 0.2;

// Splits `total` into integers b_i within [floors_i, caps_i], as close to
// proportional to `weights` as the bounds allow (water filling on a common
// factor, then the largest remainders). REQUIRES: sum floors <= total <= sum
// caps, floors <= caps.
std::vector<int> Distribute(int64_t total, std::vector<double> weights,
                            const std::vector<int>& floors,
                            const std::vector<int>& caps) {
  const size_t n = weights.size();
  if (std::all_of(weights.begin(), weights.end(),
                  [](double w) { return !(w > 0); })) {
    weights.assign(n, 1.0);
  }
  auto filled = [&](double lambda, size_t i) {
    return std::clamp(lambda * std::max(weights[i], 0.0), double(floors[i]),
                      double(caps[i]));
  };
  auto sum_at = [&](double lambda) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += filled(lambda, i);
    return s;
  };
  double lo = 0, hi = 1;
  while (sum_at(hi) < double(total) && hi < 1e18) hi *= 2;
  for (int it = 0; it < 100; ++it) {
    const double mid = (lo + hi) / 2;
    (sum_at(mid) < double(total) ? lo : hi) = mid;
  }
  std::vector<int> out(n);
  std::vector<std::pair<double, size_t>> remainders;
  int64_t given = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = filled(hi, i);
    out[i] = static_cast<int>(std::floor(x));
    given += out[i];
    remainders.push_back({x - std::floor(x), i});
  }
  std::sort(
      remainders.begin(), remainders.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
      });
  // Hand out what rounding left, largest remainders first, then anywhere
  // below its cap; take back any excess from the smallest remainders.
  for (size_t k = 0; given < total && k < 2 * n; ++k) {
    const size_t i = remainders[k % n].second;
    if (out[i] < caps[i]) ++out[i], ++given;
  }
  for (size_t k = n; given > total && k-- > 0;) {
    const size_t i = remainders[k].second;
    if (out[i] > floors[i]) --out[i], --given;
  }
  return out;
}

// Per pair: the uniform budget, and the bounds of a budget moved across
// pairs: at least min(floor, rows), at most rows.
struct Bounds {
  std::vector<int> uniform, floors, caps;
  int64_t total = 0;
};

Bounds PairBounds(const ScoreInput& in, double ratio, int floor) {
  Bounds b;
  for (int pair = 0; pair < in.pairs(); ++pair) {
    const int rows = in.rows(pair);
    b.uniform.push_back(KeptRows(rows, ratio));
    b.total += b.uniform.back();
    b.floors.push_back(std::min({floor, rows, b.uniform.back()}));
    b.caps.push_back(rows);
  }
  return b;
}

}  // namespace

int KeptRows(int rows, double ratio) {
  const int keep = static_cast<int>(std::lround((1.0 - ratio) * rows));
  return std::clamp(keep, std::min(rows, 1), rows);
}

std::vector<int> UniformBudgets(const ScoreInput& in, double ratio) {
  return PairBounds(in, ratio, 0).uniform;
}

std::vector<int> PyramidBudgets(const ScoreInput& in, double ratio, int floor) {
  const Bounds b = PairBounds(in, ratio, floor);
  const int layers = in.config().n_layers;
  const double top = 2.0 - 1.0 / kPyramidBeta, bottom = 1.0 / kPyramidBeta;
  std::vector<double> weights;
  for (int pair = 0; pair < in.pairs(); ++pair) {
    const double t =
        layers > 1 ? double(in.layer_of(pair)) / double(layers - 1) : 0.5;
    weights.push_back(top + (bottom - top) * t);
  }
  return Distribute(b.total, weights, b.floors, b.caps);
}

std::vector<int> CakeBudgets(const ScoreInput& in, double ratio, int window,
                             int floor) {
  const Bounds b = PairBounds(in, ratio, floor);
  const ModelConfig& c = in.config();
  std::vector<double> pair_pref(size_t(in.pairs()), 0.0);
  in.ForEachPair([&](int pair) {
    std::vector<float> probs;
    const int count = in.Attention(pair, in.n() - window, &probs);
    const size_t rows = size_t(in.rows(pair));
    if (count == 0) return;
    double entropy = 0, variance = 0;
    for (size_t r = 0; r < rows; ++r) {
      double mean = 0, sq = 0;
      for (int q = 0; q < count; ++q) {
        const double p = probs[size_t(q) * rows + r];
        mean += p;
        sq += p * p;
      }
      mean /= count;
      variance += std::max(0.0, sq / count - mean * mean);
      if (mean > 0) entropy -= mean * std::log(mean);
    }
    pair_pref[size_t(pair)] = entropy * variance;
  });
  std::vector<double> layer_pref(size_t(c.n_layers), 0.0);
  for (int pair = 0; pair < in.pairs(); ++pair) {
    layer_pref[size_t(in.layer_of(pair))] +=
        pair_pref[size_t(pair)] / double(c.n_kv_heads);
  }
  std::vector<double> weights;
  for (int pair = 0; pair < in.pairs(); ++pair) {
    weights.push_back(layer_pref[size_t(in.layer_of(pair))]);
  }
  return Distribute(b.total, weights, b.floors, b.caps);
}

std::vector<int> AdaKvBudgets(const ScoreInput& in, const Scores& scores,
                              const Protection& protection, double ratio) {
  const int heads = in.config().n_kv_heads;
  std::vector<int> budgets = UniformBudgets(in, ratio);
  for (int layer = 0; layer < in.config().n_layers; ++layer) {
    // Candidates of the layer beyond each head's floor: (score, head).
    std::vector<std::pair<float, int>> pool;
    int64_t left = 0;
    for (int h = 0; h < heads; ++h) {
      const int pair = layer * heads + h;
      const int rows = in.rows(pair), uniform = budgets[size_t(pair)];
      left += uniform;
      const int sinks = std::min(protection.sinks, rows);
      const int recent =
          std::min(protection.recent[size_t(pair)], rows - sinks);
      const int floor = std::min(
          uniform,
          std::max(sinks + recent, int(std::ceil(kAdaKvFloor * uniform))));
      std::vector<float> free(scores[size_t(pair)].begin() + sinks,
                              scores[size_t(pair)].begin() + (rows - recent));
      std::sort(free.begin(), free.end(), std::greater<float>());
      const size_t taken = size_t(std::max(0, floor - sinks - recent));
      for (size_t i = taken; i < free.size(); ++i) pool.push_back({free[i], h});
      budgets[size_t(pair)] = floor;
      left -= floor;
    }
    std::sort(pool.begin(), pool.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    for (size_t i = 0; i < pool.size() && left > 0; ++i, --left) {
      ++budgets[size_t(layer * heads + pool[i].second)];
    }
  }
  return budgets;
}

}  // namespace kvstash::compress
