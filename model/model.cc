#include "model/model.h"

#include <cstring>
#include <vector>

#include "kernels/matmul_fast.h"
#include "model/gguf.h"
#include "model/llama2c.h"

namespace kvstash {
using kernels::DType;

Model::~Model() = default;

Result<std::unique_ptr<Model>> Model::Load(const std::string& path,
                                           const std::string& tokenizer_path,
                                           FileMemory memory,
                                           WeightLayout layout) {
  std::unique_ptr<Model> model(new Model());
  KV_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file,
                      MappedFile::Open(path, memory));
  model->file_bytes_ = file->size();
  uint32_t magic = 0;
  if (file->size() >= sizeof(magic)) {
    std::memcpy(&magic, file->data(), sizeof(magic));
  }
  if (magic == kGgufMagic) {
    model->format_ = ModelFormat::kGguf;
    Result<std::unique_ptr<GgufFile>> gguf =
        GgufFile::Parse(file->data(), file->size());
    if (!gguf.ok()) return gguf.status().WithPrefix("gguf '" + path + "'");
    model->gguf_ = std::move(gguf).value();
    model->raw_file_ = std::move(file);
    KV_RETURN_IF_ERROR(model->BindGguf(*model->gguf_).WithPrefix(path));
    KV_ASSIGN_OR_RETURN(model->tokenizer_, Tokenizer::FromGguf(*model->gguf_));
    if (model->gguf_->Find("general.file_type") != nullptr) {
      KV_ASSIGN_OR_RETURN(model->file_type_,
                          model->gguf_->GetU32("general.file_type"));
    }
    if (model->gguf_->Find("tokenizer.chat_template") != nullptr) {
      KV_ASSIGN_OR_RETURN(std::string_view tmpl,
                          model->gguf_->GetString("tokenizer.chat_template"));
      model->chat_template_ = std::string(tmpl);
    }
  } else {
    model->format_ = ModelFormat::kLlama2c;
    if (tokenizer_path.empty()) {
      return Status::InvalidArgument(
          "'" + path +
          "' is not a GGUF file; a llama2.c checkpoint needs --tokenizer "
          "(its tokenizer.bin)");
    }
    model->raw_file_ = std::move(file);
    KV_RETURN_IF_ERROR(
        model->BindLlama2c(model->raw_file_->bytes()).WithPrefix(path));
    KV_ASSIGN_OR_RETURN(
        model->tokenizer_,
        Tokenizer::FromLlama2c(tokenizer_path, model->config_.vocab_size));
  }
  if (model->tokenizer_->vocab_size() != model->config_.vocab_size) {
    return Status::InvalidArgument(
        path + ": tokenizer has " +
        std::to_string(model->tokenizer_->vocab_size()) +
        " tokens but the model's embedding has " +
        std::to_string(model->config_.vocab_size));
  }
  if (layout == WeightLayout::kFastest) {
    KV_RETURN_IF_ERROR(model->InterleaveWeights().WithPrefix(path));
  }
  return model;
}

Hash128 Model::identity() const {
  std::call_once(identity_once_,
                 [&] { identity_ = HashBytes(raw_file_->bytes()); });
  return identity_;
}

