// The load generator against a real server: stories260K behind a
// ServingStack (serve/stack.h) on an ephemeral loopback port, driven for a
// few seconds. Nothing here depends on the machine's speed: the assertions
// are about outcomes (no failure, every bad request refused, streams
// cancelled, the prefix cache hit, RSS read) and the order of percentiles.
#include "bench/load_bench.h"

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "serve/stack.h"
#include "tests/testing/stories.h"

namespace kvstash::bench {
namespace {

// stories260K served on 127.0.0.1:<any port> until destroyed.
class StoriesServer {
 public:
  explicit StoriesServer(ApiKeys keys = {}) {
    model_ = testing::LoadStories();
    ServingStackOptions o;
    o.kv.capacity_bytes = size_t{16} << 20;
    o.kv.prefault = false;
    o.server.port = 0;
    o.server.api_keys = std::move(keys);
    Result<std::unique_ptr<ServingStack>> stack =
        ServingStack::Create(*model_, nullptr, o);
    KV_CHECK(stack.ok());
    stack_ = std::move(*stack);
    stack_->ServeInBackground();
  }

  ~StoriesServer() {
    const Status served = stack_->Stop();
    EXPECT_TRUE(served.ok()) << served.ToString();
  }

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(stack_->server().port());
  }

 private:
  std::unique_ptr<Model> model_;
  std::unique_ptr<ServingStack> stack_;  // over model_
};

std::string StoryText() {
  std::ifstream in(testing::SharedPath("data/tinystories_val.txt"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str().substr(0, 20000);
}

std::string Describe(const LoadBenchResult& r) {
  std::string s;
  for (const auto& [kind, f] : r.failures) {
    s += kind + ": " + std::to_string(f.count) + " (" + f.example + ")\n";
  }
  for (const auto& [kind, n] : r.bad_accepted_kinds) {
    s += "accepted " + kind + ": " + std::to_string(n) + "\n";
  }
  return s;
}

void ExpectOrdered(const LatencySummary& s, const char* what) {
  SCOPED_TRACE(what);
  EXPECT_GT(s.count, 0u);
  EXPECT_GE(s.p50, 0);
  EXPECT_LE(s.p50, s.p90);
  EXPECT_LE(s.p90, s.p99);
  EXPECT_LE(s.p99, s.max);
}

TEST(LoadBenchTest, DrivesAServerWithoutFailures) {
  StoriesServer server;
  LoadBenchOptions o;
  o.url = server.url();
  o.clients = 4;
  o.duration_s = 3;
  o.max_tokens = 16;
  o.text = StoryText();
  o.bad_share = 0.2;
  o.cancel_share = 0.5;
  o.rss_every_s = 1;
  o.progress_every_s = 1;
  int progress_lines = 0;
  Result<LoadBenchResult> r =
      RunLoadBench(o, [&](const std::string&) { ++progress_lines; });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->failed, 0u) << Describe(*r);
  EXPECT_GT(r->ok, 0u);
  EXPECT_GT(r->streamed_ok, 0u);
  EXPECT_LT(r->streamed_ok, r->ok);  // some were not streamed
  EXPECT_GT(r->cancelled, 0u);
  EXPECT_GT(r->bad_refused, 0u);
  EXPECT_EQ(r->bad_accepted, 0u) << Describe(*r);
  EXPECT_EQ(r->bad_failed, 0u) << Describe(*r);
  EXPECT_TRUE(r->failures.empty()) << Describe(*r);
  EXPECT_TRUE(r->Passed());
  ExpectOrdered(r->ttft, "ttft");
  ExpectOrdered(r->latency, "latency");
  ExpectOrdered(r->itl, "itl");
  EXPECT_GT(r->completion_tokens, 0u);
  // The shared documents are mapped from the cache.
  EXPECT_GT(r->cached_tokens, 0u);
  EXPECT_LE(r->cached_tokens, r->prompt_tokens);
  EXPECT_GE(r->elapsed_s, o.duration_s);
  // RSS sampled from /metrics from the start to the end.
  EXPECT_EQ(r->rss_unknown, "");
  ASSERT_GE(r->rss.size(), 2u);
  EXPECT_EQ(r->rss_failed_scrapes, 0u);
  for (const RssSample& s : r->rss) EXPECT_GT(s.bytes, 0);
  EXPECT_GE(r->rss.back().t_s, o.duration_s);
  EXPECT_FALSE(r->RssAt(60).has_value());  // a 3 s run has no minute 1
  EXPECT_GE(r->RssMax(), r->rss.front().bytes);
  EXPECT_GE(progress_lines, 2);  // at least one while running, and the end
}

// With keys: an admin key reads RSS and "wrong API key" joins the bad
// requests; a tenant's key cannot read /metrics, so RSS is unknown and says
// why; no key at all fails before the run.
TEST(LoadBenchTest, KeysDecideWhatIsRead) {
  const std::string admin = "admin-key-0123456789abcdef";
  const std::string tenant = "tenant-key-0123456789abcdef";
  Result<ApiKeys> keys =
      ApiKeys::Parse(admin + " ops admin\n" + tenant + " team\n");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  StoriesServer server(*keys);
  LoadBenchOptions o;
  o.url = server.url();
  o.clients = 2;
  o.duration_s = 1;
  o.max_tokens = 8;
  o.bad_share = 0.5;
  const auto ignore = [](const std::string&) {};

  o.api_key = admin;
  Result<LoadBenchResult> r = RunLoadBench(o, ignore);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->Passed()) << Describe(*r);
  EXPECT_GT(r->ok, 0u);
  EXPECT_GT(r->bad_refused, 0u);
  EXPECT_EQ(r->rss_unknown, "");
  EXPECT_FALSE(r->rss.empty());

  o.api_key = tenant;
  r = RunLoadBench(o, ignore);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->Passed()) << Describe(*r);
  EXPECT_TRUE(r->rss.empty());
  EXPECT_NE(r->rss_unknown.find("403"), std::string::npos) << r->rss_unknown;

  o.api_key.clear();
  r = RunLoadBench(o, ignore);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("401"), std::string::npos)
      << r.status().message();
}

TEST(LoadBenchTest, RefusesBadOptionsAndUrls) {
  const auto ignore = [](const std::string&) {};
  LoadBenchOptions o;
  for (const char* url :
       {"127.0.0.1:8080", "https://127.0.0.1:8080", "http://127.0.0.1",
        "http://127.0.0.1:0", "http://127.0.0.1:8080/v1", "http://:8080"}) {
    o.url = url;
    Result<LoadBenchResult> r = RunLoadBench(o, ignore);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << url;
  }
  o.url = "http://127.0.0.1:8080";
  o.cancel_after = o.max_tokens;
  EXPECT_EQ(RunLoadBench(o, ignore).status().code(),
            StatusCode::kInvalidArgument);
  o = LoadBenchOptions();
  o.url = "http://127.0.0.1:8080";
  o.bad_share = 1.5;
  EXPECT_EQ(RunLoadBench(o, ignore).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstash::bench
