// Test-only K/V caches for the attention kernels: random keys and values
// stored as the runs of KV blocks would hold them, in any KvFormat, each run
// in an allocation of its own (so that a read past a run is caught by ASan).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/dtype.h"
#include "kernels/kv_format.h"
#include "kernels/test_util.h"

namespace kvstash::kernels::testing {

inline constexpr KvType kAllKvTypes[] = {
    KvType::kF32, KvType::kF16, KvType::kBF16,  KvType::kQ8,
    KvType::kQ4,  KvType::kQ4H, KvType::kKivi2, KvType::kKivi4};

// The format with both sides of type t.
inline KvFormat Uniform(KvType t) { return {t, t}; }

// The types of a sequence's own block as it is read while being filled: f16
// (the residual) on the sides that have a residual, the stored type on the
// others.
inline KvFormat ResidualOf(const KvFormat& f) {
  return {KvHasResidual(f.k) ? KvType::kF16 : f.k,
          KvHasResidual(f.v) ? KvType::kF16 : f.v};
}

// head_dim if both types of f can store it, else the next multiple of 8 (what
// the quantized types need), so that one list of shapes serves every format.
inline size_t LegalDim(const KvFormat& f, size_t head_dim) {
  if (KvFormatSupports(f.k, head_dim).empty() &&
      KvFormatSupports(f.v, head_dim).empty()) {
    return head_dim;
  }
  return (head_dim + 7) / 8 * 8;
}

class TestKv {
 public:
  // `run_sizes` positions per run, every run stored in `format`; with
  // `f16_last`, the last run is read from the f16 residual on the sides of
  // `format` that have one (KvHasResidual), as a KIVI sequence reads its own,
  // not yet sealed block (engine/paged_kv_view.h). K and V uniform in [-1, 1]
  // before encoding.
  TestKv(KvFormat format, size_t head_dim, const std::vector<size_t>& run_sizes,
         std::mt19937& rng, bool f16_last = false)
      : TestKv(Formats(format, run_sizes.size(), f16_last), head_dim, run_sizes,
               rng) {}

  // Run r stored in formats[r].
  TestKv(const std::vector<KvFormat>& formats, size_t head_dim,
         const std::vector<size_t>& run_sizes, std::mt19937& rng)
      : head_dim_(head_dim) {
    size_t total = 0;
    for (size_t n : run_sizes) total += n;
    total_ = total;
    const std::vector<float> k = RandomFloats(rng, total * head_dim);
    const std::vector<float> v = RandomFloats(rng, total * head_dim);
    k_.resize(total * head_dim);
    v_.resize(total * head_dim);
    size_t start = 0;
    for (size_t r = 0; r < run_sizes.size(); ++r) {
      const size_t n = run_sizes[r];
      run_k_.push_back(EncodeRun(formats[r].k, KvSide::kK, &k[start * head_dim],
                                 n, &k_[start * head_dim]));
      run_v_.push_back(EncodeRun(formats[r].v, KvSide::kV, &v[start * head_dim],
                                 n, &v_[start * head_dim]));
      start += n;
    }
    for (size_t r = 0; r < run_sizes.size(); ++r) {
      runs_.push_back({run_k_[r].data(), run_v_[r].data(), run_sizes[r],
                       formats[r].k, formats[r].v});
    }
    for (float x : v_) max_abs_v_ = std::max(max_abs_v_, std::fabs(x));
  }

  size_t total() const { return total_; }
  const std::vector<KvRun>& runs() const { return runs_; }
  // Element i of the key / value of position t, as KvDecodeRow gives it (the
  // values the kernels compute with; in the rotated basis for q4h).
  double K(size_t t, size_t i) const { return k_[t * head_dim_ + i]; }
  double V(size_t t, size_t i) const { return v_[t * head_dim_ + i]; }
  // max |V(t, i)|: outputs are convex combinations of the values.
  float MaxAbsV() const { return max_abs_v_; }

 private:
  static std::vector<KvFormat> Formats(KvFormat format, size_t n_runs,
                                       bool f16_last) {
    std::vector<KvFormat> formats(n_runs, format);
    if (f16_last && n_runs > 0) formats.back() = ResidualOf(format);
    return formats;
  }

  // One run of n positions of x ([n][head_dim]) in type t, in an allocation of
  // exactly KvRunBytes(t, side, head_dim, n) bytes (a full block of n
  // tokens); decodes it into decoded ([n][head_dim]).
  std::vector<uint8_t> EncodeRun(KvType t, KvSide side, const float* x,
                                 size_t n, float* decoded) const {
    std::vector<uint8_t> run(KvRunBytes(t, side, head_dim_, n));
    if (n == 0) return run;
    if (KvHasResidual(t)) {
      // Sealed from the f16 residual, as the cache does when a block fills.
      std::vector<uint16_t> f16(n * head_dim_);
      for (size_t i = 0; i < f16.size(); ++i) f16[i] = F32ToF16(x[i]);
      KvSealRun(t, side, f16.data(), n, head_dim_, n, run.data());
    } else {
      const size_t params = KvRunParamBytes(t, side, head_dim_);
      const size_t row = KvRowBytes(t, side, head_dim_);
      for (size_t p = 0; p < n; ++p) {
        KvEncodeRow(t, side, x + p * head_dim_, head_dim_,
                    run.data() + params + p * row);
      }
    }
    for (size_t p = 0; p < n; ++p) {
      KvDecodeRow(t, side, run.data(), p, head_dim_, decoded + p * head_dim_);
    }
    return run;
  }

  size_t head_dim_;
  size_t total_ = 0;
  std::vector<float> k_;  // [total][head_dim] decoded
  std::vector<float> v_;
  float max_abs_v_ = 0.0f;
  std::vector<std::vector<uint8_t>> run_k_;  // one allocation per run
  std::vector<std::vector<uint8_t>> run_v_;
  std::vector<KvRun> runs_;
};

// The positions of one run cut into runs of `sizes` positions, each in an
// allocation of its own: the same type and the same values (the run params
// of KIVI keys copied before every piece's rows), so attention over them
// must equal attention over the one run.
class SplitRuns {
 public:
  SplitRuns(const KvRun& run, size_t head_dim,
            const std::vector<size_t>& sizes) {
    size_t start = 0;
    for (size_t n : sizes) {
      k_.push_back(Piece(run.k, run.k_type, KvSide::kK, head_dim, start, n));
      v_.push_back(Piece(run.v, run.v_type, KvSide::kV, head_dim, start, n));
      start += n;
    }
    for (size_t r = 0; r < sizes.size(); ++r) {
      runs_.push_back(
          {k_[r].data(), v_[r].data(), sizes[r], run.k_type, run.v_type});
    }
  }

  const std::vector<KvRun>& runs() const { return runs_; }

 private:
  static std::vector<uint8_t> Piece(const void* run, KvType t, KvSide side,
                                    size_t head_dim, size_t start, size_t n) {
    const auto* bytes = static_cast<const uint8_t*>(run);
    const size_t params = KvRunParamBytes(t, side, head_dim);
    const size_t row = KvRowBytes(t, side, head_dim);
    std::vector<uint8_t> piece(KvRunBytes(t, side, head_dim, n));
    std::copy(bytes, bytes + params, piece.begin());
    std::copy(bytes + params + start * row, bytes + params + (start + n) * row,
              piece.begin() + params);
    return piece;
  }

  std::vector<std::vector<uint8_t>> k_;
  std::vector<std::vector<uint8_t>> v_;
  std::vector<KvRun> runs_;
};

}  // namespace kvstash::kernels::testing
