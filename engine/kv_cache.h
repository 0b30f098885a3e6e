// The narrow interface through which the forward pass reaches the attention
// keys and values of a sequence, and its first implementation.
//
// KvView is all the engine knows of the KV cache: store the K/V of one token
// at a position, and read the K/V of positions [0, n) of one (layer, kv head)
// as runs of contiguous positions (kernels::KvRun). ContiguousKvCache keeps
// one flat buffer per sequence and answers every read with a single run; the
// paged cache replaces it without changing the forward pass.
#pragma once

#include <memory>
#include <vector>

#include "kernels/attention.h"

namespace kvstash {

class KvView {
 public:
  virtual ~KvView() = default;

  // Positions this view can hold: valid positions are [0, capacity()).
  virtual int capacity() const = 0;

  // Stores the keys and values of the token at `pos` in `layer`.
  // k, v: [n_kv_heads][head_dim]. REQUIRES: 0 <= pos < capacity().
  virtual void Write(int layer, int pos, const float* k, const float* v) = 0;

  // Replaces `runs` with the K/V of positions [0, n) of (layer, kv_head), in
  // position order. The pointers stay valid until the next Write.
  // REQUIRES: 0 < n <= capacity(), and every position < n was written.
  virtual void Read(int layer, int kv_head, int n,
                    std::vector<kernels::KvRun>* runs) const = 0;
};

// One sequence's K/V in two flat f32 buffers, each laid out as
// [layer][kv_head][pos][head_dim]. Thread-compatible.
class ContiguousKvCache final : public KvView {
 public:
  ContiguousKvCache(int n_layers, int n_kv_heads, int head_dim, int capacity);

  int capacity() const override { return capacity_; }
  void Write(int layer, int pos, const float* k, const float* v) override;
  void Read(int layer, int kv_head, int n,
            std::vector<kernels::KvRun>* runs) const override;

 private:
  size_t Offset(int layer, int kv_head, int pos) const;

  int n_layers_, n_kv_heads_, head_dim_, capacity_;
  std::unique_ptr<float[]> k_;
  std::unique_ptr<float[]> v_;
};

}  // namespace kvstash
