#include "serve/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace kvstash {
namespace {

TEST(MetricsTest, RendersEachTypeExactly) {
  MetricsRegistry r;
  Counter& chat = r.AddCounter("kvstash_requests_total", "Requests received.",
                               {{"endpoint", "chat"}});
  Counter& completions =
      r.AddCounter("kvstash_requests_total", "Requests received.",
                   {{"endpoint", "completions"}});
  Gauge& queue = r.AddGauge("kvstash_queue_length", "Requests waiting.");
  Histogram& ttft =
      r.AddHistogram("kvstash_ttft_seconds", "Time to first token.",
                     {0.25, 1, 2}, {{"model", "m"}});
  chat.Inc();
  chat.Inc(2);
  queue.Set(3);
  queue.Add(-0.5);
  ttft.Observe(0.25);  // on a bound: counts in that bucket
  ttft.Observe(0.5);
  ttft.Observe(4);
  EXPECT_EQ(completions.Value(), 0u);
  EXPECT_EQ(r.Render(),
            "# HELP kvstash_requests_total Requests received.\n"
            "# TYPE kvstash_requests_total counter\n"
            "kvstash_requests_total{endpoint=\"chat\"} 3\n"
            "kvstash_requests_total{endpoint=\"completions\"} 0\n"
            "# HELP kvstash_queue_length Requests waiting.\n"
            "# TYPE kvstash_queue_length gauge\n"
            "kvstash_queue_length 2.5\n"
            "# HELP kvstash_ttft_seconds Time to first token.\n"
            "# TYPE kvstash_ttft_seconds histogram\n"
            "kvstash_ttft_seconds_bucket{model=\"m\",le=\"0.25\"} 1\n"
            "kvstash_ttft_seconds_bucket{model=\"m\",le=\"1\"} 2\n"
            "kvstash_ttft_seconds_bucket{model=\"m\",le=\"2\"} 2\n"
            "kvstash_ttft_seconds_bucket{model=\"m\",le=\"+Inf\"} 3\n"
            "kvstash_ttft_seconds_sum{model=\"m\"} 4.75\n"
            "kvstash_ttft_seconds_count{model=\"m\"} 3\n");
}

TEST(MetricsTest, HistogramWithoutLabelsOrBounds) {
  MetricsRegistry r;
  Histogram& h = r.AddHistogram("h", "Only +Inf.", {});
  h.Observe(-1);
  h.Observe(std::nan(""));  // dropped
  EXPECT_EQ(r.Render(),
            "# HELP h Only +Inf.\n# TYPE h histogram\n"
            "h_bucket{le=\"+Inf\"} 1\nh_sum -1\nh_count 1\n");
}

TEST(MetricsTest, EscapesHelpAndLabelValues) {
  MetricsRegistry r;
  r.AddGauge("g", "A \\ back\nslash.", {{"path", "C:\\x \"q\"\n"}}).Set(1e-7);
  EXPECT_EQ(r.Render(),
            "# HELP g A \\\\ back\\nslash.\n# TYPE g gauge\n"
            "g{path=\"C:\\\\x \\\"q\\\"\\n\"} 1e-07\n");
}

TEST(MetricsTest, NonFiniteGaugeValues) {
  MetricsRegistry r;
  Gauge& a = r.AddGauge("a", "a", {{"k", "1"}});
  Gauge& b = r.AddGauge("a", "a", {{"k", "2"}});
  Gauge& c = r.AddGauge("a", "a", {{"k", "3"}});
  a.Set(1.0 / 0.0);
  b.Set(-1.0 / 0.0);
  c.Set(std::nan(""));
  EXPECT_EQ(r.Render(),
            "# HELP a a\n# TYPE a gauge\n"
            "a{k=\"1\"} +Inf\na{k=\"2\"} -Inf\na{k=\"3\"} NaN\n");
}

TEST(MetricsTest, LatencyBucketsSpan1msTo60s) {
  const std::vector<double> b = LatencyBuckets();
  ASSERT_FALSE(b.empty());
  EXPECT_DOUBLE_EQ(b.front(), 0.001);
  EXPECT_DOUBLE_EQ(b.back(), 60.0);
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]);
  Histogram h(b);  // the constructor's REQUIRES hold
  EXPECT_EQ(h.Read().cumulative.size(), b.size() + 1);
}

