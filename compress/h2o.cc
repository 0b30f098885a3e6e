#include "compress/policies.h"

namespace kvstash::compress {

void ScoreH2o(const ScoreInput& in, Scores* scores) {
  scores->resize(size_t(in.pairs()));
  for (int pair = 0; pair < in.pairs(); ++pair) {
    in.AttentionMass(pair, 0, &(*scores)[size_t(pair)]);
  }
}

}  // namespace kvstash::compress
