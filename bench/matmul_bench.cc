// matmul_bench: speed of the fast matmul kernels (kernels/matmul_fast.h) on
// the thread pool (base/thread_pool.h), for every weight type.
//
//   matvec:  one token against a 2048 x 8192 W; W rotates through copies that
//            fill a pool larger than L3 (--pool-mib), so it streams from DRAM.
//            Reported as GB/s of W bytes, next to the read-bandwidth probe
//            (bench/probes.h) on the same workers, measured before each run
//            of matvecs (the machine may be shared: the ratio of each run to
//            its probe is the figure to compare).
//   prefill: 512 tokens against the same W (hot), reported as GFLOP/s
//            (2 * rows * cols * tokens per matmul), next to the compute
//            peak of the type's instruction family (bench/probes.h)
//            measured before each run.
//   pool:    latency of an empty ParallelFor.
// Each figure is the median and min-max over --runs runs; each run is the
// median of --reps operations. Activations are prepared (PrepareActivations)
// inside every timed operation.
//
// Usage: matmul_bench [--runs N] [--reps N] [--pool-mib N] [--threads N]
//                     [--types f32,f16,bf16,q8_0,q4_0,q4_k,q5_k,q6_k]
// (--threads N: pools of 1, 2, 4, ... up to N workers; default 2).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "base/huge_pages.h"
#include "base/thread_pool.h"
#include "bench/probes.h"
#include "hwy/aligned_allocator.h"
#include "hwy/targets.h"
#include "kernels/dtype.h"
#include "kernels/matmul_fast.h"

namespace kvstash {
namespace {

using kernels::DType;

struct Options {
  size_t runs = 7;
  size_t reps = 20;
  size_t pool_mib = 512;
  size_t max_threads = 2;
  std::vector<DType> types = {DType::kF32,  DType::kF16,  DType::kBF16,
                              DType::kQ8_0, DType::kQ4_0, DType::kQ4_K,
                              DType::kQ5_K, DType::kQ6_K};
};

constexpr size_t kRows = 2048;
constexpr size_t kCols = 8192;
constexpr size_t kPrefillTokens = 512;
// Bytes the read-bandwidth probe streams (far more than L3).
constexpr size_t kProbeBytes = size_t{256} << 20;
// Row chunks per worker: small enough to balance, large enough that each
// chunk is many row tiles.
constexpr size_t kChunksPerWorker = 4;

bool ParseOptions(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) return false;
    const char* value = argv[++i];
    if (arg == "--runs") {
      o->runs = std::strtoul(value, nullptr, 10);
    } else if (arg == "--reps") {
      o->reps = std::strtoul(value, nullptr, 10);
    } else if (arg == "--pool-mib") {
      o->pool_mib = std::strtoul(value, nullptr, 10);
    } else if (arg == "--threads") {
      o->max_threads = std::strtoul(value, nullptr, 10);
    } else if (arg == "--types") {
      o->types.clear();
      std::string_view list = value;
      while (!list.empty()) {
        const size_t comma = std::min(list.find(','), list.size());
        DType t;
        if (!kernels::ParseDType(list.substr(0, comma), &t)) return false;
        o->types.push_back(t);
        list.remove_prefix(std::min(comma + 1, list.size()));
      }
    } else {
      return false;
    }
  }
  return o->runs > 0 && o->reps > 0 && o->max_threads > 0;
}

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 != 0 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// "median  (min-max)" of v, with `digits` decimals, the median `width`
// characters wide.
std::string Spread(const std::vector<double>& v, int width, int digits) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%*.*f  (%.*f-%.*f)", width, digits,
                Median(v), digits, *std::min_element(v.begin(), v.end()),
                digits, *std::max_element(v.begin(), v.end()));
  return buf;
}

void Print(const char* what, DType t, size_t threads, const char* unit,
           const std::vector<double>& runs, const char* extra = "") {
  std::printf("%-8s %-5s %zuT  %-8s %s%s\n", what,
              std::string(kernels::DTypeName(t)).c_str(), threads, unit,
              Spread(runs, 8, 1).c_str(), extra);
  std::fflush(stdout);
}

// Runs `op` opts.runs x opts.reps times, reading probe() before each run;
// prints the per-run medians of value(seconds of one op), the probe's
// readings (in probe_unit) and each run's value over its own reading.
template <typename Op, typename Value, typename Probe>
void MeasureAgainstProbe(const Options& opts, const char* what, DType t,
                         size_t threads, const char* unit, const Op& op,
                         const Value& value, const char* probe_name,
                         const char* probe_unit, const Probe& probe) {
  std::vector<double> runs, probes, ratios;
  for (size_t run = 0; run < opts.runs; ++run) {
    probes.push_back(probe());
    std::vector<double> reps;
    for (size_t rep = 0; rep < opts.reps; ++rep) {
      const auto start = std::chrono::steady_clock::now();
      op();
      reps.push_back(value(Seconds(std::chrono::steady_clock::now() - start)));
    }
    runs.push_back(Median(reps));
    ratios.push_back(runs.back() / probes.back());
  }
  char extra[160];
  std::snprintf(extra, sizeof(extra), "   %s %s %s   ratio %s", probe_name,
                Spread(probes, 0, 1).c_str(), probe_unit,
                Spread(ratios, 0, 2).c_str());
  Print(what, t, threads, unit, runs, extra);
}

