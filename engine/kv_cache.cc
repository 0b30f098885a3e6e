#include "engine/kv_cache.h"

#include "base/check.h"

namespace kvstash {

ContiguousKvCache::ContiguousKvCache(int n_layers, int n_kv_heads,
                                     int head_dim, int capacity,
                                     kernels::DType kv_type)
    : n_layers_(n_layers),
      n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      capacity_(capacity),
      kv_type_(kv_type),
      elem_bytes_(kernels::RowBytes(kv_type, 1)) {
  KV_CHECK(n_layers > 0 && n_kv_heads > 0 && head_dim > 0 && capacity > 0);
  KV_CHECK(kernels::IsAttentionKvType(kv_type));
  const size_t n = Offset(n_layers, 0, 0);
  k_ = std::make_unique<uint8_t[]>(n);
  v_ = std::make_unique<uint8_t[]>(n);
}

size_t ContiguousKvCache::bytes_per_position() const {
  return 2 * size_t(n_layers_) * n_kv_heads_ * head_dim_ * elem_bytes_;
}

size_t ContiguousKvCache::Offset(int layer, int kv_head, int pos) const {
  return ((size_t(layer) * n_kv_heads_ + kv_head) * capacity_ + pos) *
         head_dim_ * elem_bytes_;
}

void ContiguousKvCache::Write(int layer, int pos, const float* k,
                              const float* v) {
  KV_DCHECK(layer >= 0 && layer < n_layers_ && pos >= 0 && pos < capacity_);
  for (int h = 0; h < n_kv_heads_; ++h) {
    const size_t off = Offset(layer, h, pos);
    kernels::QuantizeRow(kv_type_, k + size_t(h) * head_dim_, head_dim_,
                         &k_[off]);
    kernels::QuantizeRow(kv_type_, v + size_t(h) * head_dim_, head_dim_,
                         &v_[off]);
  }
}

void ContiguousKvCache::Read(int layer, int kv_head, int n,
                             std::vector<kernels::KvRun>* runs) const {
  KV_DCHECK(n > 0 && n <= capacity_);
  const size_t off = Offset(layer, kv_head, 0);
  runs->assign(1, kernels::KvRun{&k_[off], &v_[off], size_t(n)});
}

}  // namespace kvstash
