#include "engine/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/attention_fast.h"
#include "kernels/kv_format.h"
#include "kernels/matmul_fast.h"
#include "kernels/ops.h"
#include "kernels/ops_fast.h"

namespace kvstash {
namespace {

// Weight types, for arrays indexed by kernels::DType (the last is Q6_K).
constexpr int kWeightTypes = static_cast<int>(kernels::DType::kQ6_K) + 1;

}  // namespace

// Activations of the current batch ([n][width] each) and per-worker scratch.
struct Transformer::Buffers {
  size_t tokens = 0;
  std::vector<float> x;     // residual stream [n][dim]
  std::vector<float> xb;    // normed input [n][dim]
  std::vector<float> q;     // [n][q_dim]
  std::vector<float> k;     // [n][kv_dim]
  std::vector<float> v;     // [n][kv_dim]
  std::vector<float> att;   // attention output [n][q_dim]
  std::vector<float> proj;  // output projections [n][dim]
  std::vector<float> gate;  // [n][ffn_dim]
  std::vector<float> up;    // [n][ffn_dim]
  std::vector<float> rope;  // [n][RopeTableFloats(rope_dims)]
  // Per token of the batch: its id, position and batch entry.
  std::vector<int32_t> token_id;
  std::vector<int> token_pos;
  std::vector<int> token_entry;
  // Tokens whose logits are wanted, in batch order.
  std::vector<size_t> out_tokens;
  // Activations prepared for the matmul kernels, per weight type; 64-byte
  // aligned views into `prepared_storage`.
  std::vector<uint8_t> prepared_storage[kWeightTypes];
  // K/V runs of one (layer, kv head); one vector per worker.
  std::vector<std::vector<kernels::KvRun>> runs;
  // Attend's tiles of tokens: tile i is [tile_begin[i], tile_begin[i + 1]).
  std::vector<size_t> tile_begin;

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
  const void* prepared[kWeightTypes] = {};
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
  const size_t slice =
      std::max<size_t>(16, (total_rows / (workers * 4) + 15) / 16 * 16);
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
      const void* prep = prepared[static_cast<int>(p.w->type)];
      if (p.w->interleaved != nullptr) {
        kernels::MatMulInterleavedRows(p.w->type, p.w->interleaved, p.w->cols,
                                       prep, n, begin, end, p.y, p.w->rows);
      } else {
        kernels::MatMulRows(p.w->type, p.w->data, p.w->cols, x, prep, n, begin,
                            end, p.y, p.w->rows);
      }
      return;
    }
  };
  if (pool_ != nullptr) {
    pool_->ParallelFor(n_tasks, run);
  } else {
    for (size_t t = 0; t < n_tasks; ++t) run(t, 0);
  }
}

