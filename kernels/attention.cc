#include "kernels/attention.h"

#include <algorithm>

#include "base/check.h"
#include "kernels/ops.h"

namespace kvstash::kernels {
namespace {

float Dot(const float* a, const float* b, size_t n) {
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Calls fn(t, k_t, v_t) for positions t = 0 .. n_ctx-1 in order, walking the
// runs. REQUIRES: the runs hold at least n_ctx tokens.
template <typename Fn>
void ForEachPosition(std::span<const KvRun> runs, size_t head_dim, size_t n_ctx,
                     Fn fn) {
  size_t t = 0;
  for (const KvRun& run : runs) {
    for (size_t i = 0; i < run.n_tokens; ++i, ++t) {
      if (t == n_ctx) return;
      fn(t, run.k + i * head_dim, run.v + i * head_dim);
    }
  }
}

}  // namespace

void Attention(const float* q, size_t n_q, size_t head_dim,
               std::span<const KvRun> runs, size_t n_ctx, float scale,
               float* scores, float* out) {
  size_t total = 0;
  for (const KvRun& run : runs) total += run.n_tokens;
  KV_CHECK(n_ctx > 0 && n_ctx <= total);
  for (size_t h = 0; h < n_q; ++h) {
    const float* qh = q + h * head_dim;
    float* oh = out + h * head_dim;
    ForEachPosition(runs, head_dim, n_ctx,
                    [&](size_t t, const float* k, const float* /*v*/) {
                      scores[t] = Dot(qh, k, head_dim) * scale;
                    });
    Softmax(scores, n_ctx);
    std::fill(oh, oh + head_dim, 0.0f);
    ForEachPosition(runs, head_dim, n_ctx,
                    [&](size_t t, const float* /*k*/, const float* v) {
                      const float a = scores[t];
                      for (size_t i = 0; i < head_dim; ++i) oh[i] += a * v[i];
                    });
  }
}

}  // namespace kvstash::kernels
