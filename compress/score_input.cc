#include "compress/score_input.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "base/check.h"
#include "kernels/matmul_fast.h"

namespace kvstash::compress {

using kernels::KvSide;

ScoreInput::ScoreInput(const ModelConfig& config, const KvView& kv, int n,
                       const QueryWindow& queries, ThreadPool* pool)
    : config_(config), kv_(kv), n_(n), queries_(queries), pool_(pool) {}

void ScoreInput::ForEachPair(const std::function<void(int pair)>& fn) const {
  if (pool_ == nullptr) {
    for (int pair = 0; pair < pairs(); ++pair) fn(pair);
    return;
  }
  pool_->ParallelFor(size_t(pairs()),
                     [&](size_t pair, size_t) { fn(static_cast<int>(pair)); });
}

void Dots(const float* rows, size_t n_rows, const float* x, size_t n_x,
          size_t dim, std::vector<float>* y) {
  y->resize(n_rows * n_x);
  if (n_rows == 0 || n_x == 0) return;
  const size_t bytes =
      kernels::PreparedActivationBytes(kernels::DType::kF32, dim, n_x);
  std::unique_ptr<void, decltype(&std::free)> prepared(
      std::aligned_alloc(64, (bytes + 63) / 64 * 64), &std::free);
  kernels::PrepareActivations(kernels::DType::kF32, x, dim, n_x,
                              prepared.get());
  kernels::MatMulRows(kernels::DType::kF32, rows, dim, x, prepared.get(), n_x,
                      0, n_rows, y->data(), n_rows);
}

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
  const size_t n_rows = size_t(rows(pair));
  // The held queries of the pair's group, and how many rows each attends.
  std::vector<float> q;
  std::vector<int> attended;
  for (int pos = std::max(from, queries_.first()); pos < n_; ++pos) {
    const float* all = queries_.Query(layer, pos);
    if (all == nullptr) continue;
    const float* mine = all + size_t(kv_head * group) * hd;
    q.insert(q.end(), mine, mine + size_t(group) * hd);
    attended.insert(attended.end(), size_t(group),
                    kv_.Rows(layer, kv_head, pos + 1));
  }
  const size_t count = attended.size();
  if (rotated(KvSide::kK)) {
    for (size_t i = 0; i < count; ++i) kernels::KvRotate(&q[i * hd], hd);
  }
  std::vector<float> keys;
  Decode(pair, KvSide::kK, &keys);
  Dots(keys.data(), n_rows, q.data(), count, hd, probs);
  const float scale = 1.0f / std::sqrt(float(hd));
  for (size_t i = 0; i < count; ++i) {
    float* p = &(*probs)[i * n_rows];
    const size_t n_att = size_t(attended[i]);
    float max = -INFINITY;
    for (size_t r = 0; r < n_att; ++r) max = std::max(max, p[r] * scale);
    double sum = 0;
    for (size_t r = 0; r < n_att; ++r) {
      p[r] = std::exp(p[r] * scale - max);
      sum += p[r];
    }
    const float inv = float(1.0 / sum);
    for (size_t r = 0; r < n_att; ++r) p[r] *= inv;
    std::fill(p + n_att, p + n_rows, 0.0f);
  }
  return static_cast<int>(count);
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
