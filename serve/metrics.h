// Metrics: counters, gauges and histograms that any thread updates, and
// their Prometheus text exposition (format 0.0.4) for GET /metrics.
//
// A MetricsRegistry owns its metrics; the reference Add* returns stays valid
// for the registry's lifetime. A family (one name, help text and type) may
// hold several metrics that differ in their constant labels, e.g.
// requests_total{endpoint="chat"} and requests_total{endpoint="completions"}.
// Metrics are registered by code at start-up, so a malformed name, a counter
// name without the "_total" suffix, a label named "le" on a histogram, a
// name reused with another type or help text, or a (name, labels) pair
// registered twice is a broken invariant (KV_CHECK), not a Status.
//
// Render writes families in registration order, each as
//   # HELP <name> <help>
//   # TYPE <name> counter|gauge|histogram
// followed by one sample line per metric (in registration order), for a
// histogram `<name>_bucket{...,le="<bound>"} <cumulative count>` for each
// bound and le="+Inf", then `<name>_sum` and `<name>_count`. Label values and
// help text are escaped as the format requires; values are shortest
// round-trip decimals, "+Inf", "-Inf" or "NaN".
//
// Thread-safety: updates (Inc, Set, Add, Observe) are lock-free atomics and
// may race with Render. A histogram rendered while observations are in
// flight may show a _sum that lags its buckets; its _count always equals its
// +Inf bucket. Add* and Render are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kvstash {

// The Content-Type of Render's output.
inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// Monotonic count of events.
class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (queue length, bytes in use).
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into buckets by upper bound (a value v falls in the
// first bucket whose bound is >= v, or in +Inf).
class Histogram {
 public:
  // REQUIRES: `upper_bounds` finite and strictly increasing (may be empty:
  // only the +Inf bucket).
  explicit Histogram(std::vector<double> upper_bounds);

  // NaN is dropped; +-infinity counts in the +Inf / first bucket.
  void Observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // [bounds + 1]: per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;  // == cumulative.back()
  };
  Snapshot Read() const;

  const std::vector<double>& upper_bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> counts_;  // [bounds + 1], not cumulative
  std::atomic<double> sum_{0.0};
};

// Upper bounds in seconds for request latencies such as time to first token
// and inter-token latency: 1, 2, 5 steps from 1 ms to 20 s, then 30 s, 60 s.
std::vector<double> LatencyBuckets();

// Constant labels of one metric, rendered in this order.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class MetricsRegistry {
 public:
  // REQUIRES (all Add*): `name` matches [a-zA-Z_:][a-zA-Z0-9_:]*; label
  // names match [a-zA-Z_][a-zA-Z0-9_]*, do not start with "__" and are
  // distinct; `name` is new, or an existing family of the same type and help
  // without a metric of these labels.
  // REQUIRES: `name` ends in "_total".
  Counter& AddCounter(std::string_view name, std::string_view help,
                      const MetricLabels& labels = {});
  Gauge& AddGauge(std::string_view name, std::string_view help,
                  const MetricLabels& labels = {});
  // REQUIRES: as Histogram's constructor; no label named "le".
  Histogram& AddHistogram(std::string_view name, std::string_view help,
                          std::vector<double> upper_bounds,
                          const MetricLabels& labels = {});

  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Metric {
    MetricLabels labels;
    std::variant<std::unique_ptr<Counter>, std::unique_ptr<Gauge>,
                 std::unique_ptr<Histogram>>
        value;
  };
  struct Family {
    std::string name;
    std::string help;
    Type type;
    std::vector<Metric> metrics;
  };

  // The family to add a metric with `labels` to, created if new.
  // REQUIRES: mu_ held.
  Family& FamilyFor(std::string_view name, std::string_view help, Type type,
                    const MetricLabels& labels);

  mutable std::mutex mu_;
  std::vector<Family> families_;  // registration order
};

}  // namespace kvstash
