#include "compress/policies.h"

namespace kvstash::compress {

void ScoreTova(const ScoreInput& in, Scores* scores) {
  scores->resize(size_t(in.pairs()));
  in.ForEachPair([&](int pair) {
    std::vector<float>& s = (*scores)[size_t(pair)];
    const int count = in.AttentionMass(pair, in.n() - 1, &s);
    if (count > 0) {
      for (float& x : s) x /= float(count);
    }
  });
}

}  // namespace kvstash::compress