// y = W x for n tokens, rows split into chunks over the pool.
void ParallelMatMul(ThreadPool& pool, DType t, const uint8_t* w, const float* x,
                    size_t n, uint8_t* prepared, float* y) {
  kernels::PrepareActivations(t, x, kCols, n, prepared);
  const size_t chunks = pool.NumWorkers() * kChunksPerWorker;
  // Chunk boundaries on multiples of 4 rows (the widest row tile).
  const size_t chunk_rows = (kRows / chunks + 3) / 4 * 4;
  pool.ParallelFor(chunks, [&](size_t chunk, size_t) {
    const size_t begin = std::min(kRows, chunk * chunk_rows);
    const size_t end = std::min(kRows, begin + chunk_rows);
    kernels::MatMulRows(t, w, kCols, x, prepared, n, begin, end, y, kRows);
  });
}

void BenchType(const Options& opts, DType t,
               const std::vector<ThreadPool*>& pools) {
  const size_t w_bytes = kRows * kernels::RowBytes(t, kCols);
  const size_t copies =
      std::max<size_t>(2, ((opts.pool_mib << 20) + w_bytes - 1) / w_bytes);
  // In huge pages, as the probe's buffer and weights loaded with
  // --huge-pages are, so that the ratio compares like with like.
  auto mapped = HugePages::Map(copies * w_bytes);
  if (!mapped.ok()) {
    std::fprintf(stderr, "matmul_bench: %s\n",
                 mapped.status().ToString().c_str());
    std::exit(1);
  }
  uint8_t* const weights = mapped.value()->data();
  {
    std::mt19937 rng(1);
    std::normal_distribution<float> dist(0.0f, 0.02f);
    std::vector<float> row(kCols);
    for (size_t r = 0; r < kRows; ++r) {
      for (float& v : row) v = dist(rng);
      kernels::QuantizeRow(t, row.data(), kCols,
                           weights + r * kernels::RowBytes(t, kCols));
    }
    for (size_t c = 1; c < copies; ++c) {
      std::memcpy(weights + c * w_bytes, weights, w_bytes);
    }
  }
  std::mt19937 rng(2);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(kPrefillTokens * kCols);
  for (float& v : x) v = dist(rng);
  std::vector<float> y(kPrefillTokens * kRows);
  auto prepared = hwy::AllocateAligned<uint8_t>(std::max<size_t>(
      1, kernels::PreparedActivationBytes(t, kCols, kPrefillTokens)));

  for (ThreadPool* pool : pools) {
    size_t copy = 0;
    const auto matvec = [&] {
      ParallelMatMul(*pool, t, weights + copy * w_bytes, x.data(), 1,
                     prepared.get(), y.data());
      copy = (copy + 1) % copies;
    };
    bench::ReadBandwidthProbe probe(*pool, kProbeBytes);
    MeasureAgainstProbe(
        opts, "matvec", t, pool->NumWorkers(), "GB/s", matvec,
        [&](double s) { return w_bytes / s / 1e9; }, "read probe", "GB/s",
        [&] { return probe.Measure(3) / 1e9; });
  }
  Options prefill_opts = opts;
  prefill_opts.reps = std::max<size_t>(1, opts.reps / 8);
  for (ThreadPool* pool : pools) {
    const auto prefill = [&] {
      ParallelMatMul(*pool, t, weights, x.data(), kPrefillTokens,
                     prepared.get(), y.data());
    };
    const double flop = 2.0 * kRows * kCols * kPrefillTokens;
    MeasureAgainstProbe(
        prefill_opts, "prefill", t, pool->NumWorkers(), "GFLOP/s", prefill,
        [&](double s) { return flop / s / 1e9; }, "peak", "GOP/s",
        [&] { return bench::MeasureComputePeak(*pool, t, 3).ops_per_s / 1e9; });
  }
}

void BenchPoolLatency(const Options& opts, ThreadPool& pool) {
  std::vector<double> runs;
  for (size_t run = 0; run < opts.runs; ++run) {
    constexpr int kCalls = 2000;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) {
      pool.ParallelFor(pool.NumWorkers(), [](size_t, size_t) {});
    }
    runs.push_back(Seconds(std::chrono::steady_clock::now() - start) / kCalls *
                   1e6);
  }
  std::printf("pool     empty ParallelFor, %zu workers: %.2f us (%.2f-%.2f)\n",
              pool.NumWorkers(), Median(runs),
              *std::min_element(runs.begin(), runs.end()),
              *std::max_element(runs.begin(), runs.end()));
}

int Main(int argc, char** argv) {
  Options opts;
  if (!ParseOptions(argc, argv, &opts)) {
    std::fprintf(stderr,
                 "usage: matmul_bench [--runs N] [--reps N] [--pool-mib N] "
                 "[--threads N] "
                 "[--types f32,f16,bf16,q8_0,q4_0,q4_k,q5_k,q6_k]\n");
    return 2;
  }
  std::vector<std::unique_ptr<ThreadPool>> owned;
  std::vector<ThreadPool*> pools;
  for (size_t threads = 1; threads <= opts.max_threads; threads *= 2) {
    owned.push_back(std::make_unique<ThreadPool>(
        ThreadPool::Options{.num_threads = threads}));
    pools.push_back(owned.back().get());
  }
  std::printf(
      "target %s; W %zu x %zu; prefill %zu tokens; pool %zu MiB; "
      "%zu runs x %zu reps\n",
      hwy::TargetName(hwy::SupportedTargets() & ~(hwy::SupportedTargets() - 1)),
      kRows, kCols, kPrefillTokens, opts.pool_mib, opts.runs, opts.reps);
  for (ThreadPool* pool : pools) BenchPoolLatency(opts, *pool);
  for (DType t : opts.types) BenchType(opts, t, pools);
  return 0;
}

}  // namespace
}  // namespace kvstash

int main(int argc, char** argv) { return kvstash::Main(argc, argv); }
