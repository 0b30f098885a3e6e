// The pieces compression policies are made of (compress/policy.cc puts them
// together): token scorers, budget allocators across layers and heads, the
// selection of the rows kept, and merging. One file each.
//
// Scores are per row of each (layer, kv head) pair; higher is kept first.
// Scores that are attention mass (probabilities summed or averaged) are
// comparable across the heads of a layer (Ada-KV) and serve as merge
// weights.
#pragma once

#include <vector>

#include "compress/score_input.h"
#include "engine/kv_compaction.h"

namespace kvstash::compress {

// Scorers (one file each).
// streaming.cc: StreamingLLM (Xiao et al. 2023): later rows score higher (the
// recent window; sinks are protected).
void ScoreStreaming(const ScoreInput& in, Scores* scores);
// knorm.cc: KnormPress (Devoto et al. 2024): keys of smaller L2 norm draw
// more attention; score = -|k|.
void ScoreKnorm(const ScoreInput& in, Scores* scores);
// h2o.cc: H2O (Zhang et al. 2023): attention accumulated over every held
// query (the whole prompt), summed over the query heads of the pair.
void ScoreH2o(const ScoreInput& in, Scores* scores);
// tova.cc: TOVA (Oren et al. 2024): the attention of the last query,
// averaged over the query heads of the pair.
void ScoreTova(const ScoreInput& in, Scores* scores);
// snapkv.cc: SnapKV (Li et al. 2024): the attention of the last `window`
// queries, averaged over them and the query heads, average-pooled over
// rows with a kernel of 5 (zero padded).
void ScoreSnapkv(const ScoreInput& in, int window, Scores* scores);
// expected.cc: ExpectedAttention (kvpress, Devoto et al. 2025): the
// attention that queries of the next kFuturePositions positions would pay,
// with those queries modelled as a Gaussian of the held queries' mean and
// covariance (RoPE averaged over the future positions): softmax over rows
// of mu.k / sqrt(d) + k^T S k / (2 d), averaged over the query heads, times
// |v|. No attention is computed.
void ScoreExpected(const ScoreInput& in, Scores* scores);
// lacache.cc: LaCache (Shi et al. 2025): a ladder across layers; past the
// protected sinks and recent rows, layer l keeps a contiguous span of the
// middle rows that moves from the oldest (first layer) to the newest (last
// layer), so together the layers cover more of the context than any one.
void ScoreLadder(const ScoreInput& in, const Protection& protection,
                 const std::vector<int>& budgets, Scores* scores);

// Budgets (budgets.cc): rows kept per pair for an eviction ratio r.
// The uniform budget of `rows` rows: round((1 - r) rows), at least 1 (when
// rows > 0).
int KeptRows(int rows, double ratio);
// Uniform: KeptRows of each pair.
std::vector<int> UniformBudgets(const ScoreInput& in, double ratio);
// PyramidKV (Cai et al. 2024): the uniform total, split across layers on a
// line from (2 - 1/beta) k at the first layer to k / beta at the last
// (beta = 20), each at least `floor` and at most its rows.
std::vector<int> PyramidBudgets(const ScoreInput& in, double ratio, int floor);
// CAKE (Qin et al. 2025): the uniform total, split across layers in
// proportion to each layer's preference H^(1/t1) V^(1/t2) (t1 = t2 = 1):
// H the entropy of the window's mean attention over rows, V the variance of
// the attention over the window's queries, summed over rows.
std::vector<int> CakeBudgets(const ScoreInput& in, double ratio, int window,
                             int floor);
// Ada-KV (Feng et al. 2024): each layer's uniform total, split across its
// heads by the layer's top scores over all its heads (attention mass), each
// head keeping at least kAdaKvFloor of the uniform budget and its protected
// rows.
std::vector<int> AdaKvBudgets(const ScoreInput& in, const Scores& scores,
                              const Protection& protection, double ratio);

// select.cc: per pair, the protected rows and then the best-scored others
// (ties: the later row) up to the budget, ascending.
KvSelection Select(const ScoreInput& in, const Scores& scores,
                   const Protection& protection,
                   const std::vector<int>& budgets);

// merge.cc: folds each evicted row into the kept row of the most similar
// key (cosine), K and V averaged with weights (the scores when they are
// attention mass, else 1): KVMerger / CaM-style merging on eviction.
void AddMerges(const ScoreInput& in, const Scores& scores, bool mass_weights,
               KvSelection* selection);

}  // namespace kvstash::compress
