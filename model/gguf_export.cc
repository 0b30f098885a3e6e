#include "model/gguf_export.h"

#include "model/gguf_writer.h"

namespace kvstash {
namespace {

using kernels::DType;

// Produces rows of a weight matrix decoded to f32.
GgufWriter::RowSource RowsOf(const WeightMatrix& m) {
  return [m](size_t begin, size_t end, float* out) {
    const size_t row_bytes = kernels::RowBytes(m.type, m.cols);
    for (size_t r = begin; r < end; ++r) {
      kernels::DequantizeRow(
          m.type, static_cast<const uint8_t*>(m.data) + r * row_bytes, m.cols,
          out + (r - begin) * m.cols);
    }
  };
}

}  // namespace

void WriteConfigMetadata(const ModelConfig& c, std::string_view name,
                         GgufWriter* out) {
  const std::string p = c.arch_name + ".";
  out->SetString("general.architecture", c.arch_name);
  out->SetString("general.name", name);
  out->SetU32("general.alignment", 32);
  out->SetU32(p + "context_length", c.context_length);
  out->SetU32(p + "embedding_length", c.dim);
  out->SetU32(p + "block_count", c.n_layers);
  out->SetU32(p + "feed_forward_length", c.ffn_dim);
  out->SetU32(p + "attention.head_count", c.n_heads);
  out->SetU32(p + "attention.head_count_kv", c.n_kv_heads);
  out->SetU32(p + "attention.key_length", c.head_dim);
  out->SetU32(p + "attention.value_length", c.head_dim);
  out->SetU32(p + "rope.dimension_count", c.rope_dims);
  out->SetF32(p + "rope.freq_base", c.rope_base);
  out->SetF32(p + "attention.layer_norm_rms_epsilon", c.rms_eps);
  out->SetU32(p + "vocab_size", c.vocab_size);
  const kernels::RopeScaling& s = c.rope_scaling;
  if (s.kind != kernels::RopeScaling::Kind::kNone) {
    const bool yarn = s.kind == kernels::RopeScaling::Kind::kYarn;
    out->SetString(p + "rope.scaling.type", yarn ? "yarn" : "linear");
    out->SetF32(p + "rope.scaling.factor", s.factor);
    if (yarn) {
      out->SetU32(p + "rope.scaling.original_context_length",
                  uint32_t(s.original_context));
    }
  }
  if (s.attn_factor != 1.0f) {
    out->SetF32(p + "rope.scaling.attn_factor", s.attn_factor);
  }
}

Status ExportGguf(const Model& model, const WeightMix& mix,
                  const std::string& path,
                  std::vector<WeightFallback>* fallbacks, ThreadPool* pool) {
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  GgufWriter out;
  WriteConfigMetadata(c, "kvstash export", &out);
  out.SetU32("general.file_type", mix.GgufFileType());
  model.tokenizer().WriteGgufMetadata(&out);

  auto matrix = [&](const std::string& name, const WeightMatrix& m) {
    const WeightMix::Choice t =
        mix.TypeOf(name, c.n_layers, c.tied_output, uint64_t(m.cols));
    if (t.fallback() && fallbacks != nullptr) {
      fallbacks->push_back({name, t.wanted, t.type});
    }
    return out.AddTensor(name, {uint64_t(m.cols), uint64_t(m.rows)}, t.type,
                         RowsOf(m));
  };
  auto vec = [&](const std::string& name, const float* v, int n) {
    return out.AddTensor(name, {uint64_t(n)}, DType::kF32, {v, size_t(n)});
  };
  if (!c.rope_scaling.freq_factors.empty()) {
    const std::vector<float>& f = c.rope_scaling.freq_factors;
    KV_RETURN_IF_ERROR(out.AddTensor("rope_freqs.weight", {uint64_t(f.size())},
                                     DType::kF32, f));
  }
  KV_RETURN_IF_ERROR(matrix("token_embd.weight", w.token_embedding));
  KV_RETURN_IF_ERROR(vec("output_norm.weight", w.output_norm, c.dim));
  if (!c.tied_output) KV_RETURN_IF_ERROR(matrix("output.weight", w.output));
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    const std::string b = "blk." + std::to_string(l) + ".";
    KV_RETURN_IF_ERROR(vec(b + "attn_norm.weight", lw.attn_norm, c.dim));
    KV_RETURN_IF_ERROR(matrix(b + "attn_q.weight", lw.wq));
    KV_RETURN_IF_ERROR(matrix(b + "attn_k.weight", lw.wk));
    KV_RETURN_IF_ERROR(matrix(b + "attn_v.weight", lw.wv));
    KV_RETURN_IF_ERROR(matrix(b + "attn_output.weight", lw.wo));
    if (c.qkv_bias) {
      KV_RETURN_IF_ERROR(vec(b + "attn_q.bias", lw.bq, c.q_dim()));
      KV_RETURN_IF_ERROR(vec(b + "attn_k.bias", lw.bk, c.kv_dim()));
      KV_RETURN_IF_ERROR(vec(b + "attn_v.bias", lw.bv, c.kv_dim()));
    }
    if (c.qk_norm) {
      KV_RETURN_IF_ERROR(vec(b + "attn_q_norm.weight", lw.q_norm, c.head_dim));
      KV_RETURN_IF_ERROR(vec(b + "attn_k_norm.weight", lw.k_norm, c.head_dim));
    }
    KV_RETURN_IF_ERROR(vec(b + "ffn_norm.weight", lw.ffn_norm, c.dim));
    KV_RETURN_IF_ERROR(matrix(b + "ffn_gate.weight", lw.w_gate));
    KV_RETURN_IF_ERROR(matrix(b + "ffn_up.weight", lw.w_up));
    KV_RETURN_IF_ERROR(matrix(b + "ffn_down.weight", lw.w_down));
  }
  return out.Write(path, pool);
}

}  // namespace kvstash
