// BlockLayout: where the keys and values of one token live inside a KV block.
//
// A block holds `block_tokens` consecutive positions of one sequence for all
// layers, as one contiguous object (one thing to copy, hash, checksum, write
// and read):
//
//   [layer][K|V][kv_head][token][head_dim]   elements of kv_type
//
// so the keys (or values) of one (layer, kv head) over the block's tokens are
// one contiguous run of [block_tokens][head_dim], which is what the attention
// kernels read. Pure arithmetic; shared by the block pool (kvcache/), the
// tier objects (store/) and the paged KV view of the forward pass (engine/).
#pragma once

#include <cstddef>

#include "kernels/dtype.h"

namespace kvstash::kernels {

struct BlockLayout {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_tokens = 16;
  DType kv_type = DType::kF16;  // f32, f16 or bf16

  size_t elem_bytes() const { return RowBytes(kv_type, 1); }
  // Bytes of one run: [block_tokens][head_dim].
  size_t run_bytes() const {
    return size_t(block_tokens) * size_t(head_dim) * elem_bytes();
  }
  size_t block_bytes() const {
    return size_t(n_layers) * 2 * size_t(n_kv_heads) * run_bytes();
  }
  // Byte offset of (layer, K (0) or V (1), kv_head, token) in a block.
  size_t Offset(int layer, int k_or_v, int kv_head, int token) const {
    return ((size_t(layer) * 2 + size_t(k_or_v)) * size_t(n_kv_heads) +
            size_t(kv_head)) *
               run_bytes() +
           size_t(token) * size_t(head_dim) * elem_bytes();
  }
};

}  // namespace kvstash::kernels
