// Test-only K/V caches for the attention kernels: random keys and values
// stored in one KV type, split into runs that each live in an allocation of
// their own (so that a read past a run is caught by ASan).
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/attention.h"
#include "kernels/dtype.h"
#include "kernels/test_util.h"

namespace kvstash::kernels::testing {

inline constexpr DType kKvTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

class TestKv {
 public:
  // `run_sizes` positions per run; K and V uniform in [-1, 1] before encoding.
  TestKv(DType type, size_t head_dim, const std::vector<size_t>& run_sizes,
         std::mt19937& rng)
      : type_(type), head_dim_(head_dim) {
    size_t total = 0;
    for (size_t n : run_sizes) total += n;
    whole_k_ = Encode(RandomFloats(rng, total * head_dim));
    whole_v_ = Encode(RandomFloats(rng, total * head_dim));
    const size_t row_bytes = RowBytes(type, head_dim);
    size_t start = 0;
    for (size_t n : run_sizes) {
      const auto slice = [&](const std::vector<uint8_t>& all) {
        return std::vector<uint8_t>(all.begin() + start * row_bytes,
                                    all.begin() + (start + n) * row_bytes);
      };
      run_k_.push_back(slice(whole_k_));
      run_v_.push_back(slice(whole_v_));
      start += n;
    }
    for (size_t r = 0; r < run_sizes.size(); ++r) {
      runs_.push_back({run_k_[r].data(), run_v_[r].data(), run_sizes[r]});
    }
  }

  DType type() const { return type_; }
  const std::vector<KvRun>& runs() const { return runs_; }
  // All positions as one run.
  KvRun Whole() const {
    return {whole_k_.data(), whole_v_.data(),
            whole_k_.size() / RowBytes(type_, head_dim_)};
  }
  // Element i of the key / value of position t, decoded independently.
  double K(size_t t, size_t i) const { return Elem(whole_k_, t, i); }
  double V(size_t t, size_t i) const { return Elem(whole_v_, t, i); }

 private:
  std::vector<uint8_t> Encode(const std::vector<float>& x) const {
    std::vector<uint8_t> bytes(RowBytes(type_, x.size()));
    QuantizeRow(type_, x.data(), x.size(), bytes.data());
    return bytes;
  }
  double Elem(const std::vector<uint8_t>& all, size_t t, size_t i) const {
    return RefElem(type_, all.data(), t * head_dim_ + i);
  }

  DType type_;
  size_t head_dim_;
  std::vector<uint8_t> whole_k_;  // [total][head_dim] of type_
  std::vector<uint8_t> whole_v_;
  std::vector<std::vector<uint8_t>> run_k_;
  std::vector<std::vector<uint8_t>> run_v_;
  std::vector<KvRun> runs_;
};

}  // namespace kvstash::kernels::testing
