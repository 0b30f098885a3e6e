#include "engine/transformer.h"

#include <cmath>

#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"

namespace kvstash {
namespace {

void MatMul(const WeightMatrix& w, const float* x, size_t n, float* y) {
  kernels::MatMul(w.type, w.data, w.rows, w.cols, x, n, y);
}

}  // namespace

Transformer::Transformer(const Model& model) : model_(model) {}

void Transformer::EnsureScratch(size_t n) {
  if (n <= scratch_tokens_) return;
  const ModelConfig& c = model_.config();
  x_.resize(n * c.dim);
  xb_.resize(n * c.dim);
  q_.resize(n * c.q_dim());
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  att_.resize(n * c.q_dim());
  proj_.resize(n * c.dim);
  gate_.resize(n * c.ffn_dim);
  up_.resize(n * c.ffn_dim);
  scratch_tokens_ = n;
}

// att_[t] = causal attention of q_[t] over positions [0, pos + t].
void Transformer::Attend(int layer, size_t n, int pos, const KvView& kv) {
  const ModelConfig& c = model_.config();
  const size_t hd = c.head_dim;
  const size_t group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int n_ctx_max = pos + static_cast<int>(n);
  if (scores_.size() < size_t(n_ctx_max)) scores_.resize(n_ctx_max);
  for (int g = 0; g < c.n_kv_heads; ++g) {
    kv.Read(layer, g, n_ctx_max, &runs_);
    for (size_t t = 0; t < n; ++t) {
      const size_t head0 = size_t(g) * group;
      kernels::Attention(&q_[t * c.q_dim() + head0 * hd], group, hd, runs_,
                         pos + t + 1, scale, scores_.data(),
                         &att_[t * c.q_dim() + head0 * hd]);
    }
  }
}

Status Transformer::Forward(std::span<const int32_t> tokens, int pos,
                            KvView& kv, bool all_logits, float* logits) {
  const ModelConfig& c = model_.config();
  const ModelWeights& w = model_.weights();
  const size_t n = tokens.size();
  if (n == 0) return Status::InvalidArgument("forward: no tokens");
  if (pos < 0 || n > size_t(kv.capacity()) ||
      size_t(pos) > size_t(kv.capacity()) - n) {
    return Status::OutOfRange(
        "forward: positions [" + std::to_string(pos) + ", " +
        std::to_string(pos + n) + ") exceed the context of " +
        std::to_string(kv.capacity()));
  }
  for (int32_t id : tokens) {
    if (id < 0 || id >= c.vocab_size) {
      return Status::InvalidArgument("forward: token id " + std::to_string(id) +
                                     " outside the vocabulary of " +
                                     std::to_string(c.vocab_size));
    }
  }
  EnsureScratch(n);
  const size_t dim = c.dim, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const size_t ffn = c.ffn_dim;
  const size_t embd_row = kernels::RowBytes(w.token_embedding.type, dim);
  for (size_t t = 0; t < n; ++t) {
    kernels::DequantizeRow(
        w.token_embedding.type,
        static_cast<const uint8_t*>(w.token_embedding.data) +
            size_t(tokens[t]) * embd_row,
        dim, &x_[t * dim]);
  }

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    for (size_t t = 0; t < n; ++t) {
      kernels::RmsNorm(&x_[t * dim], lw.attn_norm, dim, c.rms_eps,
                       &xb_[t * dim]);
    }
    MatMul(lw.wq, xb_.data(), n, q_.data());
    MatMul(lw.wk, xb_.data(), n, k_.data());
    MatMul(lw.wv, xb_.data(), n, v_.data());
    for (size_t t = 0; t < n; ++t) {
      float* q = &q_[t * q_dim];
      float* k = &k_[t * kv_dim];
      if (c.qkv_bias) {
        kernels::AddInPlace(q, lw.bq, q_dim);
        kernels::AddInPlace(k, lw.bk, kv_dim);
        kernels::AddInPlace(&v_[t * kv_dim], lw.bv, kv_dim);
      }
      const int p = pos + static_cast<int>(t);
      kernels::Rope(q, c.n_heads, c.head_dim, c.rope_dims, p, c.rope_base,
                    c.rope_style);
      kernels::Rope(k, c.n_kv_heads, c.head_dim, c.rope_dims, p, c.rope_base,
                    c.rope_style);
      kv.Write(l, p, k, &v_[t * kv_dim]);
    }
    Attend(l, n, pos, kv);
    MatMul(lw.wo, att_.data(), n, proj_.data());
    kernels::AddInPlace(x_.data(), proj_.data(), n * dim);

    for (size_t t = 0; t < n; ++t) {
      kernels::RmsNorm(&x_[t * dim], lw.ffn_norm, dim, c.rms_eps,
                       &xb_[t * dim]);
    }
    MatMul(lw.w_gate, xb_.data(), n, gate_.data());
    MatMul(lw.w_up, xb_.data(), n, up_.data());
    kernels::SiluMul(gate_.data(), up_.data(), n * ffn);
    MatMul(lw.w_down, gate_.data(), n, proj_.data());
    kernels::AddInPlace(x_.data(), proj_.data(), n * dim);
  }

  const size_t first = all_logits ? 0 : n - 1;
  const size_t n_out = n - first;
  for (size_t t = first; t < n; ++t) {
    kernels::RmsNorm(&x_[t * dim], w.output_norm, dim, c.rms_eps,
                     &xb_[(t - first) * dim]);
  }
  MatMul(w.output, xb_.data(), n_out, logits);
  return Status::OK();
}

}  // namespace kvstash
