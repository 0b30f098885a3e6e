#include "compress/score_input.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/check.h"

namespace kvstash::compress {

using kernels::KvSide;

ScoreInput::ScoreInput(const ModelConfig& config, const KvView& kv, int n,
                       const QueryWindow& queries)
    : config_(config), kv_(kv), n_(n), queries_(queries) {}

int ScoreInput::rows(int pair) const {
  return kv_.Rows(layer_of(pair), head_of(pair), n_);
}

void ScoreInput::Decode(int pair, KvSide side, std::vector<float>* out) const {
  const size_t hd = size_t(config_.head_dim);
  const int n_rows = rows(pair);
  out->resize(size_t(n_rows) * hd);
  std::vector<kernels::KvRun> runs;
  kv_.Read(layer_of(pair), head_of(pair), n_, &runs);
  size_t row = 0;
  for (const kernels::KvRun& run : runs) {
    const kernels::KvType type = side == KvSide::kK ? run.k_type : run.v_type;
    const auto* bytes =
        static_cast<const uint8_t*>(side == KvSide::kK ? run.k : run.v);
    for (size_t t = 0; t < run.n_tokens; ++t, ++row) {
      kernels::KvDecodeRow(type, side, bytes, t, hd, &(*out)[row * hd]);
    }
  }
  KV_CHECK(row == size_t(n_rows));
}

int ScoreInput::Attention(int pair, int from, std::vector<float>* probs) const {
  const size_t hd = size_t(config_.head_dim);
  const int group = config_.n_heads / config_.n_kv_heads;
  const int layer = layer_of(pair), kv_head = head_of(pair);
  const int n_rows = rows(pair);
  std::vector<float> keys;
  Decode(pair, KvSide::kK, &keys);
  const bool rotated = this->rotated(KvSide::kK);
  const float scale = 1.0f / std::sqrt(float(hd));
  probs->clear();
  std::vector<float> q(hd);
  int count = 0;
  for (int pos = std::max(from, queries_.first()); pos < n_; ++pos) {
    const float* all = queries_.Query(layer, pos);
    if (all == nullptr) continue;
    const int attended = kv_.Rows(layer, kv_head, pos + 1);
    for (int g = 0; g < group; ++g) {
      std::memcpy(q.data(), all + size_t(kv_head * group + g) * hd,
                  hd * sizeof(float));
      if (rotated) kernels::KvRotate(q.data(), hd);
      const size_t base = probs->size();
      probs->resize(base + size_t(n_rows), 0.0f);
      float* p = &(*probs)[base];
      float max = -INFINITY;
      for (int r = 0; r < attended; ++r) {
        float dot = 0;
        const float* k = &keys[size_t(r) * hd];
        for (size_t d = 0; d < hd; ++d) dot += q[d] * k[d];
        p[r] = dot * scale;
        max = std::max(max, p[r]);
      }
      double sum = 0;
      for (int r = 0; r < attended; ++r) {
        p[r] = std::exp(p[r] - max);
        sum += p[r];
      }
      for (int r = 0; r < attended; ++r) p[r] = float(p[r] / sum);
      ++count;
    }
  }
  return count;
}

int ScoreInput::AttentionMass(int pair, int from,
                              std::vector<float>* mass) const {
  std::vector<float> probs;
  const int count = Attention(pair, from, &probs);
  const size_t n_rows = size_t(rows(pair));
  mass->assign(n_rows, 0.0f);
  for (int q = 0; q < count; ++q) {
    const float* p = &probs[size_t(q) * n_rows];
    for (size_t r = 0; r < n_rows; ++r) (*mass)[r] += p[r];
  }
  return count;
}

}  // namespace kvstash::compress
