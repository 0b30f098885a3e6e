#include <cmath>
#include <cstring>

#include "compress/policies.h"
#include "kernels/ops.h"

namespace kvstash::compress {
namespace {

// kvpress's default horizon of future queries.
constexpr int kFuturePositions = 512;
// Queries of the first positions (attention sinks) are left out of the
// statistics, as kvpress does.
constexpr int kStatSinks = 4;

// The RoPE rotation averaged over positions [n, n + kFuturePositions): per
// pair j, the mean cosine and sine of its angle.
struct MeanRotation {
  std::vector<float> cos, sin;

  MeanRotation(const ModelConfig& c, int n) {
    const size_t half = size_t(c.rope_dims) / 2;
    cos.assign(half, 0.0f);
    sin.assign(half, 0.0f);
    for (size_t j = 0; j < half; ++j) {
      double sc = 0, ss = 0;
      for (int p = n; p < n + kFuturePositions; ++p) {
        const double a =
            kernels::RopeAngle(p, j, size_t(c.rope_dims), c.rope_base);
        sc += std::cos(a);
        ss += std::sin(a);
      }
      cos[j] = float(sc / kFuturePositions);
      sin[j] = float(ss / kFuturePositions);
    }
  }

  // x = A x, x with `stride` between consecutive elements.
  void Apply(const ModelConfig& c, float* x, size_t stride) const {
    for (size_t j = 0; j < cos.size(); ++j) {
      const auto [i0, i1] =
          kernels::RopePair(c.rope_style, j, size_t(c.rope_dims));
      const float x0 = x[i0 * stride], x1 = x[i1 * stride];
      x[i0 * stride] = cos[j] * x0 - sin[j] * x1;
      x[i1 * stride] = sin[j] * x0 + cos[j] * x1;
    }
  }
};

}  // namespace

void ScoreExpected(const ScoreInput& in, Scores* scores) {
  const ModelConfig& c = in.config();
  const size_t hd = size_t(c.head_dim);
  const int group = c.n_heads / c.n_kv_heads;
  const MeanRotation rotation(c, in.n());
  const QueryWindow& queries = in.queries();
  scores->resize(size_t(in.pairs()));
  in.ForEachPair([&](int pair) {
    const int layer = in.layer_of(pair), kv_head = in.head_of(pair);
    std::vector<float> keys, values, x(hd), held, y;
    in.Decode(pair, kernels::KvSide::kK, &keys);
    in.Decode(pair, kernels::KvSide::kV, &values);
    const size_t n_rows = keys.size() / hd;
    if (in.rotated(kernels::KvSide::kK)) {
      for (size_t r = 0; r < n_rows; ++r) kernels::KvRotate(&keys[r * hd], hd);
    }
    std::vector<float>& s = (*scores)[size_t(pair)];
    s.assign(n_rows, 0.0f);
    // [S rows][mu]: one product gives S k and mu . k for every key.
    std::vector<float> stats((hd + 1) * hd);
    float* cov = stats.data();
    float* mu = stats.data() + hd * hd;
    std::vector<float> logits(n_rows);
    for (int g = 0; g < group; ++g) {
      // Mean and covariance of the held queries before RoPE.
      std::fill(stats.begin(), stats.end(), 0.0f);
      held.clear();
      for (int pos = std::max(queries.first(), kStatSinks); pos < in.n();
           ++pos) {
        const float* q = queries.Query(layer, pos);
        if (q == nullptr) continue;
        std::memcpy(x.data(), q + size_t(kv_head * group + g) * hd,
                    hd * sizeof(float));
        // Turned back by its own angles (a scaled RoPE's magnitude scales
        // every query alike, which no ranking below notices).
        kernels::Rope(x.data(), 1, hd, size_t(c.rope_dims), -pos, c.rope_base,
                      c.rope_style, c.rope_scaling);
        held.insert(held.end(), x.begin(), x.end());
      }
      const size_t count = held.size() / hd;
      for (size_t i = 0; i < count; ++i) {
        for (size_t d = 0; d < hd; ++d)
          mu[d] += held[i * hd + d] / float(count);
      }
      for (size_t i = 0; i < count; ++i) {
        const float* h = &held[i * hd];
        for (size_t a = 0; a < hd; ++a) {
          for (size_t b = 0; b < hd; ++b) {
            cov[a * hd + b] += (h[a] - mu[a]) * (h[b] - mu[b]) / float(count);
          }
        }
      }
      // The future queries' mean A mu and covariance A S A^T.
      rotation.Apply(c, mu, 1);
      for (size_t col = 0; col < hd; ++col) rotation.Apply(c, &cov[col], hd);
      for (size_t row = 0; row < hd; ++row)
        rotation.Apply(c, &cov[row * hd], 1);
      Dots(stats.data(), hd + 1, keys.data(), n_rows, hd, &y);
      float max = -INFINITY;
      for (size_t r = 0; r < n_rows; ++r) {
        const float* k = &keys[r * hd];
        const float* sk = &y[r * (hd + 1)];
        double quad = 0;
        for (size_t a = 0; a < hd; ++a) quad += double(sk[a]) * k[a];
        logits[r] =
            float(sk[hd] / std::sqrt(double(hd)) + quad / (2.0 * double(hd)));
        max = std::max(max, logits[r]);
      }
      double sum = 0;
      for (size_t r = 0; r < n_rows; ++r) {
        logits[r] = std::exp(logits[r] - max);
        sum += logits[r];
      }
      for (size_t r = 0; r < n_rows; ++r) {
        s[r] += float(logits[r] / sum / group);
      }
    }
    for (size_t r = 0; r < n_rows; ++r) {
      double sq = 0;
      for (size_t d = 0; d < hd; ++d) {
        sq += double(values[r * hd + d]) * values[r * hd + d];
      }
      s[r] *= float(std::sqrt(sq));
    }
  });
}

}  // namespace kvstash::compress
