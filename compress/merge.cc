#include <cmath>

#include "compress/policies.h"

namespace kvstash::compress {
namespace {

// Rows of one side of a pair in the model basis, each also normalized.
void ModelBasis(const ScoreInput& in, int pair, kernels::KvSide side,
                std::vector<float>* rows) {
  const size_t hd = size_t(in.config().head_dim);
  in.Decode(pair, side, rows);
  if (!in.rotated(side)) return;
  for (size_t r = 0; r < rows->size() / hd; ++r) {
    kernels::KvRotate(&(*rows)[r * hd], hd);
  }
}

}  // namespace

void AddMerges(const ScoreInput& in, const Scores& scores, bool mass_weights,
               KvSelection* selection) {
  const size_t hd = size_t(in.config().head_dim);
  const int heads = in.config().n_kv_heads;
  std::vector<std::vector<KvSelection::RowUpdate>> updates(size_t(in.pairs()));
  in.ForEachPair([&](int pair) {
    std::vector<float> keys, values, unit;
    const std::vector<int32_t>& kept = selection->rows[size_t(pair)];
    const size_t rows = size_t(in.rows(pair));
    if (kept.size() == rows || kept.empty()) return;
    ModelBasis(in, pair, kernels::KvSide::kK, &keys);
    ModelBasis(in, pair, kernels::KvSide::kV, &values);
    unit = keys;
    for (size_t r = 0; r < rows; ++r) {
      double sq = 0;
      for (size_t d = 0; d < hd; ++d)
        sq += double(unit[r * hd + d]) * unit[r * hd + d];
      const float inv = sq > 0 ? float(1.0 / std::sqrt(sq)) : 0.0f;
      for (size_t d = 0; d < hd; ++d) unit[r * hd + d] *= inv;
    }
    auto weight = [&](size_t r) {
      return mass_weights ? double(scores[size_t(pair)][r]) + 1e-9 : 1.0;
    };
    // Per kept row: the weighted sums of K and V folded into it.
    std::vector<double> sum_k(kept.size() * hd), sum_v(kept.size() * hd),
        sum_w(kept.size(), 0.0);
    std::vector<bool> is_kept(rows, false);
    for (int32_t r : kept) is_kept[size_t(r)] = true;
    for (size_t i = 0; i < kept.size(); ++i) {
      const size_t r = size_t(kept[i]);
      sum_w[i] = weight(r);
      for (size_t d = 0; d < hd; ++d) {
        sum_k[i * hd + d] = sum_w[i] * keys[r * hd + d];
        sum_v[i * hd + d] = sum_w[i] * values[r * hd + d];
      }
    }
    std::vector<bool> merged(kept.size(), false);
    for (size_t e = 0; e < rows; ++e) {
      if (is_kept[e]) continue;
      size_t best = 0;
      float best_cos = -INFINITY;
      for (size_t i = 0; i < kept.size(); ++i) {
        const float* a = &unit[e * hd];
        const float* b = &unit[size_t(kept[i]) * hd];
        float dot = 0;
        for (size_t d = 0; d < hd; ++d) dot += a[d] * b[d];
        if (dot > best_cos) best_cos = dot, best = i;
      }
      const double w = weight(e);
      sum_w[best] += w;
      for (size_t d = 0; d < hd; ++d) {
        sum_k[best * hd + d] += w * keys[e * hd + d];
        sum_v[best * hd + d] += w * values[e * hd + d];
      }
      merged[best] = true;
    }
    for (size_t i = 0; i < kept.size(); ++i) {
      if (!merged[i]) continue;
      KvSelection::RowUpdate u;
      u.layer = pair / heads;
      u.kv_head = pair % heads;
      u.row = kept[i];
      u.k.resize(hd);
      u.v.resize(hd);
      for (size_t d = 0; d < hd; ++d) {
        u.k[d] = float(sum_k[i * hd + d] / sum_w[i]);
        u.v[d] = float(sum_v[i * hd + d] / sum_w[i]);
      }
      updates[size_t(pair)].push_back(std::move(u));
    }
  });
  for (auto& pair_updates : updates) {
    for (auto& u : pair_updates) selection->updates.push_back(std::move(u));
  }
}

}  // namespace kvstash::compress
