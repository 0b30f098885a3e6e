// ModelConfig: the shape and hyper-parameters of a Llama-family transformer,
// read from GGUF metadata (architectures `llama`, `qwen2` and `qwen3`) or from
// a llama2.c checkpoint header, and validated before any weight is touched.
#pragma once

#include <string>

#include "base/status.h"
#include "kernels/ops.h"

namespace kvstash {

class GgufFile;

enum class Architecture { kLlama, kQwen2, kQwen3 };

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  std::string arch_name = "llama";
  int dim = 0;  // embedding width
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads (GQA when < n_heads)
  int head_dim = 0;
  int ffn_dim = 0;  // SwiGLU hidden width
  int vocab_size = 0;
  int context_length = 0;  // the training context the file declares
  int rope_dims = 0;       // rotated dims per head (<= head_dim)
  float rope_base = 10000.0f;
  kernels::RopeStyle rope_style = kernels::RopeStyle::kAdjacent;
  // Frequencies stretched for long contexts (GGUF `<arch>.rope.scaling.type`
  // "linear" / "yarn" with `.factor`, `.original_context_length`,
  // `.attn_factor`; the older `<arch>.rope.scale_linear`; Llama 3.1+'s
  // `rope_freqs.weight` tensor of rot_dims / 2 f32 divisors).
  kernels::RopeScaling rope_scaling;
  float rms_eps = 1e-5f;
  bool tied_output = true;  // classifier reuses the token embedding
  bool qkv_bias = false;    // q/k/v projections carry biases (qwen2)
  bool qk_norm = false;     // each head of q and k RMS-normalised before
                            // RoPE, one weight per dim (qwen3)

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }

  // InvalidArgument naming the first inconsistent field.
  Status Validate() const;
  // Multi-line "key: value" description for `kvstash info`.
  std::string ToString() const;
};

// Reads `general.architecture` and the `<arch>.*` keys (a RoPE scaling type
// other than none, linear and yarn is InvalidArgument: computing it as
// another would be silently wrong). Whether the output
// matrix is tied and whether q/k/v biases exist is decided by the tensors
// present (output.weight, blk.0.attn_q.bias, blk.0.attn_q_norm.weight).
Result<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf);

}  // namespace kvstash
