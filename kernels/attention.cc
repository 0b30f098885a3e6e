#include "kernels/attention.h"

#include <algorithm>
#include <cstdint>

#include "base/check.h"
#include "kernels/ops.h"

namespace kvstash::kernels {
namespace {

// Calls fn(t, k_t, v_t) for positions t = 0 .. n_ctx-1 in order, with the
// rows decoded to f32. REQUIRES: the runs hold at least n_ctx tokens.
template <typename Fn>
void ForEachPosition(std::span<const KvRun> runs, size_t head_dim, size_t n_ctx,
                     Fn fn) {
  float k[512], v[512];
  size_t t = 0;
  for (const KvRun& run : runs) {
    for (size_t i = 0; i < run.n_tokens; ++i, ++t) {
      if (t == n_ctx) return;
      KvDecodeRow(run.k_type, KvSide::kK, static_cast<const uint8_t*>(run.k), i,
                  head_dim, k);
      KvDecodeRow(run.v_type, KvSide::kV, static_cast<const uint8_t*>(run.v), i,
                  head_dim, v);
      fn(t, k, v);
    }
  }
}

}  // namespace

void Attention(const float* q, size_t n_q, size_t head_dim,
               std::span<const KvRun> runs, size_t n_ctx, float scale,
               float* scores, float* out) {
  KV_CHECK(head_dim <= 512);
  size_t total = 0;
  for (const KvRun& run : runs) total += run.n_tokens;
  KV_CHECK(n_ctx > 0 && n_ctx <= total);
  for (size_t h = 0; h < n_q; ++h) {
    const float* qh = q + h * head_dim;
    float* oh = out + h * head_dim;
    ForEachPosition(runs, head_dim, n_ctx,
                    [&](size_t t, const float* k, const float* /*v*/) {
                      float dot = 0.0f;
                      for (size_t i = 0; i < head_dim; ++i) dot += qh[i] * k[i];
                      scores[t] = dot * scale;
                    });
    Softmax(scores, n_ctx);
    std::fill(oh, oh + head_dim, 0.0f);
    ForEachPosition(runs, head_dim, n_ctx,
                    [&](size_t t, const float* /*k*/, const float* v) {
                      for (size_t i = 0; i < head_dim; ++i) {
                        oh[i] += scores[t] * v[i];
                      }
                    });
  }
}

}  // namespace kvstash::kernels