// att[t] = causal attention of q[t] over positions [0, pos_t] of its
// sequence. One task per (kv head, tile), a tile being up to
// kAttentionPassRows / group consecutive tokens of one batch entry, which one
// pass of the kernel serves with all their heads of the group: the K/V are
// read once per tile.
void Transformer::Attend(int layer, std::span<const BatchEntry> batch,
                         size_t n) {
  const ModelConfig& c = model_.config();
  const size_t hd = c.head_dim;
  const size_t q_dim = c.q_dim();
  const size_t group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  constexpr size_t kMaxTile = kernels::kAttentionPassRows;
  const size_t tile = std::max<size_t>(1, kMaxTile / group);
  Buffers& b = *buf_;
  // A tile's tokens share their runs: one entry, one read window.
  auto window = [&](size_t t) {
    const int w = batch[b.token_entry[t]].kv->read_window();
    return w == 0 ? 0 : b.token_pos[t] / w;
  };
  b.tile_begin.clear();
  for (size_t t = 0; t < n; ++t) {
    if (b.tile_begin.empty() || t - b.tile_begin.back() == tile ||
        b.token_entry[t] != b.token_entry[b.tile_begin.back()] ||
        window(t) != window(b.tile_begin.back())) {
      b.tile_begin.push_back(t);
    }
  }
  const size_t n_tiles = b.tile_begin.size();
  b.tile_begin.push_back(n);
  auto run = [&](size_t task, size_t worker) {
    const int g = static_cast<int>(task / n_tiles);
    const size_t t0 = b.tile_begin[task % n_tiles];
    const size_t n_tokens = b.tile_begin[task % n_tiles + 1] - t0;
    size_t n_ctx[kMaxTile];
    const KvView& kv = *batch[b.token_entry[t0]].kv;
    for (size_t j = 0; j < n_tokens; ++j) {
      n_ctx[j] = size_t(kv.Rows(layer, g, b.token_pos[t0 + j] + 1));
    }
    const kernels::KvFormat format = kv.format();
    std::vector<kernels::KvRun>& runs = b.runs[worker];
    kv.Read(layer, g, b.token_pos[t0 + n_tokens - 1] + 1, &runs);
    const size_t offset = t0 * q_dim + size_t(g) * group * hd;
    // Rotated keys are met by rotated queries (q is read by attention
    // only); rotated values give rotated outputs, rotated back.
    auto rotate = [&](float* rows) {
      for (size_t j = 0; j < n_tokens; ++j) {
        for (size_t h = 0; h < group; ++h) {
          kernels::KvRotate(rows + j * q_dim + h * hd, hd);
        }
      }
    };
    if (kernels::KvRotated(format.k)) rotate(&b.q[offset]);
    kernels::AttentionFastTokens(&b.q[offset], q_dim, n_tokens, group, hd, runs,
                                 n_ctx, scale, &b.att[offset], q_dim);
    if (kernels::KvRotated(format.v)) rotate(&b.att[offset]);
  };
  const size_t n_tasks = size_t(c.n_kv_heads) * n_tiles;
  if (pool_ != nullptr) {
    pool_->ParallelFor(n_tasks, run);
  } else {
    for (size_t t = 0; t < n_tasks; ++t) run(t, 0);
  }
}

Status Transformer::Forward(std::span<const int32_t> tokens, int pos,
                            KvView& kv, bool all_logits, float* logits,
                            QueryObserver* queries) {
  const BatchEntry entry{tokens, pos, &kv,
                         all_logits ? Logits::kAll : Logits::kLast, queries};
  return Forward(std::span<const BatchEntry>(&entry, 1), logits);
}

Status Transformer::Check(std::span<const BatchEntry> batch) const {
  const int vocab = model_.config().vocab_size;
  if (batch.empty()) return Status::InvalidArgument("forward: empty batch");
  for (size_t e = 0; e < batch.size(); ++e) {
    const BatchEntry& entry = batch[e];
    const size_t n = entry.tokens.size();
    if (n == 0) return Status::InvalidArgument("forward: no tokens");
    if (entry.kv == nullptr) {
      return Status::InvalidArgument("forward: batch entry without a KV view");
    }
    for (size_t other = 0; other < e; ++other) {
      if (batch[other].kv == entry.kv) {
        return Status::InvalidArgument(
            "forward: two batch entries share one KV view");
      }
    }
    const size_t capacity = size_t(entry.kv->capacity());
    if (entry.pos < 0 || n > capacity || size_t(entry.pos) > capacity - n) {
      return Status::OutOfRange(
          "forward: positions [" + std::to_string(entry.pos) + ", " +
          std::to_string(entry.pos + n) + ") exceed the context of " +
          std::to_string(capacity));
    }
    for (int32_t id : entry.tokens) {
      if (id < 0 || id >= vocab) {
        return Status::InvalidArgument(
            "forward: token id " + std::to_string(id) +
            " outside the vocabulary of " + std::to_string(vocab));
      }
    }
  }
  return Status::OK();
}

