#include "kernels/matmul.h"

#include <algorithm>
#include <cstdint>

#include "base/check.h"
#include "kernels/dtype_internal.h"

namespace kvstash::kernels {
namespace {

// Tokens that share one decoded chunk of a weight row.
constexpr size_t kTokenBlock = 8;

}  // namespace

void MatVec(DType wt, const void* w, size_t rows, size_t cols, const float* x,
            float* y) {
  MatMul(wt, w, rows, cols, x, 1, y);
}

void MatMul(DType wt, const void* w, size_t rows, size_t cols, const float* x,
            size_t n, float* y) {
  const size_t row_bytes = RowBytes(wt, cols);  // checks cols for quant types
  const auto* w_bytes = static_cast<const uint8_t*>(w);
  for (size_t t0 = 0; t0 < n; t0 += kTokenBlock) {
    const size_t n_tok = std::min(kTokenBlock, n - t0);
    const float* x_block = x + t0 * cols;  // [n_tok][cols]
    for (size_t r = 0; r < rows; ++r) {
      const void* row = w_bytes + r * row_bytes;
      float acc[kTokenBlock] = {};  // acc[t]: running dot for token t0 + t
      // W[r, c : c + len], decoded: whole blocks of every type.
      float chunk[kSuperBlock];
      for (size_t c = 0; c < cols; c += kSuperBlock) {
        const size_t len = std::min<size_t>(kSuperBlock, cols - c);
        internal::DecodeElems(wt, row, c, len, chunk);
        for (size_t t = 0; t < n_tok; ++t) {
          const float* xt = x_block + t * cols + c;
          for (size_t i = 0; i < len; ++i) acc[t] += chunk[i] * xt[i];
        }
      }
      for (size_t t = 0; t < n_tok; ++t) y[(t0 + t) * rows + r] = acc[t];
    }
  }
}

}  // namespace kvstash::kernels
