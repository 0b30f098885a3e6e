#include "serve/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "base/check.h"

namespace kvstash {
namespace {

bool IsNameChar(char c, bool first, bool allow_colon) {
  const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      c == '_' || (allow_colon && c == ':');
  return letter || (!first && c >= '0' && c <= '9');
}

bool IsValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, allow_colon)) return false;
  }
  return true;
}

void CheckLabels(const MetricLabels& labels) {
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& n = labels[i].first;
    KV_CHECK_MSG(IsValidName(n, /*allow_colon=*/false), n.c_str());
    KV_CHECK_MSG(n.rfind("__", 0) != 0, n.c_str());
    for (size_t j = 0; j < i; ++j) {
      KV_CHECK_MSG(labels[j].first != n, n.c_str());
    }
  }
}

// Shortest text that reads back as `v`, or Prometheus' names for the
// non-finite values.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  KV_CHECK(ec == std::errc());
  return std::string(buf, end);
}

void AppendEscaped(std::string* out, std::string_view text, bool quote) {
  for (char c : text) {
    if (c == '\\') {
      *out += "\\\\";
    } else if (c == '\n') {
      *out += "\\n";
    } else if (quote && c == '"') {
      *out += "\\\"";
    } else {
      *out += c;
    }
  }
}

// `{a="x",b="y"}` with `extra` (already formatted, e.g. `le="0.5"`) last;
// empty when there is nothing to write.
std::string LabelText(const MetricLabels& labels, std::string_view extra) {
  if (labels.empty() && extra.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += ',';
    out += labels[i].first;
    out += "=\"";
    AppendEscaped(&out, labels[i].second, /*quote=*/true);
    out += '"';
  }
  if (!extra.empty()) {
    if (!labels.empty()) out += ',';
    out += extra;
  }
  out += '}';
  return out;
}

void AppendSample(std::string* out, std::string_view name,
                  std::string_view labels, std::string_view value) {
  *out += name;
  *out += labels;
  *out += ' ';
  *out += value;
  *out += '\n';
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    KV_CHECK(std::isfinite(bounds_[i]));
    KV_CHECK(i == 0 || bounds_[i - 1] < bounds_[i]);
  }
}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  const size_t bucket =
      std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.cumulative.resize(counts_.size());
  uint64_t total = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.count = total;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2,
          0.5,   1,     2,     5,    10,   20,   30,  60};
}

MetricsRegistry::Family& MetricsRegistry::FamilyFor(
    std::string_view name, std::string_view help, Type type,
    const MetricLabels& labels) {
  KV_CHECK_MSG(IsValidName(name, /*allow_colon=*/true),
               std::string(name).c_str());
  CheckLabels(labels);
  for (Family& f : families_) {
    if (f.name != name) continue;
    KV_CHECK_MSG(f.type == type && f.help == help, f.name.c_str());
    for (const Metric& m : f.metrics) {
      KV_CHECK_MSG(m.labels != labels, f.name.c_str());
    }
    return f;
  }
  families_.push_back(Family{std::string(name), std::string(help), type, {}});
  return families_.back();
}

Counter& MetricsRegistry::AddCounter(std::string_view name,
                                     std::string_view help,
                                     const MetricLabels& labels) {
  KV_CHECK_MSG(name.size() > 6 && name.ends_with("_total"),
               std::string(name).c_str());
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyFor(name, help, Type::kCounter, labels);
  auto counter = std::make_unique<Counter>();
  Counter& ref = *counter;
  f.metrics.push_back(Metric{labels, std::move(counter)});
  return ref;
}

Gauge& MetricsRegistry::AddGauge(std::string_view name, std::string_view help,
                                 const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyFor(name, help, Type::kGauge, labels);
  auto gauge = std::make_unique<Gauge>();
  Gauge& ref = *gauge;
  f.metrics.push_back(Metric{labels, std::move(gauge)});
  return ref;
}

Histogram& MetricsRegistry::AddHistogram(std::string_view name,
                                         std::string_view help,
                                         std::vector<double> upper_bounds,
                                         const MetricLabels& labels) {
  for (const auto& [label, value] : labels) {
    KV_CHECK_MSG(label != "le", std::string(name).c_str());
  }
  auto histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  std::lock_guard<std::mutex> lock(mu_);
  Family& f = FamilyFor(name, help, Type::kHistogram, labels);
  Histogram& ref = *histogram;
  f.metrics.push_back(Metric{labels, std::move(histogram)});
  return ref;
}

std::string MetricsRegistry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const Family& f : families_) {
    out += "# HELP ";
    out += f.name;
    out += ' ';
    AppendEscaped(&out, f.help, /*quote=*/false);
    out += "\n# TYPE ";
    out += f.name;
    switch (f.type) {
      case Type::kCounter:
        out += " counter\n";
        break;
      case Type::kGauge:
        out += " gauge\n";
        break;
      case Type::kHistogram:
        out += " histogram\n";
        break;
    }
    for (const Metric& m : f.metrics) {
      const std::string labels = LabelText(m.labels, {});
      if (f.type == Type::kCounter) {
        const auto& c = std::get<std::unique_ptr<Counter>>(m.value);
        AppendSample(&out, f.name, labels, std::to_string(c->Value()));
      } else if (f.type == Type::kGauge) {
        const auto& g = std::get<std::unique_ptr<Gauge>>(m.value);
        AppendSample(&out, f.name, labels, FormatValue(g->Value()));
      } else {
        const auto& h = std::get<std::unique_ptr<Histogram>>(m.value);
        const Histogram::Snapshot s = h->Read();
        const std::string bucket = f.name + "_bucket";
        for (size_t i = 0; i < s.cumulative.size(); ++i) {
          const std::string le = i < h->upper_bounds().size()
                                     ? FormatValue(h->upper_bounds()[i])
                                     : std::string("+Inf");
          AppendSample(&out, bucket, LabelText(m.labels, "le=\"" + le + "\""),
                       std::to_string(s.cumulative[i]));
        }
        AppendSample(&out, f.name + "_sum", labels, FormatValue(s.sum));
        AppendSample(&out, f.name + "_count", labels, std::to_string(s.count));
      }
    }
  }
  return out;
}

}  // namespace kvstash