Status Transformer::Forward(std::span<const BatchEntry> batch, float* logits) {
  KV_RETURN_IF_ERROR(Check(batch));
  const ModelConfig& c = model_.config();
  const ModelWeights& w = model_.weights();
  size_t n = 0;
  for (const BatchEntry& entry : batch) n += entry.tokens.size();
  EnsureScratch(n);
  Buffers& b = *buf_;
  b.token_id.clear();
  b.token_pos.clear();
  b.token_entry.clear();
  b.out_tokens.clear();
  for (size_t e = 0; e < batch.size(); ++e) {
    const BatchEntry& entry = batch[e];
    for (size_t i = 0; i < entry.tokens.size(); ++i) {
      const bool out =
          entry.logits == Logits::kAll ||
          (entry.logits == Logits::kLast && i + 1 == entry.tokens.size());
      if (out) b.out_tokens.push_back(b.token_id.size());
      b.token_id.push_back(entry.tokens[i]);
      b.token_pos.push_back(entry.pos + static_cast<int>(i));
      b.token_entry.push_back(static_cast<int>(e));
    }
  }
  const size_t dim = c.dim, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const size_t ffn = c.ffn_dim;
  const size_t rope_floats = kernels::RopeTableFloats(c.rope_dims);
  const size_t embd_row = kernels::RowBytes(w.token_embedding.type, dim);
  ForRanges(n, [&](size_t lo, size_t hi) {
    for (size_t t = lo; t < hi; ++t) {
      kernels::DequantizeRow(
          w.token_embedding.type,
          static_cast<const uint8_t*>(w.token_embedding.data) +
              size_t(b.token_id[t]) * embd_row,
          dim, &b.x[t * dim]);
      kernels::FillRopeTable(c.rope_dims, b.token_pos[t], c.rope_base,
                             c.rope_style, &b.rope[t * rope_floats],
                             c.rope_scaling);
    }
  });

  for (const BatchEntry& entry : batch) {
    const int end = entry.pos + int(entry.tokens.size());
    entry.kv->BeginWrite(entry.pos, end);
    if (entry.queries != nullptr) entry.queries->BeginPass(entry.pos, end);
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    ForRanges(n, [&](size_t lo, size_t hi) {
      for (size_t t = lo; t < hi; ++t) {
        kernels::RmsNormFast(&b.x[t * dim], lw.attn_norm, dim, c.rms_eps,
                             &b.xb[t * dim]);
      }
    });
    const Product qkv[] = {
        {&lw.wq, b.q.data()}, {&lw.wk, b.k.data()}, {&lw.wv, b.v.data()}};
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
        if (c.qk_norm) {
          const size_t hd = c.head_dim;
          for (int h = 0; h < c.n_heads; ++h) {
            kernels::RmsNormFast(q + h * hd, lw.q_norm, hd, c.rms_eps,
                                 q + h * hd);
          }
          for (int h = 0; h < c.n_kv_heads; ++h) {
            kernels::RmsNormFast(k + h * hd, lw.k_norm, hd, c.rms_eps,
                                 k + h * hd);
          }
        }
        const float* table = &b.rope[t * rope_floats];
        kernels::RopeFast(q, c.n_heads, c.head_dim, c.rope_dims, c.rope_style,
                          table);
        kernels::RopeFast(k, c.n_kv_heads, c.head_dim, c.rope_dims,
                          c.rope_style, table);
        const BatchEntry& entry = batch[b.token_entry[t]];
        entry.kv->Write(l, b.token_pos[t], k, v);
        if (entry.queries != nullptr) {
          entry.queries->Observe(l, b.token_pos[t], q);
        }
      }
    });
    for (const BatchEntry& entry : batch) {
      entry.kv->Seal(l, entry.pos, entry.pos + int(entry.tokens.size()));
    }
    Attend(l, batch, n);
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

  const size_t n_out = b.out_tokens.size();
  if (n_out == 0) return Status::OK();
  ForRanges(n_out, [&](size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; ++i) {
      kernels::RmsNormFast(&b.x[b.out_tokens[i] * dim], w.output_norm, dim,
                           c.rms_eps, &b.xb[i * dim]);
    }
  });
  const Product head[] = {{&w.output, logits}};
  Project(b.xb.data(), n_out, head);
  return Status::OK();
}

}  // namespace kvstash
