#include "compress/policies.h"

namespace kvstash::compress {

void ScoreH2o(const ScoreInput& in, Scores* scores) {
  scores->resize(size_t(in.pairs()));
  in.ForEachPair(
      [&](int pair) { in.AttentionMass(pair, 0, &(*scores)[size_t(pair)]); });
}

}  // namespace kvstash::compress
