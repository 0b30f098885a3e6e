// What a compression policy sees of one sequence when it compresses
// positions [0, n): the model's geometry, the cache's rows of each (layer,
// kv head) decoded to f32, the queries a QueryWindow kept, and the attention
// those queries pay to the rows (recomputed here, in f32, from the stored
// keys: what the model's attention computed, up to the order of the sums).
//
// The plan and score types every policy file shares are here too.
#pragma once

#include <functional>
#include <vector>

#include "base/thread_pool.h"
#include "compress/query_window.h"
#include "engine/kv_view.h"
#include "kernels/kv_format.h"
#include "model/model_config.h"

namespace kvstash::compress {

class ScoreInput {
 public:
  // All references must outlive the ScoreInput; `pool` may be null.
  ScoreInput(const ModelConfig& config, const KvView& kv, int n,
             const QueryWindow& queries, ThreadPool* pool);

  // Runs fn(pair) for every pair, spread over the pool's workers; calls for
  // distinct pairs run concurrently.
  void ForEachPair(const std::function<void(int pair)>& fn) const;

  const ModelConfig& config() const { return config_; }
  int n() const { return n_; }
  // (layer, kv head) pairs: index = layer * n_kv_heads + kv_head.
  int pairs() const { return config_.n_layers * config_.n_kv_heads; }
  int layer_of(int pair) const { return pair / config_.n_kv_heads; }
  int head_of(int pair) const { return pair % config_.n_kv_heads; }
  // Rows the pair holds for positions [0, n).
  int rows(int pair) const;
  const QueryWindow& queries() const { return queries_; }
  // Whether `side` is stored in a rotated basis (kernels::KvRotated): what
  // Decode returns must be rotated back (KvRotate) to meet model-basis
  // vectors.
  bool rotated(kernels::KvSide side) const {
    return kernels::KvRotated(kv_.format().type(side));
  }

  // The rows of K (or V) of `pair`, [rows][head_dim] f32, in the stored basis.
  void Decode(int pair, kernels::KvSide side, std::vector<float>* out) const;

  // Attention of the held queries of positions [from, n) (from >= 0) of the
  // query heads that share `pair`'s kv head, over its rows: probs gets one
  // row of rows(pair) floats per (position, query head), position-major;
  // a row is 0 past what its query attends to. Returns the number of rows.
  int Attention(int pair, int from, std::vector<float>* probs) const;
  // The sum over those queries of their attention to each row (`mass`: one
  // float per row); returns the number of queries.
  int AttentionMass(int pair, int from, std::vector<float>* mass) const;

 private:
  const ModelConfig& config_;
  const KvView& kv_;
  int n_;
  const QueryWindow& queries_;
  ThreadPool* pool_;
};

// y[t * n_rows + r] = dot(rows[r], x[t]) for r < n_rows, t < n_x; rows and x
// have `dim` f32 elements each (the SIMD matrix kernels).
void Dots(const float* rows, size_t n_rows, const float* x, size_t n_x,
          size_t dim, std::vector<float>* y);

// A score per row of each pair: [pair][row]; higher is kept first.
using Scores = std::vector<std::vector<float>>;

// The rows a policy never evicts, per pair: the first `sinks` and the last
// `recent` (fewer when the budget is smaller: recent ones go first).
struct Protection {
  int sinks = 0;
  std::vector<int> recent;  // [pair]
};

}  // namespace kvstash::compress
