#include "compress/query_window.h"

#include <algorithm>
#include <cstring>

#include "base/check.h"

namespace kvstash::compress {

QueryWindow::QueryWindow(int n_layers, int q_dim, int capacity)
    : n_layers_(n_layers), q_dim_(q_dim), capacity_(capacity) {
  KV_CHECK(n_layers > 0 && q_dim > 0 && capacity >= 0);
  if (capacity_ > 0) {
    slot_pos_.assign(size_t(capacity_) * size_t(n_layers_), -1);
    data_.resize(size_t(capacity_) * size_t(n_layers_) * size_t(q_dim_));
  }
}

void QueryWindow::Clear() {
  first_ = end_ = 0;
  std::fill(slot_pos_.begin(), slot_pos_.end(), -1);
}

void QueryWindow::BeginPass(int begin, int end) {
  KV_CHECK(0 <= begin && begin < end);
  // A pass that does not continue the observed positions starts over.
  if (begin != end_) {
    Clear();
    first_ = begin;
  }
  end_ = end;
  if (capacity_ == 0) {
    if (slot_pos_.size() < size_t(end) * size_t(n_layers_)) {
      slot_pos_.resize(size_t(end) * size_t(n_layers_), -1);
      data_.resize(size_t(end) * size_t(n_layers_) * size_t(q_dim_));
    }
  } else {
    first_ = std::max(first_, end - capacity_);
  }
}

void QueryWindow::Observe(int layer, int pos, const float* q) {
  if (pos < first_ || pos >= end_) return;
  const size_t slot = Slot(pos) * size_t(n_layers_) + size_t(layer);
  slot_pos_[slot] = pos;
  std::memcpy(&data_[slot * size_t(q_dim_)], q, size_t(q_dim_) * sizeof(float));
}

const float* QueryWindow::Query(int layer, int pos) const {
  if (pos < first_ || pos >= end_) return nullptr;
  const size_t slot = Slot(pos) * size_t(n_layers_) + size_t(layer);
  if (slot_pos_[slot] != pos) return nullptr;
  return &data_[slot * size_t(q_dim_)];
}

}  // namespace kvstash::compress
