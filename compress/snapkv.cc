#include <algorithm>

#include "compress/policies.h"

namespace kvstash::compress {
namespace {

constexpr int kPoolKernel = 5;

}  // namespace

void ScoreSnapkv(const ScoreInput& in, int window, Scores* scores) {
  scores->resize(size_t(in.pairs()));
  in.ForEachPair([&](int pair) {
    std::vector<float> mass;
    const int count = in.AttentionMass(pair, in.n() - window, &mass);
    const int n_rows = static_cast<int>(mass.size());
    std::vector<float>& s = (*scores)[size_t(pair)];
    s.assign(size_t(n_rows), 0.0f);
    const float norm = float(std::max(count, 1)) * float(kPoolKernel);
    for (int r = 0; r < n_rows; ++r) {
      float sum = 0;
      const int lo = std::max(0, r - kPoolKernel / 2);
      const int hi = std::min(n_rows, r + kPoolKernel / 2 + 1);
      for (int j = lo; j < hi; ++j) sum += mass[size_t(j)];
      s[size_t(r)] = sum / norm;
    }
  });
}

}  // namespace kvstash::compress
