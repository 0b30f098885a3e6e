#include "compress/policies.h"

namespace kvstash::compress {

void ScoreStreaming(const ScoreInput& in, Scores* scores) {
  scores->resize(size_t(in.pairs()));
  for (int pair = 0; pair < in.pairs(); ++pair) {
    std::vector<float>& s = (*scores)[size_t(pair)];
    s.resize(size_t(in.rows(pair)));
    for (size_t r = 0; r < s.size(); ++r) s[r] = float(r);
  }
}

}  // namespace kvstash::compress