Status Model::InterleaveWeights() {
  std::vector<WeightMatrix*> matrices;
  const auto consider = [&](WeightMatrix& m) {
    if (kernels::UsesInterleavedRows(m.type) &&
        m.rows % kernels::kInterleavedRows == 0 &&
        m.cols % kernels::kSuperBlock == 0) {
      matrices.push_back(&m);
    }
  };
  for (LayerWeights& lw : weights_.layers) {
    for (WeightMatrix* m :
         {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down}) {
      consider(*m);
    }
  }
  // A tied output matrix is the token embedding, which is read row by row.
  if (weights_.output.data != weights_.token_embedding.data) {
    consider(weights_.output);
  }
  if (matrices.empty()) return Status::OK();
  // The identity names the file as stored: hash it before its pages go.
  identity();
  // Tiles are whole cache lines, so each matrix starts 64-byte aligned.
  const auto bytes_of = [](const WeightMatrix& m) {
    return kernels::InterleavedBytes(m.type, m.rows, m.cols);
  };
  size_t total = 0;
  for (const WeightMatrix* m : matrices) total += bytes_of(*m);
  KV_ASSIGN_OR_RETURN(interleaved_, HugePages::Map(total));
  uint8_t* out = interleaved_->data();
  for (WeightMatrix* m : matrices) {
    kernels::InterleaveRows(m->type, m->data, m->rows, m->cols, out);
    raw_file_->Release(static_cast<const uint8_t*>(m->data) - raw_file_->data(),
                       m->rows * kernels::RowBytes(m->type, m->cols));
    m->data = nullptr;
    m->interleaved = out;
    out += bytes_of(*m);
  }
  interleaved_bytes_ = total;
  return interleaved_->MakeReadOnly();
}

const float* Model::AsF32(DType type, const void* src, size_t n) {
  if (type == DType::kF32) return static_cast<const float*>(src);
  auto copy = std::make_unique<float[]>(n);
  kernels::DequantizeRow(type, src, n, copy.get());
  converted_.push_back(std::move(copy));
  return converted_.back().get();
}

Status Model::BindGguf(const GgufFile& gguf) {
  KV_ASSIGN_OR_RETURN(config_, ModelConfigFromGguf(gguf));
  for (const GgufTensor& t : gguf.tensors()) {
    tensors_.push_back({t.name, t.type, t.dims, t.n_bytes});
  }
  const ModelConfig& c = config_;
  // Finds tensor `name` and checks it has exactly `dims` (ne0 first).
  auto find = [&](const std::string& name, std::vector<uint64_t> dims,
                  const GgufTensor** out) -> Status {
    const GgufTensor* t = gguf.FindTensor(name);
    if (t == nullptr) return Status::NotFound("tensor '" + name + "' missing");
    if (t->dims != dims) {
      std::string want, got;
      for (uint64_t d : dims) (want += ' ') += std::to_string(d);
      for (uint64_t d : t->dims) (got += ' ') += std::to_string(d);
      return Status::InvalidArgument("tensor '" + name + "' has shape [" + got +
                                     " ], expected [" + want + " ]");
    }
    *out = t;
    return Status::OK();
  };
  auto matrix = [&](const std::string& name, int rows, int cols,
                    WeightMatrix* m) -> Status {
    const GgufTensor* t;
    KV_RETURN_IF_ERROR(find(name, {uint64_t(cols), uint64_t(rows)}, &t));
    *m = {t->type, t->data, rows, cols};
    return Status::OK();
  };
  auto vec = [&](const std::string& name, int n, const float** out) -> Status {
    const GgufTensor* t;
    KV_RETURN_IF_ERROR(find(name, {uint64_t(n)}, &t));
    *out = AsF32(t->type, t->data, n);
    return Status::OK();
  };

  ModelWeights& w = weights_;
  KV_RETURN_IF_ERROR(
      matrix("token_embd.weight", c.vocab_size, c.dim, &w.token_embedding));
  KV_RETURN_IF_ERROR(vec("output_norm.weight", c.dim, &w.output_norm));
  if (c.tied_output) {
    w.output = w.token_embedding;
  } else {
    KV_RETURN_IF_ERROR(matrix("output.weight", c.vocab_size, c.dim, &w.output));
  }
  w.layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& lw = w.layers[l];
    const std::string p = "blk." + std::to_string(l) + ".";
    KV_RETURN_IF_ERROR(vec(p + "attn_norm.weight", c.dim, &lw.attn_norm));
    KV_RETURN_IF_ERROR(matrix(p + "attn_q.weight", c.q_dim(), c.dim, &lw.wq));
    KV_RETURN_IF_ERROR(matrix(p + "attn_k.weight", c.kv_dim(), c.dim, &lw.wk));
    KV_RETURN_IF_ERROR(matrix(p + "attn_v.weight", c.kv_dim(), c.dim, &lw.wv));
    KV_RETURN_IF_ERROR(
        matrix(p + "attn_output.weight", c.dim, c.q_dim(), &lw.wo));
    if (c.qkv_bias) {
      KV_RETURN_IF_ERROR(vec(p + "attn_q.bias", c.q_dim(), &lw.bq));
      KV_RETURN_IF_ERROR(vec(p + "attn_k.bias", c.kv_dim(), &lw.bk));
      KV_RETURN_IF_ERROR(vec(p + "attn_v.bias", c.kv_dim(), &lw.bv));
    }
    if (c.qk_norm) {
      KV_RETURN_IF_ERROR(vec(p + "attn_q_norm.weight", c.head_dim, &lw.q_norm));
      KV_RETURN_IF_ERROR(vec(p + "attn_k_norm.weight", c.head_dim, &lw.k_norm));
    }
    KV_RETURN_IF_ERROR(vec(p + "ffn_norm.weight", c.dim, &lw.ffn_norm));
    KV_RETURN_IF_ERROR(
        matrix(p + "ffn_gate.weight", c.ffn_dim, c.dim, &lw.w_gate));
    KV_RETURN_IF_ERROR(matrix(p + "ffn_up.weight", c.ffn_dim, c.dim, &lw.w_up));
    KV_RETURN_IF_ERROR(
        matrix(p + "ffn_down.weight", c.dim, c.ffn_dim, &lw.w_down));
  }
  return Status::OK();
}

