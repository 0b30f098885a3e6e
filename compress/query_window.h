// QueryWindow: the queries of the last positions a sequence computed, kept
// for the policies that score tokens by the attention those queries pay them
// (snapkv, tova, h2o, the budget allocators) or by their statistics
// (expected).
//
// It observes the forward passes (engine/kv_compaction.h QueryObserver) and
// keeps, per layer, the rotated queries of the last `capacity` positions
// (all positions when capacity is 0) in a ring; positions older than that
// are not copied at all. Observe calls for distinct (layer, pos) may run
// concurrently (they write distinct slots: a pass keeps at most `capacity`
// of its positions).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/kv_compaction.h"

namespace kvstash::compress {

class QueryWindow final : public QueryObserver {
 public:
  // q_dim = n_heads * head_dim; capacity 0 keeps every position.
  QueryWindow(int n_layers, int q_dim, int capacity);

  void BeginPass(int begin, int end) override;
  void Observe(int layer, int pos, const float* q) override;

  // Forgets every query.
  void Clear();
  // The query of (layer, pos) ([n_heads][head_dim]), or null when it is not
  // held (never observed, or older than the window).
  const float* Query(int layer, int pos) const;
  // Positions [first(), end()) were all observed (first() == end() when
  // none).
  int first() const { return first_; }
  int end() const { return end_; }

 private:
  size_t Slot(int pos) const {
    return capacity_ == 0 ? size_t(pos) : size_t(pos % capacity_);
  }

  int n_layers_;
  int q_dim_;
  int capacity_;
  int first_ = 0, end_ = 0;
  std::vector<int32_t> slot_pos_;  // [slot][layer]: the position held, or -1
  std::vector<float> data_;        // [slot][layer][q_dim]
};

}  // namespace kvstash::compress
