#include "engine/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/attention_fast.h"
#include "kernels/matmul_fast.h"
#include "kernels/ops.h"
#include "kernels/ops_fast.h"

namespace kvstash {

// Activations of the current batch ([n][width] each) and per-worker scratch.
struct Transformer::Buffers {
  size_t tokens = 0;
  std::vector<float> x;       // residual stream [n][dim]
  std::vector<float> xb;      // normed input [n][dim]
  std::vector<float> q;       // [n][q_dim]
  std::vector<float> k;       // [n][kv_dim]
  std::vector<float> v;       // [n][kv_dim]
  std::vector<float> att;     // attention output [n][q_dim]
  std::vector<float> proj;    // output projections [n][dim]
  std::vector<float> gate;    // [n][ffn_dim]
  std::vector<float> up;      // [n][ffn_dim]
  std::vector<float> rope;    // [n][RopeTableFloats(rope_dims)]
  // Activations prepared for the matmul kernels, per weight type; 64-byte
  // aligned views into `prepared_storage`.
  std::vector<uint8_t> prepared_storage[5];
  // K/V runs of one (layer, kv head); one vector per worker.
  std::vector<std::vector<kernels::KvRun>> runs;

  void* Prepared(kernels::DType t, size_t bytes) {
    std::vector<uint8_t>& s = prepared_storage[static_cast<int>(t)];
    if (s.size() < bytes + 64) s.resize(bytes + 64);
    const uintptr_t p = reinterpret_cast<uintptr_t>(s.data());
    return reinterpret_cast<void*>((p + 63) & ~uintptr_t{63});
  }
};

Transformer::Transformer(const Model& model, ThreadPool* pool)
    : model_(model), pool_(pool), buf_(std::make_unique<Buffers>()) {
  buf_->runs.resize(pool_ != nullptr ? pool_->NumWorkers() : 1);
}

Transformer::~Transformer() = default;

void Transformer::EnsureScratch(size_t n) {
  if (n <= buf_->tokens) return;
  const ModelConfig& c = model_.config();
  Buffers& b = *buf_;
  b.x.resize(n * c.dim);
  b.xb.resize(n * c.dim);
  b.q.resize(n * c.q_dim());
  b.k.resize(n * c.kv_dim());
  b.v.resize(n * c.kv_dim());
  b.att.resize(n * c.q_dim());
  b.proj.resize(n * c.dim);
  b.gate.resize(n * c.ffn_dim);
  b.up.resize(n * c.ffn_dim);
  b.rope.resize(n * kernels::RopeTableFloats(c.rope_dims));
  b.tokens = n;
}

template <typename Fn>
void Transformer::ForRanges(size_t n, const Fn& fn) {
  if (pool_ == nullptr || n < 2) {
    fn(size_t{0}, n);
    return;
  }
  const size_t parts = std::min(n, pool_->NumWorkers());
  pool_->ParallelFor(parts, [&](size_t part, size_t) {
    fn(n * part / parts, n * (part + 1) / parts);
  });
}

void Transformer::Project(const float* x, size_t n,
                          std::span<const Product> products) {
  // Prepare the activations once per weight type.
  const void* prepared[5] = {};
  for (const Product& p : products) {
    const int t = static_cast<int>(p.w->type);
    if (prepared[t] != nullptr) continue;
    void* buf = buf_->Prepared(
        p.w->type, kernels::PreparedActivationBytes(p.w->type, p.w->cols, n));
    kernels::PrepareActivations(p.w->type, x, p.w->cols, n, buf);
    prepared[t] = buf;
  }
  // Tasks: slices of rows of every product, about 4 per worker, in multiples
  // of 16 rows.
  const size_t workers = pool_ != nullptr ? pool_->NumWorkers() : 1;
  size_t total_rows = 0;
  for (const Product& p : products) total_rows += p.w->rows;
  const size_t slice = std::max<size_t>(
      16, (total_rows / (workers * 4) + 15) / 16 * 16);
  size_t n_tasks = 0;
  for (const Product& p : products) n_tasks += (p.w->rows + slice - 1) / slice;
  auto run = [&](size_t task, size_t) {
    for (const Product& p : products) {
      const size_t slices = (p.w->rows + slice - 1) / slice;
      if (task >= slices) {
        task -= slices;
        continue;
      }
      const size_t begin = task * slice;
      const size_t end = std::min<size_t>(p.w->rows, begin + slice);
      kernels::MatMulRows(p.w->type, p.w->data, p.w->cols, x,
                          prepared[static_cast<int>(p.w->type)], n, begin, end,
                          p.y, p.w->rows);
      return;
    }
  };
  if (pool_ != nullptr) {
    pool_->ParallelFor(n_tasks, run);
  } else {
    for (size_t t = 0; t < n_tasks; ++t) run(t, 0);
  }
}

// att[t] = causal attention of q[t] over positions [0, pos + t], one task
// per (kv head, token).
void Transformer::Attend(int layer, size_t n, int pos, const KvView& kv) {
  const ModelConfig& c = model_.config();
  const size_t hd = c.head_dim;
  const size_t group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int n_ctx_max = pos + static_cast<int>(n);
  Buffers& b = *buf_;
  auto run = [&](size_t task, size_t worker) {
    const int g = static_cast<int>(task / n);
    const size_t t = task % n;
    std::vector<kernels::KvRun>& runs = b.runs[worker];
    kv.Read(layer, g, n_ctx_max, &runs);
    const size_t head0 = size_t(g) * group;
    kernels::AttentionFast(&b.q[t * c.q_dim() + head0 * hd], group, hd,
                           kv.kv_type(), runs, pos + t + 1, scale,
                           &b.att[t * c.q_dim() + head0 * hd]);
  };
  const size_t n_tasks = size_t(c.n_kv_heads) * n;
  if (pool_ != nullptr) {
    pool_->ParallelFor(n_tasks, run);
  } else {
    for (size_t t = 0; t < n_tasks; ++t) run(t, 0);
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
  Buffers& b = *buf_;
  const size_t dim = c.dim, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const size_t ffn = c.ffn_dim;
  const size_t rope_floats = kernels::RopeTableFloats(c.rope_dims);
  const size_t embd_row = kernels::RowBytes(w.token_embedding.type, dim);
  ForRanges(n, [&](size_t lo, size_t hi) {
    for (size_t t = lo; t < hi; ++t) {
      kernels::DequantizeRow(
          w.token_embedding.type,
          static_cast<const uint8_t*>(w.token_embedding.data) +
              size_t(tokens[t]) * embd_row,
          dim, &b.x[t * dim]);
      kernels::FillRopeTable(c.rope_dims, pos + static_cast<int>(t),
                             c.rope_base, c.rope_style,
                             &b.rope[t * rope_floats]);
    }
  });

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    ForRanges(n, [&](size_t lo, size_t hi) {
      for (size_t t = lo; t < hi; ++t) {
        kernels::RmsNormFast(&b.x[t * dim], lw.attn_norm, dim, c.rms_eps,
                             &b.xb[t * dim]);
      }
    });
    const Product qkv[] = {{&lw.wq, b.q.data()},
                           {&lw.wk, b.k.data()},
                           {&lw.wv, b.v.data()}};
    Project(b.xb.data(), n, qkv);
    ForRanges(n, [&](size_t lo, size_t hi) {
      for (size_t t = lo; t < hi; ++t) {
        float* q = &b.q[t * q_dim];
        float* k = &b.k[t * kv_dim];
        float* v = &b.v[t * kv_dim];
        if (c.qkv_bias) {
          kernels::AddInPlace(q, lw.bq, q_dim);
          kernels::AddInPlace(k, lw.bk, kv_dim);
          kernels::AddInPlace(v, lw.bv, kv_dim);
        }
        const float* table = &b.rope[t * rope_floats];
        kernels::RopeFast(q, c.n_heads, c.head_dim, c.rope_dims, c.rope_style,
                          table);
        kernels::RopeFast(k, c.n_kv_heads, c.head_dim, c.rope_dims,
                          c.rope_style, table);
        kv.Write(l, pos + static_cast<int>(t), k, v);
      }
    });
    Attend(l, n, pos, kv);
    const Product out[] = {{&lw.wo, b.proj.data()}};
    Project(b.att.data(), n, out);
    ForRanges(n, [&](size_t lo, size_t hi) {
      kernels::AddInPlace(&b.x[lo * dim], &b.proj[lo * dim], (hi - lo) * dim);
      for (size_t t = lo; t < hi; ++t) {
        kernels::RmsNormFast(&b.x[t * dim], lw.ffn_norm, dim, c.rms_eps,
                             &b.xb[t * dim]);
      }
    });
    const Product gate_up[] = {{&lw.w_gate, b.gate.data()},
                               {&lw.w_up, b.up.data()}};
    Project(b.xb.data(), n, gate_up);
    ForRanges(n, [&](size_t lo, size_t hi) {
      kernels::SiluMulFast(&b.gate[lo * ffn], &b.up[lo * ffn], (hi - lo) * ffn);
    });
    const Product down[] = {{&lw.w_down, b.proj.data()}};
    Project(b.gate.data(), n, down);
    ForRanges(n, [&](size_t lo, size_t hi) {
      kernels::AddInPlace(&b.x[lo * dim], &b.proj[lo * dim], (hi - lo) * dim);
    });
  }

  const size_t first = all_logits ? 0 : n - 1;
  const size_t n_out = n - first;
  for (size_t t = first; t < n; ++t) {
    kernels::RmsNormFast(&b.x[t * dim], w.output_norm, dim, c.rms_eps,
                         &b.xb[(t - first) * dim]);
  }
  const Product head[] = {{&w.output, logits}};
  Project(b.xb.data(), n_out, head);
  return Status::OK();
}

}  // namespace kvstash