TEST(MetricsTest, ConcurrentUpdatesAddUp) {
  MetricsRegistry r;
  Counter& c = r.AddCounter("events_total", "Events.");
  Gauge& g = r.AddGauge("level", "Level.");
  Histogram& h =
      r.AddHistogram("latency_seconds", "Latency.", LatencyBuckets());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        c.Inc();
        g.Add(1.0);
        h.Observe(t == 0 ? 0.0015 : 0.5);
      }
    });
  }
  // Rendering while updates run must be safe.
  std::thread reader([&] {
    for (int i = 0; i < 50; ++i) EXPECT_FALSE(r.Render().empty());
  });
  for (std::thread& t : threads) t.join();
  reader.join();
  EXPECT_EQ(c.Value(), uint64_t{kThreads} * kPerThread);
  EXPECT_DOUBLE_EQ(g.Value(), double{kThreads} * kPerThread);
  const Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.count, uint64_t{kThreads} * kPerThread);
  EXPECT_EQ(s.cumulative[0], 0u);                    // le 0.001
  EXPECT_EQ(s.cumulative[1], uint64_t{kPerThread});  // le 0.002
  EXPECT_EQ(s.cumulative.back(), s.count);
  EXPECT_NEAR(s.sum, kPerThread * 0.0015 + 3 * kPerThread * 0.5, 1e-6);
}

// A strict reader of the text format: checks that every line is a HELP or
// TYPE comment or a sample `name{label="value",...} value`, that the value
// is a float Prometheus accepts, and that every sample belongs to a family
// with both HELP and TYPE given before it.
struct ParsedExposition {
  std::map<std::string, std::string> help, type;
  std::vector<std::string> sample_names;
  std::vector<std::string> errors;
};

bool IsMetricNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         c == ':' || (!first && c >= '0' && c <= '9');
}

bool ParseFloatValue(const std::string& s) {
  if (s == "+Inf" || s == "-Inf" || s == "NaN") return true;
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

// Parses `{a="x",b="y"}` at `pos`; advances past it.
bool ParseLabels(const std::string& line, size_t* pos) {
  size_t i = *pos + 1;
  std::set<std::string> seen;
  while (i < line.size() && line[i] != '}') {
    size_t start = i;
    while (i < line.size() && IsMetricNameChar(line[i], i == start) &&
           line[i] != ':') {
      ++i;
    }
    if (i == start || i >= line.size() || line[i] != '=') return false;
    if (!seen.insert(line.substr(start, i - start)).second) return false;
    if (++i >= line.size() || line[i] != '"') return false;
    ++i;
    while (i < line.size() && line[i] != '"') {
      if (line[i] == '\\') {
        if (i + 1 >= line.size()) return false;
        const char e = line[i + 1];
        if (e != '\\' && e != '"' && e != 'n') return false;
        ++i;
      }
      ++i;
    }
    if (i >= line.size()) return false;
    ++i;  // closing quote
    if (i < line.size() && line[i] == ',') ++i;
  }
  if (i >= line.size()) return false;
  *pos = i + 1;
  return true;
}

ParsedExposition ParseExposition(const std::string& text) {
  ParsedExposition p;
  if (!text.empty() && text.back() != '\n') {
    p.errors.push_back("no final newline");
  }
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const size_t space = rest.find(' ');
      if (space == std::string::npos) {
        p.errors.push_back("bad comment: " + line);
        continue;
      }
      const std::string name = rest.substr(0, space);
      if (line[2] == 'H') {
        p.help[name] = rest.substr(space + 1);
      } else {
        const std::string t = rest.substr(space + 1);
        if (t != "counter" && t != "gauge" && t != "histogram" &&
            t != "summary" && t != "untyped") {
          p.errors.push_back("bad type: " + line);
        }
        p.type[name] = t;
      }
      continue;
    }
    size_t i = 0;
    while (i < line.size() && IsMetricNameChar(line[i], i == 0)) ++i;
    if (i == 0) {
      p.errors.push_back("bad sample name: " + line);
      continue;
    }
    const std::string name = line.substr(0, i);
    if (i < line.size() && line[i] == '{' && !ParseLabels(line, &i)) {
      p.errors.push_back("bad labels: " + line);
      continue;
    }
    if (i >= line.size() || line[i] != ' ' ||
        !ParseFloatValue(line.substr(i + 1))) {
      p.errors.push_back("bad value: " + line);
      continue;
    }
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s = suffix;
      if (name.size() > s.size() &&
          name.compare(name.size() - s.size(), s.size(), s) == 0 &&
          p.type.count(name.substr(0, name.size() - s.size())) &&
          p.type[name.substr(0, name.size() - s.size())] == "histogram") {
        family = name.substr(0, name.size() - s.size());
      }
    }
    if (!p.help.count(family) || !p.type.count(family)) {
      p.errors.push_back("sample without HELP and TYPE: " + line);
    }
    p.sample_names.push_back(name);
  }
  return p;
}

