#include "model/model_config.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "model/gguf.h"

namespace kvstash {
namespace {

// Upper bounds that reject absurd headers before they size allocations.
constexpr int kMaxDim = 1 << 16;
constexpr int kMaxLayers = 1024;
constexpr int kMaxVocab = 1 << 22;
constexpr int kMaxContext = 1 << 22;

Status Bad(const std::string& what) {
  return Status::InvalidArgument("model config: " + what);
}

}  // namespace

Status ModelConfig::Validate() const {
  auto in_range = [](int v, int lo, int hi) { return v >= lo && v <= hi; };
  if (!in_range(dim, 1, kMaxDim)) return Bad("dim " + std::to_string(dim));
  if (!in_range(n_layers, 1, kMaxLayers)) {
    return Bad("n_layers " + std::to_string(n_layers));
  }
  if (!in_range(n_heads, 1, kMaxDim) || !in_range(n_kv_heads, 1, n_heads) ||
      n_heads % n_kv_heads != 0) {
    return Bad("n_heads " + std::to_string(n_heads) + " / n_kv_heads " +
               std::to_string(n_kv_heads) +
               " (need 1 <= n_kv_heads <= n_heads, n_heads % n_kv_heads == 0)");
  }
  if (!in_range(head_dim, 1, kMaxDim) || head_dim % 2 != 0) {
    return Bad("head_dim " + std::to_string(head_dim) + " (must be even)");
  }
  if (!in_range(ffn_dim, 1, 1 << 20)) {
    return Bad("ffn_dim " + std::to_string(ffn_dim));
  }
  if (!in_range(vocab_size, 1, kMaxVocab)) {
    return Bad("vocab_size " + std::to_string(vocab_size));
  }
  if (!in_range(context_length, 1, kMaxContext)) {
    return Bad("context_length " + std::to_string(context_length));
  }
  if (!in_range(rope_dims, 2, head_dim) || rope_dims % 2 != 0) {
    return Bad("rope dimension count " + std::to_string(rope_dims) +
               " (must be even and <= head_dim " + std::to_string(head_dim) +
               ")");
  }
  if (!(rope_base > 0.0f) || !(rms_eps > 0.0f) || !(rms_eps < 1.0f)) {
    return Bad("rope_base and rms_eps must be positive");
  }
  const kernels::RopeScaling& s = rope_scaling;
  if (!(s.factor >= 1.0f && s.factor <= 1e4f) ||
      !(s.attn_factor > 0.0f && s.attn_factor <= 1e4f)) {
    return Bad(
        "rope scaling factor must be in [1, 1e4] and attn_factor "
        "positive");
  }
  if (s.kind == kernels::RopeScaling::Kind::kYarn &&
      !in_range(s.original_context, 1, kMaxContext)) {
    return Bad("yarn rope scaling needs rope.scaling.original_context_length");
  }
  if (!s.freq_factors.empty()) {
    if (s.freq_factors.size() != size_t(rope_dims / 2)) {
      return Bad("rope_freqs has " + std::to_string(s.freq_factors.size()) +
                 " entries, expected rope dims / 2");
    }
    for (float f : s.freq_factors) {
      if (!(f > 0.0f && f <= 1e6f)) return Bad("rope_freqs must be positive");
    }
  }
  return Status::OK();
}

std::string ModelConfig::ToString() const {
  std::ostringstream s;
  s << "architecture: " << arch_name << "\n"
    << "dim: " << dim << "\n"
    << "n_layers: " << n_layers << "\n"
    << "n_heads: " << n_heads << "\n"
    << "n_kv_heads: " << n_kv_heads << "\n"
    << "head_dim: " << head_dim << "\n"
    << "ffn_dim: " << ffn_dim << "\n"
    << "vocab_size: " << vocab_size << "\n"
    << "context_length: " << context_length << "\n"
    << "rope: base " << rope_base << ", dims " << rope_dims << ", "
    << (rope_style == kernels::RopeStyle::kAdjacent ? "adjacent pairs"
                                                    : "halves (neox)")
    << "\n";
  const kernels::RopeScaling& r = rope_scaling;
  if (r.active()) {
    s << "rope scaling: "
      << (r.kind == kernels::RopeScaling::Kind::kLinear ? "linear"
          : r.kind == kernels::RopeScaling::Kind::kYarn ? "yarn"
                                                        : "none")
      << ", factor " << r.factor;
    if (r.kind == kernels::RopeScaling::Kind::kYarn) {
      s << ", original context " << r.original_context << ", attn_factor "
        << r.attn_factor;
    }
    if (!r.freq_factors.empty()) {
      s << ", " << r.freq_factors.size() << " frequency factors (rope_freqs)";
    }
    s << "\n";
  }
  s << "rms_eps: " << rms_eps << "\n"
    << "output: " << (tied_output ? "tied to token embedding" : "separate")
    << "\n"
    << "qkv_bias: " << (qkv_bias ? "yes" : "no") << "\n"
    << "qk_norm: " << (qk_norm ? "yes" : "no") << "\n";
  return s.str();
}

namespace {

// `<p>rope.scaling.*` (or the older `<p>rope.scale_linear`) and the
// `rope_freqs.weight` tensor.
Status ReadRopeScaling(const GgufFile& gguf, const std::string& p,
                       int rope_dims, kernels::RopeScaling* out) {
  using Kind = kernels::RopeScaling::Kind;
  auto get_f32 = [&](const std::string& key, float* value) -> Status {
    if (gguf.Find(key) == nullptr) return Status::OK();
    KV_ASSIGN_OR_RETURN(*value, gguf.GetF32(key));
    return Status::OK();
  };
  if (gguf.Find(p + "rope.scaling.type") != nullptr) {
    KV_ASSIGN_OR_RETURN(std::string_view type,
                        gguf.GetString(p + "rope.scaling.type"));
    if (type == "linear") {
      out->kind = Kind::kLinear;
    } else if (type == "yarn") {
      out->kind = Kind::kYarn;
    } else if (type != "none") {
      return Status::InvalidArgument("rope scaling type '" + std::string(type) +
                                     "' is not supported");
    }
    KV_RETURN_IF_ERROR(get_f32(p + "rope.scaling.factor", &out->factor));
    KV_RETURN_IF_ERROR(
        get_f32(p + "rope.scaling.attn_factor", &out->attn_factor));
    if (gguf.Find(p + "rope.scaling.original_context_length") != nullptr) {
      KV_ASSIGN_OR_RETURN(
          uint32_t n, gguf.GetU32(p + "rope.scaling.original_context_length"));
      out->original_context = int(std::min<uint32_t>(n, INT32_MAX));
    }
  } else if (gguf.Find(p + "rope.scale_linear") != nullptr) {
    out->kind = Kind::kLinear;
    KV_RETURN_IF_ERROR(get_f32(p + "rope.scale_linear", &out->factor));
  }
  if (const GgufTensor* freqs = gguf.FindTensor("rope_freqs.weight")) {
    if (freqs->type != kernels::DType::kF32 || freqs->dims.size() != 1 ||
        freqs->dims[0] != uint64_t(rope_dims / 2)) {
      return Status::InvalidArgument(
          "tensor 'rope_freqs.weight' must be f32 of rope dims / 2 = " +
          std::to_string(rope_dims / 2) + " entries");
    }
    out->freq_factors.resize(size_t(rope_dims / 2));
    std::memcpy(out->freq_factors.data(), freqs->data,
                out->freq_factors.size() * sizeof(float));
  }
  return Status::OK();
}

}  // namespace

Result<ModelConfig> ModelConfigFromGguf(const GgufFile& gguf) {
  ModelConfig c;
  KV_ASSIGN_OR_RETURN(std::string_view arch,
                      gguf.GetString("general.architecture"));
  c.arch_name = std::string(arch);
  if (arch == "llama") {
    c.arch = Architecture::kLlama;
    c.rope_style = kernels::RopeStyle::kAdjacent;
    c.rms_eps = 1e-5f;
  } else if (arch == "qwen2" || arch == "qwen3") {
    c.arch = arch == "qwen2" ? Architecture::kQwen2 : Architecture::kQwen3;
    c.rope_style = kernels::RopeStyle::kHalves;
    c.rms_eps = 1e-6f;
  } else {
    return Status::NotSupported("architecture '" + c.arch_name +
                                "' (supported: llama, qwen2, qwen3)");
  }
  const std::string p = c.arch_name + ".";
  auto get_int = [&](const std::string& key, int* out) -> Status {
    KV_ASSIGN_OR_RETURN(uint32_t v, gguf.GetU32(key));
    if (v > static_cast<uint32_t>(INT32_MAX)) {
      return Status::InvalidArgument("metadata key '" + key + "' too large");
    }
    *out = static_cast<int>(v);
    return Status::OK();
  };
  // Optional keys keep their default when absent, and fail when malformed.
  auto get_opt_int = [&](const std::string& key, int* out) -> Status {
    if (gguf.Find(key) == nullptr) return Status::OK();
    return get_int(key, out);
  };
  KV_RETURN_IF_ERROR(get_int(p + "embedding_length", &c.dim));
  KV_RETURN_IF_ERROR(get_int(p + "block_count", &c.n_layers));
  KV_RETURN_IF_ERROR(get_int(p + "feed_forward_length", &c.ffn_dim));
  KV_RETURN_IF_ERROR(get_int(p + "attention.head_count", &c.n_heads));
  KV_RETURN_IF_ERROR(get_int(p + "context_length", &c.context_length));
  c.n_kv_heads = c.n_heads;
  KV_RETURN_IF_ERROR(get_opt_int(p + "attention.head_count_kv", &c.n_kv_heads));
  if (c.n_heads <= 0) return Bad("attention.head_count is 0");
  c.head_dim = c.dim / c.n_heads;
  KV_RETURN_IF_ERROR(get_opt_int(p + "attention.key_length", &c.head_dim));
  c.rope_dims = c.head_dim;
  KV_RETURN_IF_ERROR(get_opt_int(p + "rope.dimension_count", &c.rope_dims));
  if (gguf.Find(p + "rope.freq_base") != nullptr) {
    KV_ASSIGN_OR_RETURN(c.rope_base, gguf.GetF32(p + "rope.freq_base"));
  }
  KV_RETURN_IF_ERROR(ReadRopeScaling(gguf, p, c.rope_dims, &c.rope_scaling));
  if (gguf.Find(p + "attention.layer_norm_rms_epsilon") != nullptr) {
    KV_ASSIGN_OR_RETURN(c.rms_eps,
                        gguf.GetF32(p + "attention.layer_norm_rms_epsilon"));
  }
  const GgufTensor* embd = gguf.FindTensor("token_embd.weight");
  if (embd == nullptr) {
    return Status::NotFound("tensor 'token_embd.weight' missing");
  }
  if (embd->dims.size() != 2 ||
      embd->dims[1] > static_cast<uint64_t>(kMaxVocab)) {
    return Status::InvalidArgument(
        "tensor 'token_embd.weight' has a bad shape");
  }
  c.vocab_size = static_cast<int>(embd->dims[1]);
  c.tied_output = gguf.FindTensor("output.weight") == nullptr;
  c.qkv_bias = gguf.FindTensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = gguf.FindTensor("blk.0.attn_q_norm.weight") != nullptr;
  if (c.arch == Architecture::kQwen3 && !c.qk_norm) {
    return Status::NotFound(
        "tensor 'blk.0.attn_q_norm.weight' missing "
        "(qwen3 normalises q and k per head)");
  }
  KV_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace kvstash
