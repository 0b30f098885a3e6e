// Probes of this machine's limits, measured in the same run as a benchmark so
// that a benchmark can report ratios (achieved / possible) that hold on a
// shared, noisy machine:
//   - memory read bandwidth: every worker of the pool streams its slice of a
//     buffer far larger than the last-level cache;
//   - compute peak: every worker runs a loop of independent SIMD multiply-adds
//     of the instruction family a weight type's kernel uses (f32 FMA for
//     f32/f16 weights, bf16 dot products for bf16, int8 dot products for
//     q8_0/q4_0 and the K-quants), with the widest vectors the CPU has.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/huge_pages.h"
#include "base/thread_pool.h"
#include "kernels/dtype.h"

namespace kvstash::bench {

// The read-bandwidth probe with its buffer kept, so that a benchmark can
// measure it right before and after each timed run (the bandwidth a shared
// machine gives moves by 1.5x within minutes) without faulting the buffer in
// again: `bytes` (rounded down to 4 KiB) split across the pool's workers,
// each worker reading the slice it faulted in. The buffer is held in
// HugePages (base/huge_pages.h), as the weights can be (--huge-pages) and
// the KV arena is: with 4 KiB pages the probe read 0.55-0.85x as fast on
// the Zen 5 host, and decode from huge pages measured above "the machine's
// bandwidth".
class ReadBandwidthProbe {
 public:
  ReadBandwidthProbe(ThreadPool& pool, size_t bytes);
  ~ReadBandwidthProbe();
  ReadBandwidthProbe(const ReadBandwidthProbe&) = delete;
  ReadBandwidthProbe& operator=(const ReadBandwidthProbe&) = delete;

  // Bytes per second: the median of `repeats` passes.
  double Measure(int repeats);

 private:
  ThreadPool& pool_;
  std::unique_ptr<HugePages> buffer_;
  size_t n_words_;
  uint64_t* words_;             // buffer_->data()
  std::vector<uint64_t> sums_;  // per worker, so that no pass is elided
};

struct ComputePeak {
  double ops_per_s = 0;     // multiply-adds count 2 operations per lane
  std::string instruction;  // e.g. "vfmadd231ps zmm", "vpdpbusd zmm"
};

// The peak of the instruction family used for weights of type `t`, over all
// workers at once: the median of `repeats` runs.
ComputePeak MeasureComputePeak(ThreadPool& pool, kernels::DType t, int repeats);

}  // namespace kvstash::bench