TEST(MetricsTest, OutputIsValidExposition) {
  MetricsRegistry r;
  r.AddCounter("kvstash_prompt_tokens_total", "Prompt tokens.").Inc(123);
  r.AddCounter("kvstash_cache_hits_total", "Hits by tier.", {{"tier", "dram"}})
      .Inc(7);
  r.AddCounter("kvstash_cache_hits_total", "Hits by tier.", {{"tier", "disk"}});
  r.AddGauge("kvstash_kv_blocks_used", "Blocks in use.",
             {{"pool", "main"}, {"dtype", "f16"}})
      .Set(42.125);
  Histogram& itl =
      r.AddHistogram("kvstash_itl_seconds", "Inter-token latency.",
                     LatencyBuckets(), {{"model", "a \"quoted\"\\name"}});
  for (double v : {0.0001, 0.003, 0.04, 0.9, 75.0}) itl.Observe(v);
  r.AddHistogram("kvstash_ttft_seconds", "Time to first token.",
                 LatencyBuckets());

  const std::string text = r.Render();
  const ParsedExposition p = ParseExposition(text);
  EXPECT_TRUE(p.errors.empty()) << ::testing::PrintToString(p.errors) << "\n"
                                << text;
  EXPECT_EQ(p.help.size(), 5u);
  EXPECT_EQ(p.type.size(), 5u);
  EXPECT_EQ(p.type.at("kvstash_itl_seconds"), "histogram");
  // 3 counters + 1 gauge + 2 histograms of (16 bounds, +Inf, sum, count).
  EXPECT_EQ(p.sample_names.size(), 4u + 2 * (LatencyBuckets().size() + 3));
}

TEST(MetricsTest, ParserRejectsMalformedLines) {
  EXPECT_FALSE(ParseExposition("x 1\n").errors.empty());  // no HELP/TYPE
  EXPECT_FALSE(
      ParseExposition("# HELP x h\n# TYPE x gauge\nx one\n").errors.empty());
  EXPECT_FALSE(ParseExposition("# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n")
                   .errors.empty());
  EXPECT_TRUE(ParseExposition("# HELP x h\n# TYPE x gauge\nx{a=\"1\"} 1\n")
                  .errors.empty());
}

TEST(MetricsDeathTest, RegistrationMistakesAreBrokenInvariants) {
  EXPECT_DEATH(MetricsRegistry().AddCounter("requests", "no suffix"), "");
  EXPECT_DEATH(MetricsRegistry().AddGauge("bad-name", "h"), "");
  EXPECT_DEATH(MetricsRegistry().AddGauge("g", "h", {{"__x", "1"}}), "");
  EXPECT_DEATH(MetricsRegistry().AddGauge("g", "h", {{"a", "1"}, {"a", "2"}}),
               "");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h", "h", {1}, {{"le", "1"}}),
               "");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h", "h", {2, 1}), "");
  EXPECT_DEATH(
      {
        MetricsRegistry r;
        r.AddGauge("g", "h");
        r.AddGauge("g", "h");
      },
      "");
  EXPECT_DEATH(
      {
        MetricsRegistry r;
        r.AddGauge("g_total", "h");
        r.AddCounter("g_total", "h");
      },
      "");
}

}  // namespace
}  // namespace kvstash
