#include "model/random_model.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "model/gguf.h"
#include "model/gguf_export.h"
#include "model/gguf_writer.h"
#include "model/model_config.h"

namespace kvstash {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// FNV-1a of a tensor name: each tensor gets its own random stream.
uint64_t NameHash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// Rows of N(0, std) values; row r of a tensor depends only on (seed, name, r).
GgufWriter::RowSource NormalRows(uint64_t seed, const std::string& name,
                                 size_t row_elems, float std_dev) {
  const uint64_t tensor_seed = seed ^ NameHash(name);
  return [=](size_t begin, size_t end, float* out) {
    for (size_t r = begin; r < end; ++r) {
      uint64_t state = tensor_seed + r * 0x632be59bd9b4e019ULL;
      float* row = out + (r - begin) * row_elems;
      // Box-Muller: two normals from two uniforms in (0, 1].
      for (size_t i = 0; i < row_elems; i += 2) {
        const uint64_t bits = SplitMix64(&state);
        const float u1 = ((bits >> 40) + 1) * (1.0f / 16777216.0f);
        const float u2 = ((bits & 0xFFFFFF) + 1) * (1.0f / 16777216.0f);
        const float radius = std_dev * std::sqrt(-2.0f * std::log(u1));
        const float angle = 6.28318530718f * u2;
        row[i] = radius * std::cos(angle);
        if (i + 1 < row_elems) row[i + 1] = radius * std::sin(angle);
      }
    }
  };
}

GgufWriter::RowSource OnesRows(size_t row_elems) {
  return [row_elems](size_t begin, size_t end, float* out) {
    std::fill(out, out + (end - begin) * row_elems, 1.0f);
  };
}

}  // namespace

Status ApplyRandomModelPreset(const std::string& preset,
                              RandomModelOptions* o) {
  if (preset == "110m") {
    o->dim = 768;
    o->n_layers = 12;
    o->n_heads = 12;
    o->n_kv_heads = 4;
    o->ffn_dim = 2048;
    o->rope_base = 10000.0f;
    o->tied_output = true;
  } else if (preset == "1b") {
    o->dim = 2048;
    o->n_layers = 16;
    o->n_heads = 32;
    o->n_kv_heads = 8;
    o->ffn_dim = 8192;
    o->rope_base = 500000.0f;
    o->tied_output = false;
  } else {
    return Status::InvalidArgument("unknown preset '" + preset +
                                   "' (known: 110m, 1b)");
  }
  return Status::OK();
}

Status WriteRandomModel(const RandomModelOptions& o, const std::string& path,
                        ThreadPool* pool,
                        std::vector<WeightFallback>* fallbacks) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> vocab,
                      GgufFile::Open(o.vocab_path));
  KV_ASSIGN_OR_RETURN(std::vector<std::string_view> tokens,
                      vocab->GetStringArray("tokenizer.ggml.tokens"));

  ModelConfig c;
  c.dim = o.dim;
  c.n_layers = o.n_layers;
  c.n_heads = o.n_heads;
  c.n_kv_heads = o.n_kv_heads;
  c.head_dim = o.n_heads > 0 ? o.dim / o.n_heads : 0;
  c.ffn_dim = o.ffn_dim;
  c.vocab_size = static_cast<int>(tokens.size());
  c.context_length = o.context_length;
  c.rope_dims = c.head_dim;
  c.rope_base = o.rope_base;
  if (o.n_heads <= 0 || o.dim % o.n_heads != 0) {
    return Status::InvalidArgument("dim " + std::to_string(o.dim) +
                                   " is not a multiple of n_heads " +
                                   std::to_string(o.n_heads));
  }
  KV_RETURN_IF_ERROR(c.Validate());
  if (!(o.weight_std > 0.0f)) {
    return Status::InvalidArgument("weight std must be positive");
  }

  GgufWriter w;
  WriteConfigMetadata(c, "kvstash random model", &w);
  w.SetU32("general.file_type", o.type.GgufFileType());
  for (const auto& [key, value] : vocab->metadata()) {
    if (key.rfind("tokenizer.", 0) == 0) w.CopyValue(key, value);
  }

  auto matrix = [&](const std::string& name, int rows, int cols) {
    const WeightMix::Choice t =
        o.type.TypeOf(name, c.n_layers, o.tied_output, uint64_t(cols));
    if (t.fallback() && fallbacks != nullptr) {
      fallbacks->push_back({name, t.wanted, t.type});
    }
    return w.AddTensor(name, {uint64_t(cols), uint64_t(rows)}, t.type,
                       NormalRows(o.seed, name, cols, o.weight_std));
  };
  auto norm = [&](const std::string& name) {
    return w.AddTensor(name, {uint64_t(c.dim)}, kernels::DType::kF32,
                       OnesRows(c.dim));
  };
  KV_RETURN_IF_ERROR(matrix("token_embd.weight", c.vocab_size, c.dim));
  KV_RETURN_IF_ERROR(norm("output_norm.weight"));
  if (!o.tied_output) {
    KV_RETURN_IF_ERROR(matrix("output.weight", c.vocab_size, c.dim));
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    KV_RETURN_IF_ERROR(norm(b + "attn_norm.weight"));
    KV_RETURN_IF_ERROR(matrix(b + "attn_q.weight", c.q_dim(), c.dim));
    KV_RETURN_IF_ERROR(matrix(b + "attn_k.weight", c.kv_dim(), c.dim));
    KV_RETURN_IF_ERROR(matrix(b + "attn_v.weight", c.kv_dim(), c.dim));
    KV_RETURN_IF_ERROR(matrix(b + "attn_output.weight", c.dim, c.q_dim()));
    KV_RETURN_IF_ERROR(norm(b + "ffn_norm.weight"));
    KV_RETURN_IF_ERROR(matrix(b + "ffn_gate.weight", c.ffn_dim, c.dim));
    KV_RETURN_IF_ERROR(matrix(b + "ffn_up.weight", c.ffn_dim, c.dim));
    KV_RETURN_IF_ERROR(matrix(b + "ffn_down.weight", c.dim, c.ffn_dim));
  }
  return w.Write(path, pool);
}

}  // namespace kvstash
