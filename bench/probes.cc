#include "bench/probes.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "base/check.h"

namespace kvstash::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---- read bandwidth
// ----------------------------------------------------------

// Sums 64-bit words of [p, p + n) with four independent accumulators, so that
// loads, not adds, bound the loop. n % 32 == 0.
__attribute__((target("avx512f"))) uint64_t SumAvx512(const uint64_t* p,
                                                      size_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  for (size_t i = 0; i < n; i += 32) {
    a = _mm512_add_epi64(a, _mm512_load_si512(p + i));
    b = _mm512_add_epi64(b, _mm512_load_si512(p + i + 8));
    c = _mm512_add_epi64(c, _mm512_load_si512(p + i + 16));
    d = _mm512_add_epi64(d, _mm512_load_si512(p + i + 24));
  }
  return _mm512_reduce_add_epi64(
      _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
}

__attribute__((target("avx2"))) uint64_t SumAvx2(const uint64_t* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  for (size_t i = 0; i < n; i += 16) {
    a = _mm256_add_epi64(a, _mm256_load_si256((const __m256i*)(p + i)));
    b = _mm256_add_epi64(b, _mm256_load_si256((const __m256i*)(p + i + 4)));
    c = _mm256_add_epi64(c, _mm256_load_si256((const __m256i*)(p + i + 8)));
    d = _mm256_add_epi64(d, _mm256_load_si256((const __m256i*)(p + i + 12)));
  }
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256((__m256i*)lanes, _mm256_add_epi64(_mm256_add_epi64(a, b),
                                                       _mm256_add_epi64(c, d)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

uint64_t SumWords(const uint64_t* p, size_t n) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx512) return SumAvx512(p, n);
  if (avx2) return SumAvx2(p, n);
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i < n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  return a + b + c + d;
}

// ---- compute peak
// ------------------------------------------------------------

constexpr size_t kPeakIterations = 4'000'000;

// Each function runs kPeakIterations steps of 12 independent multiply-adds
// and returns the operations done (2 per multiply-add lane).
__attribute__((target("avx512f"))) double FmaZmm(float seed) {
  __m512 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(seed * j);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-6f);
  for (size_t i = 0; i < kPeakIterations; ++i) {
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return 12.0 * kPeakIterations * 16 * 2;
}

__attribute__((target("avx2,fma"))) double FmaYmm(float seed) {
  __m256 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(seed * j);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-6f);
  for (size_t i = 0; i < kPeakIterations; ++i) {
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  }
  __m256 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  volatile float sink = lanes[0];
  (void)sink;
  return 12.0 * kPeakIterations * 8 * 2;
}

__attribute__((target("avx512f,avx512bf16"))) double Bf16Zmm(float seed) {
  __m512 acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps(seed * j);
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3F80);  // 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3400);  // ~1.2e-7
  for (size_t i = 0; i < kPeakIterations; ++i) {
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return 12.0 * kPeakIterations * 32 * 2;
}

__attribute__((target("avx512f,avx512vnni"))) double Int8Zmm(float seed) {
  __m512i acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_epi32(int(seed) * j);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (size_t i = 0; i < kPeakIterations; ++i) {
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  __m512i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_epi32(s, acc[j]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return 12.0 * kPeakIterations * 64 * 2;
}

// The AVX2 int8 dot product: vpmaddubsw (u8 x s8 -> s16 pairs) then vpmaddwd
// (-> s32): 32 products per instruction pair.
__attribute__((target("avx2"))) double Int8Ymm(float seed) {
  __m256i acc[12];
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_epi32(int(seed) * j);
  const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
  const __m256i ones = _mm256_set1_epi16(1);
  for (size_t i = 0; i < kPeakIterations; ++i) {
    for (int j = 0; j < 12; ++j) {
      acc[j] = _mm256_add_epi32(
          acc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
    }
  }
  __m256i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm256_add_epi32(s, acc[j]);
  alignas(32) int lanes[8];
  _mm256_store_si256((__m256i*)lanes, s);
  volatile int sink = lanes[0];
  (void)sink;
  return 12.0 * kPeakIterations * 32 * 2;
}

struct PeakLoop {
  double (*run)(float seed);
  const char* instruction;
};

PeakLoop PeakLoopFor(kernels::DType t) {
  const bool avx512 = __builtin_cpu_supports("avx512f");
  switch (t) {
    case kernels::DType::kBF16:
      if (avx512 && __builtin_cpu_supports("avx512bf16")) {
        return {Bf16Zmm, "vdpbf16ps zmm"};
      }
      break;
    case kernels::DType::kQ8_0:
    case kernels::DType::kQ4_0:
    case kernels::DType::kQ4_K:
    case kernels::DType::kQ5_K:
    case kernels::DType::kQ6_K:
      if (avx512 && __builtin_cpu_supports("avx512vnni")) {
        return {Int8Zmm, "vpdpbusd zmm"};
      }
      if (__builtin_cpu_supports("avx2")) {
        return {Int8Ymm, "vpmaddubsw+vpmaddwd ymm"};
      }
      break;
    default:
      break;
  }
  if (avx512) return {FmaZmm, "vfmadd231ps zmm"};
  return {FmaYmm, "vfmadd231ps ymm"};
}

}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe(ThreadPool& pool, size_t bytes)
    : pool_(pool), sums_(pool.NumWorkers()) {
  bytes = std::max<size_t>(bytes / 4096 * 4096, 4096 * pool.NumWorkers());
  Result<std::unique_ptr<HugePages>> buffer = HugePages::Map(bytes);
  KV_CHECK_MSG(buffer.ok(), buffer.status().ToString().c_str());
  buffer_ = std::move(buffer).value();
  words_ = reinterpret_cast<uint64_t*>(buffer_->data());
  n_words_ = bytes / 8;
  const size_t workers = pool.NumWorkers();
  // Fault the pages in on the workers that will read them.
  pool.ParallelFor(workers, [&](size_t task, size_t) {
    const size_t lo = n_words_ * task / workers / 512 * 512;
    const size_t hi = n_words_ * (task + 1) / workers / 512 * 512;
    std::memset(words_ + lo, 1, (hi - lo) * 8);
  });
}

ReadBandwidthProbe::~ReadBandwidthProbe() {
  volatile uint64_t sink = sums_[0];
  (void)sink;
}

double ReadBandwidthProbe::Measure(int repeats) {
  const size_t workers = pool_.NumWorkers();
  std::vector<double> rates;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    const auto start = Clock::now();
    pool_.ParallelFor(workers, [&](size_t task, size_t) {
      const size_t lo = n_words_ * task / workers / 512 * 512;
      const size_t hi = n_words_ * (task + 1) / workers / 512 * 512;
      sums_[task] += SumWords(words_ + lo, hi - lo);
    });
    const double s =
        std::chrono::duration<double>(Clock::now() - start).count();
    rates.push_back((n_words_ / 512 * 512) * 8.0 / s);
  }
  return Median(rates);
}

ComputePeak MeasureComputePeak(ThreadPool& pool, kernels::DType t,
                               int repeats) {
  const PeakLoop loop = PeakLoopFor(t);
  const size_t workers = pool.NumWorkers();
  std::vector<double> rates;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    std::vector<double> ops(workers);
    const auto start = Clock::now();
    pool.ParallelFor(workers, [&](size_t task, size_t) {
      ops[task] = loop.run(1e-3f * (task + 1));
    });
    const double s =
        std::chrono::duration<double>(Clock::now() - start).count();
    double total = 0;
    for (double o : ops) total += o;
    rates.push_back(total / s);
  }
  return {Median(rates), loop.instruction};
}

}  // namespace kvstash::bench
