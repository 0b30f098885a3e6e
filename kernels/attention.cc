#include "kernels/attention.h"

#include <algorithm>
#include <cstdint>

#include "base/check.h"
#include "kernels/dtype_internal.h"
#include "kernels/ops.h"

namespace kvstash::kernels {
namespace {

// Calls fn(begin, x, count) for consecutive chunks [begin, begin + count) of
// the `n` elements of `row` (type `t`), decoded to f32 in x ([count]).
template <typename Fn>
void ForEachDecodedChunk(DType t, const void* row, size_t n, Fn fn) {
  constexpr size_t kChunk = 64;
  float x[kChunk];
  for (size_t begin = 0; begin < n; begin += kChunk) {
    const size_t count = std::min(kChunk, n - begin);
    internal::DecodeElems(t, row, begin, count, x);
    fn(begin, x, count);
  }
}

// dot(a, x) where x is `row` ([n] of type t) decoded to f32, summed in order.
float DotRow(const float* a, DType t, const void* row, size_t n) {
  float sum = 0.0f;
  ForEachDecodedChunk(t, row, n,
                      [&](size_t begin, const float* x, size_t count) {
                        for (size_t i = 0; i < count; ++i) {
                          sum += a[begin + i] * x[i];
                        }
                      });
  return sum;
}

// y[i] += a * x[i] where x is `row` ([n] of type t) decoded to f32.
void AddScaledRow(float a, DType t, const void* row, size_t n, float* y) {
  ForEachDecodedChunk(t, row, n,
                      [&](size_t begin, const float* x, size_t count) {
                        for (size_t i = 0; i < count; ++i) {
                          y[begin + i] += a * x[i];
                        }
                      });
}

// Calls fn(t, k_t, v_t) for positions t = 0 .. n_ctx-1 in order, walking the
// runs; k_t and v_t point to rows of `row_bytes`. REQUIRES: the runs hold at
// least n_ctx tokens.
template <typename Fn>
void ForEachPosition(std::span<const KvRun> runs, size_t row_bytes,
                     size_t n_ctx, Fn fn) {
  size_t t = 0;
  for (const KvRun& run : runs) {
    const auto* k = static_cast<const uint8_t*>(run.k);
    const auto* v = static_cast<const uint8_t*>(run.v);
    for (size_t i = 0; i < run.n_tokens; ++i, ++t) {
      if (t == n_ctx) return;
      fn(t, k + i * row_bytes, v + i * row_bytes);
    }
  }
}

}  // namespace

void Attention(const float* q, size_t n_q, size_t head_dim, DType kv_type,
               std::span<const KvRun> runs, size_t n_ctx, float scale,
               float* scores, float* out) {
  KV_CHECK(IsAttentionKvType(kv_type));
  size_t total = 0;
  for (const KvRun& run : runs) total += run.n_tokens;
  KV_CHECK(n_ctx > 0 && n_ctx <= total);
  const size_t row_bytes = RowBytes(kv_type, head_dim);
  for (size_t h = 0; h < n_q; ++h) {
    const float* qh = q + h * head_dim;
    float* oh = out + h * head_dim;
    ForEachPosition(runs, row_bytes, n_ctx,
                    [&](size_t t, const void* k, const void* /*v*/) {
                      scores[t] = DotRow(qh, kv_type, k, head_dim) * scale;
                    });
    Softmax(scores, n_ctx);
    std::fill(oh, oh + head_dim, 0.0f);
    ForEachPosition(runs, row_bytes, n_ctx,
                    [&](size_t t, const void* /*k*/, const void* v) {
                      AddScaledRow(scores[t], kv_type, v, head_dim, oh);
                    });
  }
}

}  // namespace kvstash::kernels
