#include <cmath>

#include "compress/policies.h"

namespace kvstash::compress {

void ScoreKnorm(const ScoreInput& in, Scores* scores) {
  const size_t hd = size_t(in.config().head_dim);
  scores->resize(size_t(in.pairs()));
  in.ForEachPair([&](int pair) {
    std::vector<float> keys;
    in.Decode(pair, kernels::KvSide::kK, &keys);
    std::vector<float>& s = (*scores)[size_t(pair)];
    s.resize(keys.size() / hd);
    for (size_t r = 0; r < s.size(); ++r) {
      double sq = 0;
      for (size_t d = 0; d < hd; ++d)
        sq += double(keys[r * hd + d]) * keys[r * hd + d];
      s[r] = -float(std::sqrt(sq));
    }
  });
}

}  // namespace kvstash::compress
