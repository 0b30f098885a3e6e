#include "model/llama2c.h"

#include <cstring>

namespace kvstash {

Status ParseLlama2c(std::span<const uint8_t> data, ModelConfig* config,
                    Llama2cWeights* w) {
  int32_t h[7];
  if (data.size() < sizeof(h)) {
    return Status::Corruption("llama2.c checkpoint: file of " +
                              std::to_string(data.size()) +
                              " bytes is shorter than its 28-byte header");
  }
  std::memcpy(h, data.data(), sizeof(h));
  ModelConfig c;
  c.arch = Architecture::kLlama;
  c.arch_name = "llama";
  c.dim = h[0];
  c.ffn_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.tied_output = h[5] > 0;
  c.vocab_size = h[5] == INT32_MIN ? 0 : (h[5] < 0 ? -h[5] : h[5]);
  c.context_length = h[6];
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  c.rope_dims = c.head_dim;
  c.rope_base = 10000.0f;
  c.rope_style = kernels::RopeStyle::kAdjacent;
  c.rms_eps = 1e-5f;
  if (c.n_heads > 0 && c.dim % c.n_heads != 0) {
    return Status::InvalidArgument(
        "llama2.c checkpoint: dim " + std::to_string(c.dim) +
        " is not a multiple of n_heads " + std::to_string(c.n_heads));
  }
  KV_RETURN_IF_ERROR(c.Validate().WithPrefix("llama2.c checkpoint"));

  // Sizes in floats; Validate() bounds every factor, so uint64 cannot wrap.
  const uint64_t dim = c.dim, hidden = c.ffn_dim, layers = c.n_layers;
  const uint64_t q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const uint64_t vocab = c.vocab_size;
  const uint64_t rope_table = uint64_t(c.context_length) * (c.head_dim / 2);
  const float* base = reinterpret_cast<const float*>(data.data() + sizeof(h));
  const uint64_t available = (data.size() - sizeof(h)) / sizeof(float);
  uint64_t used = 0;
  auto take = [&](uint64_t n) {
    const float* p = base + used;
    used += n;
    return p;
  };
  w->token_embedding = take(vocab * dim);
  w->rms_att = take(layers * dim);
  w->wq = take(layers * q_dim * dim);
  w->wk = take(layers * kv_dim * dim);
  w->wv = take(layers * kv_dim * dim);
  w->wo = take(layers * dim * q_dim);
  w->rms_ffn = take(layers * dim);
  w->w1 = take(layers * hidden * dim);
  w->w2 = take(layers * dim * hidden);
  w->w3 = take(layers * hidden * dim);
  w->rms_final = take(dim);
  take(2 * rope_table);  // freq_cis_real, freq_cis_imag: recomputed instead
  w->wcls = c.tied_output ? w->token_embedding : take(vocab * dim);
  if (used > available) {
    return Status::Corruption(
        "llama2.c checkpoint: header promises " + std::to_string(used) +
        " floats of weights but the file holds " + std::to_string(available));
  }
  if (reinterpret_cast<uintptr_t>(base) % alignof(float) != 0) {
    return Status::Internal("llama2.c checkpoint: mapping is misaligned");
  }
  *config = c;
  return Status::OK();
}

}  // namespace kvstash