Status Model::BindLlama2c(std::span<const uint8_t> data) {
  Llama2cWeights l2;
  KV_RETURN_IF_ERROR(ParseLlama2c(data, &config_, &l2));
  const ModelConfig& c = config_;
  const size_t dim = c.dim, q = c.q_dim(), kv = c.kv_dim(), ffn = c.ffn_dim;
  auto f32 = [](const float* p, int rows, int cols) {
    return WeightMatrix{DType::kF32, p, rows, cols};
  };
  // The checkpoint's arrays, named as in llama2.c, for `kvstash info`.
  const uint64_t L = c.n_layers, V = c.vocab_size;
  auto add = [this](const char* name, std::vector<uint64_t> dims) {
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    tensors_.push_back({name, DType::kF32, std::move(dims), n * 4});
  };
  add("token_embedding", {dim, V});
  add("rms_att", {dim, L});
  add("wq", {dim, q, L});
  add("wk", {dim, kv, L});
  add("wv", {dim, kv, L});
  add("wo", {q, dim, L});
  add("rms_ffn", {dim, L});
  add("w1", {dim, ffn, L});
  add("w2", {ffn, dim, L});
  add("w3", {dim, ffn, L});
  add("rms_final", {dim});
  if (!c.tied_output) add("wcls", {dim, V});

  ModelWeights& w = weights_;
  w.token_embedding = f32(l2.token_embedding, c.vocab_size, c.dim);
  w.output = f32(l2.wcls, c.vocab_size, c.dim);
  w.output_norm = l2.rms_final;
  w.layers.resize(c.n_layers);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    LayerWeights& lw = w.layers[l];
    lw.attn_norm = l2.rms_att + l * dim;
    lw.wq = f32(l2.wq + l * q * dim, c.q_dim(), c.dim);
    lw.wk = f32(l2.wk + l * kv * dim, c.kv_dim(), c.dim);
    lw.wv = f32(l2.wv + l * kv * dim, c.kv_dim(), c.dim);
    lw.wo = f32(l2.wo + l * dim * q, c.dim, c.q_dim());
    lw.ffn_norm = l2.rms_ffn + l * dim;
    lw.w_gate = f32(l2.w1 + l * ffn * dim, c.ffn_dim, c.dim);
    lw.w_down = f32(l2.w2 + l * dim * ffn, c.dim, c.ffn_dim);
    lw.w_up = f32(l2.w3 + l * ffn * dim, c.ffn_dim, c.dim);
  }
  return Status::OK();
}

}  // namespace kvstash
