// Reader for llama2.c float32 checkpoints (karpathy/llama2.c `run.c` format):
// a header of 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier
// is stored separately after the RoPE tables), then the f32 weights in a fixed
// order. Every size is checked against the file before pointers are made.
#pragma once

#include <cstdint>
#include <span>

#include "base/status.h"
#include "model/model_config.h"

namespace kvstash {

// Views into a mapped llama2.c checkpoint; all arrays are row-major f32.
struct Llama2cWeights {
  const float* token_embedding;  // [vocab][dim]
  const float* rms_att;          // [layer][dim]
  const float* wq;               // [layer][n_heads * head_dim][dim]
  const float* wk;               // [layer][n_kv_heads * head_dim][dim]
  const float* wv;               // [layer][n_kv_heads * head_dim][dim]
  const float* wo;               // [layer][dim][n_heads * head_dim]
  const float* rms_ffn;          // [layer][dim]
  const float* w1;               // [layer][hidden][dim]   (gate)
  const float* w2;               // [layer][dim][hidden]   (down)
  const float* w3;               // [layer][hidden][dim]   (up)
  const float* rms_final;        // [dim]
  const float* wcls;             // [vocab][dim]; == token_embedding if tied
};

// Parses the header and lays out the weights of the checkpoint image `data`
// (which must stay alive while the weights are used).
Status ParseLlama2c(std::span<const uint8_t> data, ModelConfig* config,
                    Llama2cWeights* weights);

}  // namespace kvstash
