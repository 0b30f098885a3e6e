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
#include "kernels/dtype.h"

namespace kvstash {

class KvView {
 public:
  virtual ~KvView() = default;

  // Positions this view can hold: valid positions are [0, capacity()).
  virtual int capacity() const = 0;

  // The element type of the runs Read returns.
  virtual kernels::DType kv_type() const = 0;

  // Stores the keys and values of the token at `pos` in `layer`.
  // k, v: [n_kv_heads][head_dim]. Calls for distinct (layer, pos) may run
  // concurrently. REQUIRES: 0 <= pos < capacity().
  virtual void Write(int layer, int pos, const float* k, const float* v) = 0;

  // Replaces `runs` with the K/V of positions [0, n) of (layer, kv_head), in
  // position order. The pointers stay valid until the next Write. Safe to
  // call concurrently (with other Reads).
  // REQUIRES: 0 < n <= capacity(), and every position < n was written.
  virtual void Read(int layer, int kv_head, int n,
                    std::vector<kernels::KvRun>* runs) const = 0;
};

// One sequence's K/V in two flat buffers of `kv_type`, each laid out as
// [layer][kv_head][pos][head_dim]. Writes to distinct (layer, pos) may run
// concurrently; otherwise thread-compatible.
class ContiguousKvCache final : public KvView {
 public:
  // REQUIRES: kernels::IsAttentionKvType(kv_type).
  ContiguousKvCache(int n_layers, int n_kv_heads, int head_dim, int capacity,
                    kernels::DType kv_type = kernels::DType::kF16);

  int capacity() const override { return capacity_; }
  kernels::DType kv_type() const override { return kv_type_; }
  // Bytes of K and V stored per position (all layers).
  size_t bytes_per_position() const;
  void Write(int layer, int pos, const float* k, const float* v) override;
  void Read(int layer, int kv_head, int n,
            std::vector<kernels::KvRun>* runs) const override;

 private:
  // Byte offset of (layer, kv_head, pos) in either buffer.
  size_t Offset(int layer, int kv_head, int pos) const;

  int n_layers_, n_kv_heads_, head_dim_, capacity_;
  kernels::DType kv_type_;
  size_t elem_bytes_;
  std::unique_ptr<uint8_t[]> k_;
  std::unique_ptr<uint8_t[]> v_;
};

}  // namespace kvstash
