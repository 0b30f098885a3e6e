// BlockLayout: where the keys and values of one token live inside a KV block.
//
// A block holds `block_tokens` consecutive positions of one sequence for all
// layers, as one contiguous object (one thing to copy, hash, checksum, write
// and read):
//
//   [layer][K|V][kv_head] run,   run = [run params][block_tokens][row]
//
// where K and V are stored in their own KvTypes (kernels/kv_format.h: a row
// is one token's head_dim values with any per-token scales; only per-channel
// types have run params). So the keys (or values) of one (layer, kv head)
// over the block's tokens are one contiguous run, which is what the attention
// kernels read. Pure arithmetic; shared by the block pool (kvcache/), the
// tier objects (store/) and the paged KV views of the forward pass (engine/).
#pragma once

#include <cstddef>
#include <string>

#include "kernels/kv_format.h"

namespace kvstash::kernels {

struct BlockLayout {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_tokens = 16;
  KvFormat kv;  // the types of K and V

  size_t row_bytes(KvSide side) const {
    return KvRowBytes(kv.type(side), side, size_t(head_dim));
  }
  // Bytes of one (layer, side, head) run.
  size_t run_bytes(KvSide side) const {
    return KvRunBytes(kv.type(side), side, size_t(head_dim),
                      size_t(block_tokens));
  }
  // Bytes of the K and the V runs of one (layer, head).
  size_t pair_bytes() const {
    return run_bytes(KvSide::kK) + run_bytes(KvSide::kV);
  }
  // Bytes of one layer's K and V runs: a block is n_layers of them, one
  // after the other, so a range of layers is one contiguous span.
  size_t layer_bytes() const { return size_t(n_kv_heads) * pair_bytes(); }
  size_t block_bytes() const { return size_t(n_layers) * layer_bytes(); }
  // Byte offset of the run of (layer, side, kv_head) in a block.
  size_t RunOffset(int layer, KvSide side, int kv_head) const {
    const size_t heads = size_t(n_kv_heads);
    return size_t(layer) * layer_bytes() +
           (side == KvSide::kK ? 0 : heads * run_bytes(KvSide::kK)) +
           size_t(kv_head) * run_bytes(side);
  }
  // Byte offset of token `token`'s row within a run of `side`.
  size_t RowOffset(KvSide side, int token) const {
    return KvRunParamBytes(kv.type(side), side, size_t(head_dim)) +
           size_t(token) * row_bytes(side);
  }
  // Byte offset of (layer, side, kv_head, token)'s row in a block.
  size_t Offset(int layer, KvSide side, int kv_head, int token) const {
    return RunOffset(layer, side, kv_head) + RowOffset(side, token);
  }
  // Average bytes of K/V per token, scales and run params included.
  double bytes_per_token() const {
    return double(block_bytes()) / double(block_tokens);
  }
  // The same geometry with both sides f16: the full-precision residual of
  // types that have one (KvHasResidual).
  BlockLayout residual_layout() const {
    BlockLayout r = *this;
    r.kv = {KvType::kF16, KvType::kF16};
    return r;
  }
  // Empty when the layout is usable, else what is wrong with it.
  std::string Check() const {
    if (n_layers <= 0 || n_kv_heads <= 0 || head_dim <= 0 ||
        block_tokens <= 0) {
      return "layers, kv heads, head_dim and block_tokens must be positive";
    }
    for (KvType t : {kv.k, kv.v}) {
      std::string why = KvFormatSupports(t, size_t(head_dim));
      if (!why.empty()) return why;
    }
    return "";
  }
};

}  // namespace kvstash::kernels
