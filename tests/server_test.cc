// End-to-end tests of the OpenAI-compatible HTTP server: a tiny random-weight
// Llama model (real Llama 2 vocabulary) behind a real Scheduler, KvManager and
// HttpServer on a loopback port, driven by an HTTP client (cpp-httplib) and,
// for the disconnect test, by a raw socket. A random-weight model practically
// never emits EOS, so every generation runs to max_tokens.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "base/thread_pool.h"
#include "engine/generate.h"
#include "engine/transformer.h"
#include "kvcache/kv_manager.h"
#include "model/model.h"
#include "model/random_model.h"
#include "serve/http_server.h"
#include "serve/scheduler.h"
#include "serve/stack.h"
#include "store/disk_tier.h"
#include "tests/testing/running_server.h"
#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

using testing::ExpectApiError;
using testing::Get;
using testing::HttpReply;
using testing::NewClient;
using testing::ParseJson;
using testing::Post;
using testing::RunningServer;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kBlockTokens = 16;
constexpr int kContext = 512;
constexpr size_t kMaxBodyBytes = size_t{1} << 20;
constexpr char kModelId[] = "kvstash-test";

// ---------------------------------------------------------------------------
// Prompts.

// A deterministic prompt of `n` words that starts with `tag` (unique per use,
// so that no two tests share a cached first block).
std::string Words(const std::string& tag, int n) {
  static const char* const kWords[] = {
      "the",    "little", "dog",    "ran",      "across",  "a",       "green",
      "field",  "while",  "bright", "sun",      "was",     "shining", "over",
      "old",    "river",  "and",    "children", "played",  "with",    "red",
      "ball",   "near",   "tall",   "trees",    "where",   "birds",   "sang",
      "songs",  "about",  "summer", "rain",     "house",   "window",  "quiet",
      "garden", "flower", "stone",  "bridge",   "morning", "night",   "moon",
      "cat",    "slept",  "warm",   "blanket",  "kitchen", "bread",   "apple",
      "forest", "path",   "friend", "story",    "happy",   "small",   "boat"};
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the tag: a stable seed
  for (unsigned char c : tag) h = (h ^ c) * 1099511628211ull;
  std::mt19937_64 rng(h);
  std::string s = tag;
  for (int i = 0; i < n; ++i) {
    s += ' ';
    s += kWords[rng() % std::size(kWords)];
  }
  return s;
}

Json CompletionBody(const std::string& prompt, int max_tokens,
                    bool stream = false, bool include_usage = false) {
  Json b = {{"model", kModelId},
            {"prompt", prompt},
            {"max_tokens", max_tokens},
            {"temperature", 0}};
  if (stream) b["stream"] = true;
  if (include_usage) b["stream_options"] = {{"include_usage", true}};
  return b;
}

Json ChatBody(const std::string& user, int max_tokens, bool stream = false) {
  Json b = {
      {"model", kModelId},
      {"messages", Json::array({{{"role", "system"}, {"content", "Be brief."}},
                                {{"role", "user"}, {"content", user}}})},
      {"max_tokens", max_tokens},
      {"temperature", 0}};
  if (stream) b["stream"] = true;
  return b;
}

// ---------------------------------------------------------------------------
// Server-Sent Events.

struct Stream {
  std::vector<Json> chunks;  // the JSON payloads before "data: [DONE]"
  bool done = false;         // ended with "data: [DONE]", nothing after it
};

// Parses an SSE body made of "data: <payload>\n\n" events; anything else
// is a test failure.
Stream ParseSse(const std::string& body) {
  Stream s;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) {
      ADD_FAILURE() << "unterminated SSE event: " << body.substr(pos);
      break;
    }
    const std::string event = body.substr(pos, end - pos);
    pos = end + 2;
    if (event.rfind("data: ", 0) != 0 ||
        event.find('\n') != std::string::npos) {
      ADD_FAILURE() << "not a single data line: " << event;
      continue;
    }
    const std::string data = event.substr(6);
    if (s.done) {
      ADD_FAILURE() << "event after [DONE]: " << data;
      continue;
    }
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    const Json j = ParseJson(data);
    if (!j.is_object()) ADD_FAILURE() << "chunk is not a JSON object: " << data;
    s.chunks.push_back(j);
  }
  return s;
}

// ---------------------------------------------------------------------------
// Prometheus text format.

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> help;  // family -> help text
  std::map<std::string, std::string> type;  // family -> type
  std::vector<Sample> samples;
};

bool IsMetricName(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' ||
                    c == ':' ||
                    (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

bool IsLabelName(std::string_view s) {
  return IsMetricName(s) && s.find(':') == std::string_view::npos;
}

std::optional<double> ParseValue(const std::string& s) {
  if (s == "+Inf") return INFINITY;
  if (s == "-Inf") return -INFINITY;
  if (s == "NaN") return NAN;
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  if (!std::isfinite(v)) return std::nullopt;  // "inf", "nan": not the format
  return v;
}

// The family a sample name belongs to: a histogram's _bucket/_sum/_count
// samples belong to the histogram.
std::string FamilyOf(const std::string& name, const Exposition& e) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string sfx = suffix;
    if (name.size() > sfx.size() &&
        name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
      const std::string base = name.substr(0, name.size() - sfx.size());
      auto it = e.type.find(base);
      if (it != e.type.end() && it->second == "histogram") return base;
    }
  }
  return name;
}

// Parses the text exposition format 0.0.4 strictly; every malformed line is a
// test failure (naming the line).
Exposition ParsePrometheus(const std::string& text) {
  Exposition e;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream in(line);
      std::string hash, kind, name;
      in >> hash >> kind >> name;
      if (hash != "#" || (kind != "HELP" && kind != "TYPE") ||
          !IsMetricName(name)) {
        ADD_FAILURE() << "bad comment line: " << line;
        continue;
      }
      const size_t text_at = line.find(name, 2 + kind.size()) + name.size();
      std::string rest =
          text_at < line.size() ? line.substr(text_at + 1) : std::string();
      if (kind == "HELP") {
        if (e.help.count(name)) ADD_FAILURE() << "second HELP: " << line;
        if (rest.empty()) ADD_FAILURE() << "empty HELP: " << line;
        e.help[name] = rest;
      } else {
        if (e.type.count(name)) ADD_FAILURE() << "second TYPE: " << line;
        if (rest != "counter" && rest != "gauge" && rest != "histogram") {
          ADD_FAILURE() << "bad TYPE: " << line;
        }
        e.type[name] = rest;
      }
      continue;
    }
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    bool ok = IsMetricName(s.name);
    if (ok && i < line.size() && line[i] == '{') {
      ++i;
      while (ok && i < line.size() && line[i] != '}') {
        const size_t eq = line.find('=', i);
        if (eq == std::string::npos || eq + 1 >= line.size() ||
            line[eq + 1] != '"') {
          ok = false;
          break;
        }
        const std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;
        bool closed = false;
        for (; j < line.size(); ++j) {
          if (line[j] == '\\') {
            if (j + 1 >= line.size()) break;
            const char n = line[++j];
            if (n == 'n') {
              value += '\n';
            } else if (n == '\\' || n == '"') {
              value += n;
            } else {
              break;
            }
          } else if (line[j] == '"') {
            closed = true;
            break;
          } else {
            value += line[j];
          }
        }
        if (!closed || !IsLabelName(key) || s.labels.count(key)) {
          ok = false;
          break;
        }
        s.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (ok && (i >= line.size() || line[i] != '}')) ok = false;
      ++i;
    }
    std::optional<double> value;
    if (ok && i < line.size() && line[i] == ' ') {
      value = ParseValue(line.substr(i + 1));
    }
    if (!ok || !value) {
      ADD_FAILURE() << "bad sample line: " << line;
      continue;
    }
    s.value = *value;
    const std::string family = FamilyOf(s.name, e);
    if (!e.help.count(family) || !e.type.count(family)) {
      ADD_FAILURE() << "sample without HELP and TYPE before it: " << line;
    }
    e.samples.push_back(std::move(s));
  }
  return e;
}

// The value of the sample `name` with exactly `labels`, or nullopt.
std::optional<double> Find(const Exposition& e, const std::string& name,
                           const std::map<std::string, std::string>& labels) {
  for (const Sample& s : e.samples) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Servers.

std::unique_ptr<kvcache::KvManager> NewKv(
    const Model& model, std::vector<kvcache::TierOptions> tiers = {},
    kernels::KvFormat kv_format = {}) {
  const ModelConfig& c = model.config();
  kvcache::KvManagerOptions o;
  o.layout = {c.n_layers, c.n_kv_heads, c.head_dim, kBlockTokens, kv_format};
  o.capacity_bytes = size_t{4} << 20;
  o.prefault = false;
  o.tiers = std::move(tiers);
  auto kv = kvcache::KvManager::Create(o);
  if (!kv.ok()) {
    ADD_FAILURE() << "KvManager::Create: " << kv.status().ToString();
    return nullptr;
  }
  return std::move(kv).value();
}

std::unique_ptr<Scheduler> NewScheduler(const Model& model,
                                        kvcache::KvManager& kv,
                                        SchedulerOptions options) {
  options.context = kContext;
  auto s = Scheduler::Create(model, nullptr, kv, options);
  if (!s.ok()) {
    ADD_FAILURE() << "Scheduler::Create: " << s.status().ToString();
    return nullptr;
  }
  return std::move(s).value();
}

class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    RandomModelOptions o;
    o.dim = 64;
    o.n_layers = 2;
    o.n_heads = 4;
    o.n_kv_heads = 2;
    o.ffn_dim = 128;
    o.context_length = 1024;
    o.type = kernels::DType::kF32;
    o.seed = 11;
    o.vocab_path = testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf");
    const std::string path = testing::TempDir("server_test") + "/model.gguf";
    {
      ThreadPool pool(ThreadPool::Options{.num_threads = 2});
      const Status st = WriteRandomModel(o, path, &pool);
      if (!st.ok()) {
        ADD_FAILURE() << "WriteRandomModel: " << st.ToString();
        return;
      }
    }
    auto model = Model::Load(path, "");
    if (!model.ok()) {
      ADD_FAILURE() << "Model::Load: " << model.status().ToString();
      return;
    }
    model_ = std::move(model).value().release();
    ServingStackOptions so;
    so.kv.layout.block_tokens = kBlockTokens;
    so.kv.capacity_bytes = size_t{4} << 20;
    so.kv.prefault = false;
    so.scheduler.context = kContext;
    so.server.host = "127.0.0.1";
    so.server.port = 0;
    so.server.model_id = kModelId;
    so.server.max_body_bytes = kMaxBodyBytes;
    stack_ = testing::StartStack(*model_, so).release();
    if (stack_ == nullptr) return;
    kv_ = &stack_->kv();
    scheduler_ = &stack_->scheduler();
  }

  static void TearDownTestSuite() {
    delete stack_;
    delete model_;
    stack_ = nullptr;
    scheduler_ = nullptr;
    kv_ = nullptr;
    model_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(stack_, nullptr) << "the suite's server did not start";
    port_ = stack_->server().port();
  }

  static int PromptTokens(const std::string& prompt) {
    return int(model_->tokenizer().Encode(prompt, /*add_bos=*/true).size());
  }

  // The cached_tokens a request reports for a prompt of `n` tokens whose
  // blocks are all cached: every full block, but at least the last prompt
  // token is computed (a prompt ending on a block boundary maps n - 1
  // positions, the last block copied on write).
  static int FullHit(int n) {
    return n % kBlockTokens != 0 ? n / kBlockTokens * kBlockTokens : n - 1;
  }

  // A second server over the suite's scheduler, with the API keys of
  // `keys` (ApiKeys::Parse's text). Null (and a failure) when it cannot
  // start.
  std::unique_ptr<RunningServer> StartKeyed(const std::string& keys) {
    ServerOptions so;
    so.port = 0;
    so.model_id = kModelId;
    Result<ApiKeys> parsed = ApiKeys::Parse(keys);
    EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
    if (!parsed.ok()) return nullptr;
    so.api_keys = *parsed;
    return RunningServer::Start(*model_, *scheduler_, *kv_, so);
  }

  Json KvStats() {
    const HttpReply r = Get(port_, "/kv/stats");
    EXPECT_EQ(r.status, 200) << r.body;
    return ParseJson(r.body);
  }

  Exposition Metrics() {
    const HttpReply r = Get(port_, "/metrics");
    EXPECT_EQ(r.status, 200) << r.body;
    return ParsePrometheus(r.body);
  }

  // Polls /kv/stats (up to `timeout`) until no block is in use; checks that
  // the block counts add up.
  void ExpectNoBlocksUsed(milliseconds timeout = milliseconds(5000)) {
    const Clock::time_point deadline = Clock::now() + timeout;
    Json s = KvStats();
    while (s.value("used_blocks", -1) != 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(20));
      s = KvStats();
    }
    EXPECT_EQ(s.value("used_blocks", -1), 0) << s.dump();
    EXPECT_EQ(s.value("used_blocks", 0) + s.value("cached_blocks", 0) +
                  s.value("free_blocks", 0),
              s.value("capacity_blocks", -1))
        << s.dump();
  }

  static inline Model* model_ = nullptr;
  static inline ServingStack* stack_ = nullptr;     // the suite's server
  static inline kvcache::KvManager* kv_ = nullptr;  // the stack's
  static inline Scheduler* scheduler_ = nullptr;    // the stack's
  int port_ = 0;
};

// Checks a non-streaming /v1/completions response; returns it parsed.
Json ExpectCompletion(const HttpReply& r, int max_tokens) {
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type.rfind("application/json", 0), 0u) << r.content_type;
  Json j = ParseJson(r.body);
  EXPECT_TRUE(j.is_object()) << r.body;
  if (!j.is_object()) return Json::object();
  EXPECT_EQ(j.value("object", ""), "text_completion") << r.body;
  EXPECT_EQ(j.value("model", ""), kModelId);
  EXPECT_EQ(j.value("id", "").rfind("cmpl-", 0), 0u) << r.body;
  EXPECT_TRUE(j.contains("created") && j["created"].is_number_integer());
  EXPECT_TRUE(j.contains("choices") && j["choices"].is_array() &&
              j["choices"].size() == 1)
      << r.body;
  if (!j.contains("choices") || j["choices"].empty()) return Json::object();
  const Json& c = j["choices"][0];
  EXPECT_TRUE(c.contains("text") && c["text"].is_string()) << r.body;
  EXPECT_EQ(c.value("index", -1), 0);
  EXPECT_EQ(c.value("finish_reason", ""), "length") << r.body;
  const Json& u = j["usage"];
  EXPECT_TRUE(u.is_object()) << r.body;
  EXPECT_EQ(u.value("completion_tokens", -1), max_tokens) << r.body;
  EXPECT_EQ(u.value("total_tokens", -1),
            u.value("prompt_tokens", -1) + u.value("completion_tokens", -1))
      << r.body;
  EXPECT_TRUE(u.contains("prompt_tokens_details") &&
              u["prompt_tokens_details"].contains("cached_tokens"))
      << r.body;
  return j;
}

int CachedTokens(const Json& response) {
  return response["usage"]["prompt_tokens_details"].value("cached_tokens", -1);
}

// The text of a streamed completion (checks every chunk's shape, the final
// chunk's finish_reason and the [DONE] end); *usage gets the usage chunk,
// which must be there exactly when `include_usage`.
std::string ExpectCompletionStream(const HttpReply& r, bool include_usage,
                                   Json* usage = nullptr) {
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type.rfind("text/event-stream", 0), 0u) << r.content_type;
  const Stream s = ParseSse(r.body);
  EXPECT_TRUE(s.done) << "no final data: [DONE]\n" << r.body;
  std::string text;
  std::set<std::string> ids;
  int finals = 0;
  bool saw_usage = false;
  for (size_t i = 0; i < s.chunks.size(); ++i) {
    const Json& c = s.chunks[i];
    SCOPED_TRACE("chunk " + std::to_string(i) + ": " + c.dump());
    EXPECT_EQ(c.value("object", ""), "text_completion");
    EXPECT_EQ(c.value("model", ""), kModelId);
    ids.insert(c.value("id", ""));
    EXPECT_EQ(c.contains("usage"), include_usage);
    if (!c.contains("choices") || !c["choices"].is_array()) {
      ADD_FAILURE() << "no choices array";
      continue;
    }
    if (c["choices"].empty()) {
      // The usage chunk: last, after the final chunk.
      EXPECT_TRUE(include_usage);
      EXPECT_EQ(i + 1, s.chunks.size()) << "usage chunk is not the last";
      EXPECT_EQ(finals, 1) << "usage chunk before the final chunk";
      EXPECT_TRUE(c["usage"].is_object());
      saw_usage = true;
      if (usage != nullptr) *usage = c["usage"];
      continue;
    }
    const Json& choice = c["choices"][0];
    if (c["choices"].size() != 1 || !choice.contains("text") ||
        !choice["text"].is_string()) {
      ADD_FAILURE() << "expected one choice with a text";
      continue;
    }
    EXPECT_EQ(finals, 0) << "a chunk after the final one";
    if (choice["finish_reason"].is_null()) {
      text += choice["text"].get<std::string>();
    } else {
      ++finals;
      EXPECT_EQ(choice["finish_reason"], "length");
      EXPECT_EQ(choice["text"], "");
      if (include_usage) {
        EXPECT_TRUE(c["usage"].is_null());
      }
    }
  }
  EXPECT_EQ(finals, 1) << "expected one chunk with a finish_reason";
  EXPECT_EQ(saw_usage, include_usage);
  EXPECT_EQ(ids.size(), 1u) << "chunks of one stream carry different ids";
  EXPECT_EQ(ids.begin()->rfind("cmpl-", 0), 0u);
  return text;
}

// ---------------------------------------------------------------------------
// 1. Non-streaming completions and the prefix cache.

TEST_F(ServerTest, CompletionReportsUsageAndHitsTheCacheOnRepeat) {
  const std::string prompt = Words("completion-usage", 100);
  const int n = PromptTokens(prompt);
  ASSERT_GT(n, 2 * kBlockTokens);
  const int kMax = 24;

  const Json first = ExpectCompletion(
      Post(port_, "/v1/completions", CompletionBody(prompt, kMax)), kMax);
  ASSERT_TRUE(first.contains("usage"));
  const std::string text = first["choices"][0].value("text", "");
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(first["usage"].value("prompt_tokens", -1), n);
  EXPECT_EQ(CachedTokens(first), 0) << "a fresh prompt hit the cache";

  const Json again = ExpectCompletion(
      Post(port_, "/v1/completions", CompletionBody(prompt, kMax)), kMax);
  ASSERT_TRUE(again.contains("usage"));
  EXPECT_EQ(again["choices"][0].value("text", ""), text)
      << "greedy output changed when served from the cache";
  EXPECT_EQ(again["usage"].value("prompt_tokens", -1), n);
  const int cached = CachedTokens(again);
  EXPECT_GT(cached, 0);
  EXPECT_LT(cached, n);
  EXPECT_EQ(cached, FullHit(n));
  EXPECT_NE(again.value("id", ""), first.value("id", ""));
}

// 2. Streaming completions.

TEST_F(ServerTest, StreamedCompletionEqualsTheNonStreamedOne) {
  const std::string prompt = Words("completion-stream", 100);
  const int n = PromptTokens(prompt);
  const int kMax = 24;
  const Json whole = ExpectCompletion(
      Post(port_, "/v1/completions", CompletionBody(prompt, kMax)), kMax);
  ASSERT_TRUE(whole.contains("choices"));
  const std::string text = whole["choices"][0].value("text", "");
  ASSERT_FALSE(text.empty());

  const HttpReply plain =
      Post(port_, "/v1/completions", CompletionBody(prompt, kMax, true));
  EXPECT_EQ(ExpectCompletionStream(plain, /*include_usage=*/false), text);

  Json usage;
  const HttpReply with_usage = Post(
      port_, "/v1/completions",
      CompletionBody(prompt, kMax, /*stream=*/true, /*include_usage=*/true));
  EXPECT_EQ(ExpectCompletionStream(with_usage, true, &usage), text);
  ASSERT_TRUE(usage.is_object());
  EXPECT_EQ(usage.value("prompt_tokens", -1), n);
  EXPECT_EQ(usage.value("completion_tokens", -1), kMax);
  EXPECT_EQ(usage.value("total_tokens", -1), n + kMax);
  ASSERT_TRUE(usage.contains("prompt_tokens_details"));
  EXPECT_EQ(usage["prompt_tokens_details"].value("cached_tokens", -1),
            FullHit(n));
}

// 3. Chat completions.

TEST_F(ServerTest, ChatCompletionStreamedAndNot) {
  const std::string user = Words("chat", 60);
  const int kMax = 20;
  const HttpReply r = Post(port_, "/v1/chat/completions", ChatBody(user, kMax));
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = ParseJson(r.body);
  ASSERT_TRUE(j.is_object()) << r.body;
  EXPECT_EQ(j.value("object", ""), "chat.completion");
  EXPECT_EQ(j.value("id", "").rfind("chatcmpl-", 0), 0u) << r.body;
  ASSERT_TRUE(j.contains("choices") && j["choices"].size() == 1) << r.body;
  const Json& choice = j["choices"][0];
  EXPECT_EQ(choice.value("finish_reason", ""), "length");
  ASSERT_TRUE(choice.contains("message")) << r.body;
  EXPECT_EQ(choice["message"].value("role", ""), "assistant");
  const std::string content = choice["message"].value("content", "");
  EXPECT_FALSE(content.empty());
  const Json& u = j["usage"];
  EXPECT_EQ(u.value("completion_tokens", -1), kMax);
  EXPECT_GT(u.value("prompt_tokens", 0), 60);
  EXPECT_EQ(u.value("total_tokens", -1),
            u.value("prompt_tokens", 0) + u.value("completion_tokens", 0));

  const HttpReply s =
      Post(port_, "/v1/chat/completions", ChatBody(user, kMax, true));
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(s.content_type.rfind("text/event-stream", 0), 0u);
  const Stream stream = ParseSse(s.body);
  EXPECT_TRUE(stream.done) << s.body;
  ASSERT_GE(stream.chunks.size(), 2u) << s.body;
  std::string streamed;
  int finals = 0;
  for (size_t i = 0; i < stream.chunks.size(); ++i) {
    const Json& c = stream.chunks[i];
    SCOPED_TRACE("chunk " + std::to_string(i) + ": " + c.dump());
    EXPECT_EQ(c.value("object", ""), "chat.completion.chunk");
    EXPECT_EQ(c.value("id", "").rfind("chatcmpl-", 0), 0u);
    EXPECT_FALSE(c.contains("usage"));
    ASSERT_TRUE(c.contains("choices") && c["choices"].size() == 1);
    const Json& ch = c["choices"][0];
    ASSERT_TRUE(ch.contains("delta") && ch["delta"].is_object());
    const Json& delta = ch["delta"];
    if (i == 0) {
      EXPECT_EQ(delta.value("role", ""), "assistant");
    } else {
      EXPECT_FALSE(delta.contains("role"));
    }
    if (ch["finish_reason"].is_null()) {
      ASSERT_TRUE(delta.contains("content") && delta["content"].is_string());
      streamed += delta["content"].get<std::string>();
    } else {
      ++finals;
      EXPECT_EQ(i + 1, stream.chunks.size());
      EXPECT_EQ(ch["finish_reason"], "length");
      EXPECT_FALSE(delta.contains("content"));
    }
  }
  EXPECT_EQ(finals, 1);
  EXPECT_EQ(streamed, content);
}

// 4. Token-id prompts.

TEST_F(ServerTest, TokenIdPrompts) {
  Json body = {
      {"prompt", {1, 15043, 3186}}, {"max_tokens", 8}, {"temperature", 0}};
  const Json j = ExpectCompletion(Post(port_, "/v1/completions", body), 8);
  ASSERT_TRUE(j.contains("usage"));
  EXPECT_EQ(j["usage"].value("prompt_tokens", -1), 3);
  EXPECT_FALSE(j["choices"][0].value("text", "").empty());

  body["prompt"] = {1, 15043, 32000};
  ExpectApiError(Post(port_, "/v1/completions", body), 400,
                 "token id == vocabulary size", "prompt");
  body["prompt"] = {1, 999999};
  ExpectApiError(Post(port_, "/v1/completions", body), 400,
                 "token id far outside the vocabulary", "prompt");
  body["prompt"] = {1, -3};
  ExpectApiError(Post(port_, "/v1/completions", body), 400,
                 "negative token id");
}

// 5. Concurrency.

TEST_F(ServerTest, ConcurrentRequestsAgreeAndReleaseTheirBlocks) {
  // Three prompts sharing a long prefix (so some requests map blocks others
  // computed), each sent by four threads, two streaming and two not.
  const std::string prefix = Words("concurrent", 90);
  const std::vector<std::string> prompts = {prefix + " " + Words("first", 12),
                                            prefix + " " + Words("second", 12),
                                            prefix + " " + Words("third", 12)};
  const int kThreads = 12;
  const int kMax = 16;
  std::vector<HttpReply> replies(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const bool stream = t % 2 == 1;
      replies[t] = Post(port_, "/v1/completions",
                        CompletionBody(prompts[t / 2 % 3], kMax, stream));
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<std::set<std::string>> texts(prompts.size());
  for (int t = 0; t < kThreads; ++t) {
    SCOPED_TRACE("thread " + std::to_string(t));
    const HttpReply& r = replies[t];
    ASSERT_EQ(r.status, 200) << r.body;
    std::string text;
    if (t % 2 == 1) {
      text = ExpectCompletionStream(r, false);
    } else {
      const Json j = ExpectCompletion(r, kMax);
      ASSERT_TRUE(j.contains("choices"));
      text = j["choices"][0].value("text", "");
    }
    EXPECT_FALSE(text.empty());
    texts[t / 2 % 3].insert(text);
  }
  for (size_t p = 0; p < prompts.size(); ++p) {
    EXPECT_EQ(texts[p].size(), 1u)
        << "prompt " << p << " gave different greedy texts";
  }
  ExpectNoBlocksUsed();
}

// 6. Metrics.

TEST_F(ServerTest, MetricsAreValidPrometheusText) {
  ExpectCompletion(
      Post(port_, "/v1/completions", CompletionBody(Words("metrics", 30), 4)),
      4);
  const HttpReply r = Get(port_, "/metrics");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.content_type.rfind("text/plain", 0), 0u) << r.content_type;
  const Exposition e = ParsePrometheus(r.body);
  ASSERT_FALSE(e.samples.empty()) << r.body;
  for (const auto& [name, type] : e.type) {
    EXPECT_TRUE(e.help.count(name)) << "TYPE without HELP: " << name;
  }

  double requests = 0;
  int request_series = 0;
  for (const Sample& s : e.samples) {
    if (s.name == "kvstash_requests_total") {
      requests += s.value;
      ++request_series;
      EXPECT_TRUE(s.labels.count("endpoint"));
    }
  }
  const auto type_of = [&](const std::string& family) {
    auto it = e.type.find(family);
    return it == e.type.end() ? std::string() : it->second;
  };
  EXPECT_EQ(type_of("kvstash_requests_total"), "counter");
  EXPECT_GT(request_series, 0);
  EXPECT_GT(requests, 0);
  EXPECT_GE(Find(e, "kvstash_requests_total", {{"endpoint", "completions"}})
                .value_or(0),
            1);
  for (const char* state : {"used", "cached", "free"}) {
    EXPECT_TRUE(Find(e, "kvstash_kv_blocks", {{"state", state}}).has_value())
        << state;
  }
  EXPECT_EQ(type_of("kvstash_kv_blocks"), "gauge");
  // The pool's size in tokens and the bytes of a cached token, labelled
  // with the K and V types; /kv/stats says the same.
  const kernels::BlockLayout& layout = kv_->layout();
  const Json stats = KvStats();
  EXPECT_EQ(stats.value("kv_type_k", ""), "f16") << stats.dump();
  EXPECT_EQ(stats.value("kv_type_v", ""), "f16") << stats.dump();
  EXPECT_EQ(stats.value("bytes_per_token", -1.0), layout.bytes_per_token())
      << stats.dump();
  // f16 K and V of 2 layers x 2 kv heads x 16 dims.
  EXPECT_EQ(layout.bytes_per_token(), 2.0 * 2 * 2 * 16 * 2);
  EXPECT_EQ(stats.value("capacity_tokens", -1),
            stats.value("capacity_blocks", -2) * kBlockTokens)
      << stats.dump();
  EXPECT_GT(stats.value("capacity_tokens", -1), 0) << stats.dump();
  EXPECT_EQ(type_of("kvstash_kv_capacity_tokens"), "gauge");
  EXPECT_EQ(Find(e, "kvstash_kv_capacity_tokens", {}),
            double(stats.value("capacity_tokens", -1)));
  EXPECT_EQ(type_of("kvstash_kv_bytes_per_token"), "gauge");
  EXPECT_EQ(Find(e, "kvstash_kv_bytes_per_token", {{"k", "f16"}, {"v", "f16"}}),
            layout.bytes_per_token());
  // The process's resident memory, under the name Prometheus' process
  // collectors use (the load generator samples it).
  EXPECT_EQ(type_of("process_resident_memory_bytes"), "gauge");
  EXPECT_GT(Find(e, "process_resident_memory_bytes", {}).value_or(0), 0.0);

  // The TTFT histogram: cumulative buckets ending in +Inf == _count > 0.
  const std::string h = "kvstash_time_to_first_token_seconds";
  EXPECT_EQ(type_of(h), "histogram");
  std::vector<std::pair<double, double>> buckets;  // (le, count)
  for (const Sample& s : e.samples) {
    if (s.name != h + "_bucket") continue;
    ASSERT_TRUE(s.labels.count("le"));
    const std::optional<double> le = ParseValue(s.labels.at("le"));
    ASSERT_TRUE(le.has_value()) << s.labels.at("le");
    buckets.push_back({*le, s.value});
  }
  ASSERT_GE(buckets.size(), 2u);
  for (size_t i = 1; i < buckets.size(); ++i) {
    EXPECT_LT(buckets[i - 1].first, buckets[i].first);
    EXPECT_LE(buckets[i - 1].second, buckets[i].second);
  }
  EXPECT_TRUE(std::isinf(buckets.back().first));
  const std::optional<double> count = Find(e, h + "_count", {});
  ASSERT_TRUE(count.has_value());
  EXPECT_EQ(*count, buckets.back().second);
  EXPECT_GT(*count, 0);
  EXPECT_TRUE(Find(e, h + "_sum", {}).has_value());
}

// A server whose cache keeps K and V in compressed types names them in
// /kv/stats and /metrics, holds more tokens in the same bytes, and serves.
TEST_F(ServerTest, CompressedKvTypesInStatsAndMetrics) {
  using kernels::KvType;
  const kernels::KvFormat format = {KvType::kQ8, KvType::kKivi4};
  auto kv = NewKv(*model_, {}, format);
  ASSERT_NE(kv, nullptr);
  auto scheduler = NewScheduler(*model_, *kv, SchedulerOptions{});
  ASSERT_NE(scheduler, nullptr);
  ServerOptions so;
  so.port = 0;
  so.model_id = kModelId;
  auto server = RunningServer::Start(*model_, *scheduler, *kv, so);
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  const std::string prompt = Words("compressed", 60);
  const Json cold = ExpectCompletion(
      Post(port, "/v1/completions", CompletionBody(prompt, 6)), 6);
  const Json warm = ExpectCompletion(
      Post(port, "/v1/completions", CompletionBody(prompt, 6)), 6);
  EXPECT_GT(CachedTokens(warm), 0) << warm.dump();
  EXPECT_EQ(warm["choices"][0]["text"], cold["choices"][0]["text"]);

  const double f16_bytes = 2.0 * 2 * 2 * 16 * 2;  // as the suite's server
  const Json stats = ParseJson(Get(port, "/kv/stats").body);
  EXPECT_EQ(stats.value("kv_type_k", ""), "q8") << stats.dump();
  EXPECT_EQ(stats.value("kv_type_v", ""), "kivi4") << stats.dump();
  EXPECT_EQ(stats.value("bytes_per_token", -1.0),
            kv->layout().bytes_per_token());
  EXPECT_LT(stats.value("bytes_per_token", -1.0), f16_bytes / 2);
  EXPECT_EQ(stats.value("capacity_tokens", -1),
            stats.value("capacity_blocks", -2) * kBlockTokens);
  EXPECT_EQ(stats.value("tier_codec", ""), "none") << stats.dump();
  EXPECT_EQ(stats.value("tier_chunk_blocks", 0), kv->chunk_blocks());
  // The same 4 MiB hold more than twice the tokens of f16.
  EXPECT_GT(stats.value("capacity_tokens", 0.0),
            2 * double(size_t{4} << 20) / f16_bytes)
      << stats.dump();
  const Exposition e = ParsePrometheus(Get(port, "/metrics").body);
  EXPECT_EQ(Find(e, "kvstash_kv_capacity_tokens", {}),
            double(stats.value("capacity_tokens", -1)));
  EXPECT_EQ(
      Find(e, "kvstash_kv_bytes_per_token", {{"k", "q8"}, {"v", "kivi4"}}),
      kv->layout().bytes_per_token());
}

// Token eviction per request: "kv_compression" compacts the prompt into
// fewer blocks; usage, /kv/stats and /metrics say so; a bad policy is a 400
// naming the field.
TEST_F(ServerTest, KvCompressionPerRequest) {
  Json body = CompletionBody(Words("evict", 200), 4);
  body["kv_compression"] = {{"policy", "streaming"}, {"ratio", 0.75}};
  const Json j = ExpectCompletion(Post(port_, "/v1/completions", body), 4);
  const Json& kvc = j["usage"]["kvstash_kv_compression"];
  ASSERT_TRUE(kvc.is_object()) << j.dump();
  EXPECT_EQ(kvc.value("policy", ""), "streaming");
  EXPECT_LT(kvc.value("blocks_after", 99), kvc.value("blocks_before", 0))
      << j.dump();
  EXPECT_NEAR(kvc.value("kept_tokens", 0.0),
              j["usage"].value("prompt_tokens", 0) * 0.25, 1.0);
  const Json stats = ParseJson(Get(port_, "/kv/stats").body);
  EXPECT_GE(stats["compression"].value("compressions", 0), 1) << stats.dump();
  EXPECT_GT(stats["compression"].value("evicted_tokens", 0.0), 0.0);
  EXPECT_TRUE(stats["sequences"].is_array()) << stats.dump();
  const Exposition e = ParsePrometheus(Get(port_, "/metrics").body);
  EXPECT_GE(Find(e, "kvstash_kv_compressions_total", {}).value_or(0), 1.0);
  EXPECT_GT(Find(e, "kvstash_kv_evicted_tokens_total", {}).value_or(0), 0.0);
  // Plain requests report no compression.
  const Json plain = ExpectCompletion(
      Post(port_, "/v1/completions", CompletionBody("a plain one", 2)), 2);
  EXPECT_FALSE(plain["usage"].contains("kvstash_kv_compression"));
  body["kv_compression"] = {{"policy", "nope"}};
  const HttpReply bad = Post(port_, "/v1/completions", body);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(ParseJson(bad.body)["error"].value("param", ""),
            "kv_compression.policy")
      << bad.body;
  // A fixed budget while decoding: compressed again every 8 positions.
  body = CompletionBody(Words("evict", 100), 30);
  body["kv_compression"] = {{"policy", "h2o"}, {"ratio", 0.5}, {"every", 8}};
  const Json fixed = ExpectCompletion(Post(port_, "/v1/completions", body), 30);
  EXPECT_GE(fixed["usage"]["kvstash_kv_compression"].value("recompressions", 0),
            3)
      << fixed.dump();
  for (const Json& every : {Json(-1), Json("8"), Json(1.5)}) {
    body["kv_compression"]["every"] = every;
    const HttpReply e = Post(port_, "/v1/completions", body);
    EXPECT_EQ(e.status, 400) << e.body;
    EXPECT_EQ(ParseJson(e.body)["error"].value("param", ""),
              "kv_compression.every")
        << e.body;
  }
}

// A chat's earlier messages are the document a query-agnostic policy
// compresses: stored once, then mapped by the next question about it; a
// query-aware policy compresses per request and says so.
TEST_F(ServerTest, CompressedChatDocumentsAreReused) {
  auto ask = [&](const std::string& question, const char* policy) {
    Json body = ChatBody(question, 3);
    body["messages"][0]["content"] = Words("document", 150);
    body["kv_compression"] = {{"policy", policy}, {"ratio", 0.5}};
    const Json j = ParseJson(Post(port_, "/v1/chat/completions", body).body);
    return j["usage"];
  };
  const Json first = ask("What happened first?", "knorm");
  const Json& kvc = first["kvstash_kv_compression"];
  ASSERT_TRUE(kvc.is_object()) << first.dump();
  EXPECT_EQ(kvc.value("cache", ""), "stored");
  const int document = kvc.value("compressed_tokens", 0);
  // The system message, not the question.
  EXPECT_GT(document, 150);
  EXPECT_LT(document, first.value("prompt_tokens", 0) - 4);
  EXPECT_NEAR(kvc.value("kept_tokens", 0.0), document / 2.0, 0.5);

  const Json second = ask("And who was there at the end?", "knorm");
  EXPECT_EQ(second["kvstash_kv_compression"].value("cache", ""), "mapped")
      << second.dump();
  EXPECT_EQ(second["prompt_tokens_details"].value("cached_tokens", 0),
            document);
  const Json snap = ask("What happened first?", "snapkv");
  EXPECT_EQ(snap["kvstash_kv_compression"].value("cache", ""), "per_request");
  EXPECT_EQ(snap["kvstash_kv_compression"].value("compressed_tokens", 0),
            snap.value("prompt_tokens", -1));

  const Json stats = ParseJson(Get(port_, "/kv/stats").body);
  EXPECT_GE(stats["compression"].value("documents_stored", 0), 1)
      << stats.dump();
  EXPECT_GE(stats["compression"].value("documents_mapped", 0), 1);
  const Exposition e = ParsePrometheus(Get(port_, "/metrics").body);
  EXPECT_GE(Find(e, "kvstash_kv_compressed_prefix_hits_total", {}).value_or(0),
            1.0);
}

// 7. Models and health.

TEST_F(ServerTest, ModelsAndHealth) {
  const HttpReply m = Get(port_, "/v1/models");
  ASSERT_EQ(m.status, 200) << m.body;
  const Json j = ParseJson(m.body);
  ASSERT_TRUE(j.is_object()) << m.body;
  EXPECT_EQ(j.value("object", ""), "list");
  ASSERT_TRUE(j.contains("data") && j["data"].is_array() &&
              j["data"].size() == 1)
      << m.body;
  EXPECT_EQ(j["data"][0].value("id", ""), kModelId);
  EXPECT_EQ(j["data"][0].value("object", ""), "model");

  const HttpReply h = Get(port_, "/health");
  ASSERT_EQ(h.status, 200) << h.body;
  EXPECT_EQ(ParseJson(h.body), Json({{"status", "ok"}})) << h.body;
}

// 8. Admin endpoints: lookup, cache salts, clear.

TEST_F(ServerTest, KvLookupSaltAndClear) {
  const std::string prompt = Words("admin", 100);
  const int n = PromptTokens(prompt);
  const int full_blocks = n / kBlockTokens * kBlockTokens;
  ExpectCompletion(Post(port_, "/v1/completions", CompletionBody(prompt, 8)),
                   8);

  const Json lookup =
      ParseJson(Post(port_, "/kv/lookup", Json{{"prompt", prompt}}).body);
  ASSERT_TRUE(lookup.is_object());
  EXPECT_EQ(lookup.value("prompt_tokens", -1), n) << lookup.dump();
  EXPECT_GT(lookup.value("cached_tokens", -1), 0) << lookup.dump();
  EXPECT_EQ(lookup.value("cached_tokens", -1), full_blocks) << lookup.dump();

  // Another tenant sees nothing of it.
  const Json salted = ParseJson(
      Post(port_, "/kv/lookup", Json{{"prompt", prompt}, {"cache_salt", "b"}})
          .body);
  EXPECT_EQ(salted.value("cached_tokens", -1), 0) << salted.dump();
  Json body = CompletionBody(prompt, 8);
  body["cache_salt"] = "b";
  const Json other = ExpectCompletion(Post(port_, "/v1/completions", body), 8);
  ASSERT_TRUE(other.contains("usage"));
  EXPECT_EQ(CachedTokens(other), 0);
  const Json other_again =
      ExpectCompletion(Post(port_, "/v1/completions", body), 8);
  ASSERT_TRUE(other_again.contains("usage"));
  EXPECT_EQ(CachedTokens(other_again), FullHit(n));

  // Chat lookups render the messages like the chat endpoint does.
  const Json chat = ChatBody(Words("admin-chat", 60), 4);
  ASSERT_EQ(Post(port_, "/v1/chat/completions", chat).status, 200);
  const Json chat_lookup = ParseJson(
      Post(port_, "/kv/lookup", Json{{"messages", chat["messages"]}}).body);
  EXPECT_GT(chat_lookup.value("cached_tokens", -1), 0) << chat_lookup.dump();

  // Clear evicts every cached block; nothing is found afterwards.
  const HttpReply cleared = Post(port_, "/kv/clear", std::string("{}"));
  ASSERT_EQ(cleared.status, 200) << cleared.body;
  EXPECT_GT(ParseJson(cleared.body).value("evicted_blocks", -1), 0)
      << cleared.body;
  const Json after =
      ParseJson(Post(port_, "/kv/lookup", Json{{"prompt", prompt}}).body);
  EXPECT_EQ(after.value("cached_tokens", -1), 0) << after.dump();
  EXPECT_EQ(after.value("prompt_tokens", -1), n);
  const Json stats = KvStats();
  EXPECT_EQ(stats.value("cached_blocks", -1), 0) << stats.dump();

  ExpectApiError(Post(port_, "/kv/lookup", std::string("{")), 400,
                 "lookup of malformed JSON");
}

// 9. Bad requests.

TEST_F(ServerTest, BadRequestsGetOpenAiErrors) {
  const std::string ok_prompt = Words("bad-requests", 20);
  auto completion = [&](Json patch) {
    Json b = CompletionBody(ok_prompt, 8);
    b.merge_patch(patch);
    return Post(port_, "/v1/completions", b);
  };
  ExpectApiError(
      Post(port_, "/v1/completions", std::string("{\"prompt\": \"x\", ")), 400,
      "malformed JSON");
  ExpectApiError(Post(port_, "/v1/completions", std::string("[1, 2]")), 400,
                 "body not an object");
  ExpectApiError(Post(port_, "/v1/completions", std::string("")), 400,
                 "empty body");
  ExpectApiError(completion({{"max_tokens", "ten"}}), 400,
                 "max_tokens a string", "max_tokens");
  ExpectApiError(completion({{"max_tokens", -5}}), 400, "negative max_tokens",
                 "max_tokens");
  ExpectApiError(completion({{"max_tokens", 100000}}), 400,
                 "max_tokens over the context", "max_tokens");
  ExpectApiError(completion({{"max_tokens", kContext - 5}}), 400,
                 "max_tokens over the room the prompt leaves", "max_tokens");
  ExpectApiError(completion({{"temperature", 7}}), 400, "temperature 7",
                 "temperature");
  ExpectApiError(completion({{"n", 0}}), 400, "n = 0", "n");
  ExpectApiError(completion({{"prompt", Words("too-long", 3000)}}), 400,
                 "prompt longer than the context", "prompt");
  ExpectApiError(completion({{"prompt", nullptr}}), 400, "no prompt", "prompt");
  ExpectApiError(Post(port_, "/v1/chat/completions",
                      Json{{"messages", Json::array()}, {"max_tokens", 4}}),
                 400, "empty messages", "messages");
  ExpectApiError(
      Post(port_, "/v1/chat/completions",
           Json{{"messages", {{{"role", "wizard"}, {"content", "hi"}}}}}),
      400, "unknown role", "messages[0].role");

  // A body over max_body_bytes: 413.
  std::string big = "{\"prompt\": \"";
  big.append(2 * kMaxBodyBytes, 'a');
  big += "\"}";
  ExpectApiError(Post(port_, "/v1/completions", big), 413, "2 MiB body");

  ExpectApiError(Get(port_, "/v1/nope"), 404, "unknown GET route");
  ExpectApiError(Post(port_, "/nope", std::string("{}")), 404,
                 "unknown POST route");

  // The server still serves.
  ExpectCompletion(completion(Json::object()), 8);
  EXPECT_EQ(Get(port_, "/health").status, 200);
}

// 10. API key.

TEST_F(ServerTest, ApiKeyIsRequiredWhenSet) {
  ServerOptions so;
  so.port = 0;
  so.model_id = kModelId;
  so.api_keys = *ApiKeys::Single("sekret-0123456789");
  auto keyed = RunningServer::Start(*model_, *scheduler_, *kv_, so);
  ASSERT_NE(keyed, nullptr);
  const int port = keyed->port();
  ASSERT_NE(port, port_);
  const Json body = CompletionBody(Words("api-key", 20), 4);

  ExpectApiError(Post(port, "/v1/completions", body), 401, "no key");
  ExpectApiError(
      Post(port, "/v1/completions", body, {{"Authorization", "Bearer wrong"}}),
      401, "wrong key");
  ExpectApiError(Post(port, "/v1/completions", body,
                      {{"Authorization", "sekret-0123456789"}}),
                 401, "key without Bearer");
  ExpectApiError(Get(port, "/v1/models"), 401, "models without a key");
  ExpectApiError(Get(port, "/metrics"), 401, "metrics without a key");
  ExpectApiError(Get(port, "/kv/stats"), 401, "kv stats without a key");
  ExpectApiError(Post(port, "/kv/clear", std::string("{}")), 401,
                 "kv clear without a key");

  const httplib::Headers auth = {{"Authorization", "Bearer sekret-0123456789"}};
  ExpectCompletion(Post(port, "/v1/completions", body, auth), 4);
  EXPECT_EQ(Get(port, "/v1/models", auth).status, 200);
  const HttpReply health = Get(port, "/health");
  EXPECT_EQ(health.status, 200) << health.body;
  // The first server has no key.
  EXPECT_EQ(Get(port_, "/v1/models").status, 200);
}

// Tenants: each key's tenant has its own namespace. Tenant B, with every
// salt it may send, maps nothing of tenant A's prompt and learns nothing
// of it from /kv/lookup; clearing the cache, /metrics and the global stats
// need an admin key; a tenant's /kv/stats are its own counters.
TEST_F(ServerTest, TenantsCannotSeeEachOther) {
  auto server = StartKeyed(
      "alice-key-0123456789 alice\n"
      "bob-key-0123456789 bob\n"
      "ops-key-0123456789 ops admin\n");
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  const httplib::Headers alice = {{"Authorization",
                                   "Bearer alice-key-0123456789"}},
                         bob = {{"Authorization", "Bearer bob-key-0123456789"}},
                         ops = {{"Authorization", "Bearer ops-key-0123456789"}};
  Json body = CompletionBody(Words("tenant-secret", 120), 2);
  ExpectCompletion(Post(port, "/v1/completions", body, alice), 2);
  const Json again =
      ExpectCompletion(Post(port, "/v1/completions", body, alice), 2);
  EXPECT_GT(again["usage"]["prompt_tokens_details"].value("cached_tokens", 0),
            100);
  Json lookup = {{"prompt", body["prompt"]}};
  EXPECT_GT(ParseJson(Post(port, "/kv/lookup", lookup, alice).body)
                .value("cached_tokens", 0),
            100);
  for (const Json& salt :
       {Json(nullptr), Json("alice"), Json("tenant:5:alice/"),
        Json("tenant:5:alice"), Json("/")}) {
    SCOPED_TRACE(salt.dump());
    body["cache_salt"] = salt;
    lookup["cache_salt"] = salt;
    // Before Bob computes it under this salt, nothing is cached for him.
    EXPECT_EQ(ParseJson(Post(port, "/kv/lookup", lookup, bob).body)
                  .value("cached_tokens", -1),
              0);
    const Json theirs =
        ExpectCompletion(Post(port, "/v1/completions", body, bob), 2);
    EXPECT_EQ(
        theirs["usage"]["prompt_tokens_details"].value("cached_tokens", -1), 0);
  }
  // Roles.
  ExpectApiError(Post(port, "/kv/clear", Json::object(), bob), 403,
                 "a tenant clears the cache");
  ExpectApiError(Get(port, "/metrics", bob), 403, "a tenant's metrics");
  const Json mine = ParseJson(Get(port, "/kv/stats", bob).body);
  EXPECT_EQ(mine.value("tenant", ""), "bob") << mine.dump();
  EXPECT_EQ(mine.value("requests", 0), 5);
  EXPECT_FALSE(mine.contains("capacity_blocks")) << mine.dump();
  EXPECT_TRUE(
      ParseJson(Get(port, "/kv/stats", ops).body).contains("capacity_blocks"));
  EXPECT_EQ(Get(port, "/metrics", ops).status, 200);
  EXPECT_EQ(Post(port, "/kv/clear", Json::object(), ops).status, 200);
  // Keys are replaced while serving (SIGHUP): Bob's goes, Carol's comes.
  server->server().SetApiKeys(*ApiKeys::Parse("carol-key-0123456789 carol\n"));
  ExpectApiError(Get(port, "/v1/models", bob), 401, "a removed key");
  EXPECT_EQ(Get(port, "/v1/models",
                {{"Authorization", "Bearer carol-key-0123456789"}})
                .status,
            200);
}

// Browsers: a page of a foreign origin, or a form post, cannot drive the
// server; an allowed origin gets CORS headers and its preflight.
TEST_F(ServerTest, ForeignPagesCannotDriveTheServer) {
  httplib::Client c = NewClient(port_);
  auto clear = c.Post("/kv/clear", "{}", "text/plain");
  ASSERT_TRUE(clear);
  EXPECT_EQ(clear->status, 415) << clear->body;
  auto foreign = c.Post("/kv/clear", {{"Origin", "http://evil.example"}}, "{}",
                        "application/json");
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->status, 403) << foreign->body;
  auto get = c.Get("/kv/stats", {{"Origin", "http://evil.example"}});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 403);
  // A refused POST's body is read, not left in a keep-alive connection
  // to be taken for the client's next request.
  httplib::Client kept = NewClient(port_);
  kept.set_keep_alive(true);
  const std::string body = CompletionBody("keep alive", 2).dump();
  for (const auto& [headers, type, status] :
       {std::tuple(httplib::Headers{}, "text/plain", 415),
        std::tuple(httplib::Headers{{"Origin", "http://evil.example"}},
                   "application/json", 403)}) {
    auto refused = kept.Post("/v1/completions", headers, body, type);
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, status) << refused->body;
    auto next = kept.Post("/v1/completions", body, "application/json");
    ASSERT_TRUE(next);
    EXPECT_EQ(next->status, 200) << next->body;
  }

  ServerOptions so;
  so.port = 0;
  so.model_id = kModelId;
  so.cors_origins = {"http://localhost:3000"};
  auto server = RunningServer::Start(*model_, *scheduler_, *kv_, so);
  ASSERT_NE(server, nullptr);
  httplib::Client web = NewClient(server->port());
  const httplib::Headers origin = {{"Origin", "http://localhost:3000"},
                                   {"Access-Control-Request-Method", "POST"}};
  auto preflight = web.Options("/v1/completions", origin);
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_EQ(preflight->get_header_value("Access-Control-Allow-Origin"),
            "http://localhost:3000");
  EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Headers")
                .find("Content-Type"),
            std::string::npos);
  auto models = web.Get("/v1/models", origin);
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  EXPECT_EQ(models->get_header_value("Access-Control-Allow-Origin"),
            "http://localhost:3000");
  auto other = web.Get("/v1/models", {{"Origin", "http://localhost:3001"}});
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 403);
}

// A chat message that spells a control token gets its text tokenized, not
// the token: the user cannot end a turn or forge a role. A server told to
// trust its clients (--special-in-content) makes it the token, as before.
TEST_F(ServerTest, MessageTextNeverBecomesAControlToken) {
  const Tokenizer& tok = model_->tokenizer();
  const std::string eos = tok.piece(tok.eos());
  ASSERT_FALSE(eos.empty());
  const Json lookup = {
      {"messages",
       Json::array({{{"role", "user"}, {"content", "a" + eos + "b"}}})}};
  auto prompt_tokens = [&](int port) {
    return ParseJson(Post(port, "/kv/lookup", lookup).body)
        .value("prompt_tokens", -1);
  };
  ServerOptions so;
  so.port = 0;
  so.model_id = kModelId;
  so.special_tokens_in_content = true;
  auto trusting = RunningServer::Start(*model_, *scheduler_, *kv_, so);
  ASSERT_NE(trusting, nullptr);
  const int as_text = prompt_tokens(port_);
  const int as_token = prompt_tokens(trusting->port());
  // The token is one id; its text several.
  EXPECT_GT(as_text, as_token) << "eos piece '" << eos << "'";
  EXPECT_GT(as_token, 0);
}

// Limits before work: a prompt longer than the context could ever hold is
// refused before it is tokenized, and a deeply nested lookup body before it
// is parsed; the server keeps serving.
TEST_F(ServerTest, OversizedInputIsRefusedBeforeWork) {
  // Text the body limit lets through, far more than the context can hold.
  const std::string huge(kMaxBodyBytes - 1024, 'a');
  const HttpReply prompt =
      Post(port_, "/v1/completions", CompletionBody(huge, 2));
  ExpectApiError(prompt, 400, "a huge prompt", "prompt");
  // Refused by its byte count, not after tokenizing it.
  EXPECT_NE(prompt.body.find("bytes of text"), std::string::npos)
      << prompt.body;
  Json chat = ChatBody(huge, 2);
  ExpectApiError(Post(port_, "/v1/chat/completions", chat), 400,
                 "a huge message", "messages");
  ExpectApiError(
      Post(port_, "/kv/lookup", std::string(kMaxBodyBytes - 1024, '[')), 400,
      "a deeply nested lookup body");
  ExpectCompletion(
      Post(port_, "/v1/completions", CompletionBody("still serving", 2)), 2);
}

// 11. A full queue answers 429.

TEST_F(ServerTest, FullQueueAnswers429) {
  auto kv = NewKv(*model_);
  ASSERT_NE(kv, nullptr);
  SchedulerOptions sched_options;
  sched_options.max_running = 1;
  sched_options.max_queue = 1;
  auto scheduler = NewScheduler(*model_, *kv, sched_options);
  ASSERT_NE(scheduler, nullptr);
  ServerOptions so;
  so.port = 0;
  so.model_id = kModelId;
  auto server = RunningServer::Start(*model_, *scheduler, *kv, so);
  ASSERT_NE(server, nullptr);
  const int port = server->port();

  const int kRequests = 8;
  std::vector<HttpReply> replies(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      replies[i] =
          Post(port, "/v1/completions",
               CompletionBody(Words("queue-" + std::to_string(i), 20), 200));
    });
  }
  for (std::thread& t : threads) t.join();
  int rejected = 0;
  for (int i = 0; i < kRequests; ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    if (replies[i].status == 429) {
      ++rejected;
      ExpectApiError(replies[i], 429, "queue full");
    } else {
      ExpectCompletion(replies[i], 200);
    }
  }
  EXPECT_GE(rejected, 1);
  EXPECT_LE(rejected, kRequests - 1);
  // Rejections are counted.
  const Exposition e = ParsePrometheus(Get(port, "/metrics").body);
  EXPECT_EQ(Find(e, "kvstash_requests_rejected_total", {}).value_or(-1),
            rejected);
}

// 12. A client that disconnects mid-stream has its request cancelled.

// Connects to 127.0.0.1:port; -1 on failure.
int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

TEST_F(ServerTest, DisconnectMidStreamCancelsAndFreesBlocks) {
  const auto cancelled = [&] {
    return Find(Metrics(), "kvstash_requests_finished_total",
                {{"reason", "cancelled"}});
  };
  const std::optional<double> before = cancelled();
  ASSERT_TRUE(before.has_value());
  const Json stats_before = KvStats();
  const int64_t finished_before =
      stats_before["scheduler"].value("requests_finished", int64_t{-1});
  const int64_t generated_before =
      stats_before["scheduler"].value("generated_tokens", int64_t{-1});

  const std::string body =
      CompletionBody(Words("disconnect", 40), 400, /*stream=*/true).dump();
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\n"
      "Host: 127.0.0.1\r\n"
      "Content-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  const int fd = Connect(port_);
  ASSERT_GE(fd, 0) << "connect failed";
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n =
        ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    ASSERT_GT(n, 0) << "send failed";
    sent += size_t(n);
  }
  std::string received;
  char buf[4096];
  while (received.find("data:") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    received.append(buf, size_t(n));
  }
  ::close(fd);
  ASSERT_NE(received.find("data:"), std::string::npos)
      << "no stream data before the timeout: " << received;
  EXPECT_EQ(received.rfind("HTTP/1.1 200", 0), 0u) << received;

  // The request is cancelled and counted as such, and its blocks come back.
  const Clock::time_point deadline = Clock::now() + seconds(10);
  std::optional<double> now = cancelled();
  while (now.value_or(0) < *before + 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
    now = cancelled();
  }
  EXPECT_EQ(now.value_or(-1), *before + 1)
      << "the disconnect was not counted as a cancelled request";
  ExpectNoBlocksUsed(milliseconds(10000));
  // It ended early (cancelled), not after its 400 tokens.
  const Json s = KvStats();
  EXPECT_EQ(s["scheduler"].value("requests_finished", int64_t{-1}),
            finished_before + 1)
      << s.dump();
  EXPECT_LT(
      s["scheduler"].value("generated_tokens", int64_t{0}) - generated_before,
      400)
      << s.dump();
  // Still serving.
  ExpectCompletion(
      Post(port_, "/v1/completions", CompletionBody(Words("after", 10), 4)), 4);
}

// 13. A stop string ends the request as "stop", for the client and in the
// metrics.

// The bytes of `n` whole UTF-8 characters of `s` from the first character
// boundary at or after `from`.
std::string Utf8Chars(const std::string& s, size_t from, int n) {
  auto continuation = [&](size_t i) {
    return i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80;
  };
  while (continuation(from)) ++from;
  size_t end = from;
  for (int i = 0; i < n && end < s.size(); ++i) {
    ++end;
    while (continuation(end)) ++end;
  }
  return s.substr(from, end - from);
}

TEST_F(ServerTest, StopStringEndsTheRequestAsStop) {
  const std::string prompt = Words("stop-string", 50);
  const int kMax = 32;
  const Json whole = ExpectCompletion(
      Post(port_, "/v1/completions", CompletionBody(prompt, kMax)), kMax);
  ASSERT_TRUE(whole.contains("choices"));
  const std::string text = whole["choices"][0].value("text", "");
  ASSERT_GT(text.size(), 8u) << text;
  const std::string stop = Utf8Chars(text, text.size() / 2, 2);
  ASSERT_FALSE(stop.empty());
  const std::string expected = text.substr(0, text.find(stop));

  auto finished = [&](const char* reason) {
    return Find(Metrics(), "kvstash_requests_finished_total",
                {{"reason", reason}})
        .value_or(-1);
  };
  const double stop_before = finished("stop");
  const double cancelled_before = finished("cancelled");

  Json body = CompletionBody(prompt, kMax);
  body["stop"] = stop;
  const HttpReply r = Post(port_, "/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = ParseJson(r.body);
  ASSERT_TRUE(j.contains("choices")) << r.body;
  EXPECT_EQ(j["choices"][0].value("text", ""), expected);
  EXPECT_EQ(j["choices"][0].value("finish_reason", ""), "stop");

  body["stream"] = true;
  const Stream stream = ParseSse(Post(port_, "/v1/completions", body).body);
  EXPECT_TRUE(stream.done);
  std::string streamed;
  std::string reason;
  for (const Json& c : stream.chunks) {
    if (!c.contains("choices") || c["choices"].empty()) continue;
    const Json& ch = c["choices"][0];
    streamed += ch.value("text", "");
    if (ch["finish_reason"].is_string()) reason = ch["finish_reason"];
  }
  EXPECT_EQ(streamed, expected);
  EXPECT_EQ(reason, "stop");

  // Both requests ended at their stop string: finished as "stop", not as
  // cancelled (no client went away).
  ExpectNoBlocksUsed();
  EXPECT_EQ(finished("stop"), stop_before + 2);
  EXPECT_EQ(finished("cancelled"), cancelled_before);
}

// 14. Stop() is not lost when it comes before Serve() runs.

TEST_F(ServerTest, StopBeforeServeIsNotLost) {
  ServerOptions so;
  so.port = 0;
  auto server = HttpServer::Create(*model_, *scheduler_, *kv_, so);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  HttpServer& http = **server;
  http.Stop();  // e.g. a shutdown signal during start-up
  std::atomic<bool> returned{false};
  std::thread serving([&] {
    const Status ignored = http.Serve();
    (void)ignored;
    returned = true;
  });
  const Clock::time_point deadline = Clock::now() + seconds(5);
  while (!returned && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_TRUE(returned) << "Serve() kept serving after Stop()";
  // Unblock it if needed: once it runs, Stop() takes effect.
  const Clock::time_point give_up = Clock::now() + seconds(30);
  while (!returned) {
    if (Clock::now() > give_up) {
      std::fprintf(stderr, "Serve() ignores Stop(); aborting\n");
      std::abort();
    }
    http.Stop();
    std::this_thread::sleep_for(milliseconds(10));
  }
  serving.join();
}

// A server over a disk tier, restarted on the same directory: the second
// one reports the prompt's blocks as loaded from disk in the usage, in
// /kv/lookup, /kv/stats and /metrics.
TEST_F(ServerTest, DiskTierBreakdownOverHttp) {
  store::DiskTierOptions disk_options;
  disk_options.dir = testing::TempDir("server_disk_tier");
  const std::string prompt = Words("disk tier", 120);
  ServerOptions so;
  so.port = 0;
  so.model_id = kModelId;
  std::string cold_text;
  for (int round = 0; round < 2; ++round) {
    auto disk = store::DiskTier::Open(disk_options);
    ASSERT_TRUE(disk.ok()) << disk.status().ToString();
    auto kv = NewKv(*model_, {{disk->get()}});
    auto scheduler = NewScheduler(*model_, *kv, SchedulerOptions{});
    auto server = RunningServer::Start(*model_, *scheduler, *kv, so);
    ASSERT_NE(server, nullptr);
    const int port = server->port();
    const Json lookup =
        ParseJson(Post(port, "/kv/lookup", Json{{"prompt", prompt}}).body);
    const Json j = ExpectCompletion(
        Post(port, "/v1/completions", CompletionBody(prompt, 6)), 6);
    const Json& by_tier =
        j["usage"]["prompt_tokens_details"]["kvstash_cached_tokens_by_tier"];
    ASSERT_TRUE(by_tier.is_object()) << j.dump();
    if (round == 0) {
      EXPECT_EQ(CachedTokens(j), 0);
      EXPECT_EQ(lookup["cached_tokens_by_tier"].value("disk", -1), 0);
      cold_text = j["choices"][0]["text"];
      continue;
    }
    const int cached = CachedTokens(j);
    EXPECT_GT(cached, 0) << j.dump();
    EXPECT_EQ(by_tier.value("disk", -1), cached) << j.dump();
    EXPECT_EQ(by_tier.value("dram", -1), 0) << j.dump();
    EXPECT_GE(lookup["cached_tokens_by_tier"].value("disk", -1), cached)
        << lookup.dump();
    EXPECT_EQ(j["choices"][0]["text"], cold_text);
    const Json stats = ParseJson(Get(port, "/kv/stats").body);
    ASSERT_EQ(stats["tiers"].size(), 1u) << stats.dump();
    EXPECT_EQ(stats["tiers"][0].value("name", ""), "disk");
    EXPECT_EQ(stats["tiers"][0].value("loaded_blocks", -1),
              cached / kBlockTokens);
    const Exposition e = ParsePrometheus(Get(port, "/metrics").body);
    EXPECT_EQ(Find(e, "kvstash_tier_loaded_blocks_total", {{"tier", "disk"}}),
              double(cached / kBlockTokens));
    EXPECT_EQ(
        Find(e, "kvstash_tier_cached_prompt_tokens_total", {{"tier", "disk"}}),
        double(cached));
    EXPECT_GE(Find(e, "kvstash_tier_load_seconds_count", {{"tier", "disk"}})
                  .value_or(0),
              1.0);
  }
}

// ---------------------------------------------------------------------------
// OpenAI's sampling and scoring options: logprobs, echo, n, best_of,
// penalties, logit_bias, stop ids, seed.

// The prompt's log-probabilities (echo + logprobs, max_tokens 0) are the ones
// `kvstash perplexity` computes for the same tokens, cold and with the
// prompt cached (a cached prompt is computed again for them).
TEST_F(ServerTest, EchoLogprobsArePerplexityColdAndCached) {
  std::vector<int32_t> ids =
      model_->tokenizer().Encode(Words("echo-logprobs", 120), true);
  ids.resize(100);
  const std::vector<int32_t> text(ids.begin() + 1, ids.end());
  Transformer tf(*model_);
  auto ppl = Perplexity(tf, text, int(ids.size()), 1, {}, {});
  ASSERT_TRUE(ppl.ok()) << ppl.status().ToString();
  const Json body = {
      {"prompt", ids}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 2}};
  std::vector<double> first;
  for (const char* round : {"cold", "cached"}) {
    SCOPED_TRACE(round);
    const HttpReply r = Post(port_, "/v1/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    const Json j = ParseJson(r.body);
    const Json& c = j["choices"][0];
    EXPECT_EQ(c["finish_reason"], "length");
    EXPECT_EQ(j["usage"]["completion_tokens"], 0);
    EXPECT_EQ(c["text"], model_->tokenizer().Decode(ids));
    const Json& lp = c["logprobs"];
    ASSERT_EQ(lp["token_logprobs"].size(), ids.size());
    EXPECT_TRUE(lp["token_logprobs"][0].is_null());
    EXPECT_TRUE(lp["top_logprobs"][0].is_null());
    double nll = 0;
    std::vector<double> lps;
    size_t offset = 0;
    for (size_t p = 0; p < ids.size(); ++p) {
      EXPECT_EQ(lp["text_offset"][p], offset) << p;
      offset += lp["tokens"][p].get<std::string>().size();
      if (p == 0) continue;
      lps.push_back(lp["token_logprobs"][p].get<double>());
      nll -= lps.back();
      EXPECT_EQ(lp["top_logprobs"][p].size(), 2u) << p;
    }
    EXPECT_NEAR(nll / double(ids.size() - 1), ppl->nll, 1e-4);
    if (first.empty()) {
      first = lps;
      // Cache the prompt: the next echo finds it cached.
      ExpectCompletion(Post(port_, "/v1/completions",
                            Json{{"prompt", ids},
                                 {"max_tokens", 2},
                                 {"temperature", 0},
                                 {"model", kModelId}}),
                       2);
    } else {
      for (size_t i = 0; i < lps.size(); ++i) {
        EXPECT_NEAR(lps[i], first[i], 1e-4) << i;
      }
    }
  }
}

// n choices of one prompt: one prefill (the prompt's blocks allocated once),
// greedy choices equal, streamed choices equal the non-streamed ones, and
// each generated token's logprob is its top alternative's.
TEST_F(ServerTest, ChoicesShareOnePrefill) {
  const std::string prompt = Words("choices", 300);
  const int n_prompt = PromptTokens(prompt);
  const int kMax = 12;
  Json body = CompletionBody(prompt, kMax);
  body["n"] = 8;
  body["logprobs"] = 1;
  const uint64_t before = KvStats().value("allocations", uint64_t{0});
  const HttpReply r = Post(port_, "/v1/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  const uint64_t allocations =
      KvStats().value("allocations", uint64_t{0}) - before;
  const int prompt_blocks = (n_prompt + kBlockTokens - 1) / kBlockTokens;
  // The prompt's blocks once; per choice a copy of the partial block and
  // at most 2 blocks for its 12 tokens (8 prefills: 8x the prompt's).
  EXPECT_LE(allocations, uint64_t(prompt_blocks + 8 * 3));
  const Json j = ParseJson(r.body);
  ASSERT_EQ(j["choices"].size(), 8u);
  EXPECT_EQ(j["usage"]["prompt_tokens"], n_prompt);
  EXPECT_EQ(j["usage"]["completion_tokens"], 8 * kMax);
  for (int i = 0; i < 8; ++i) {
    const Json& c = j["choices"][i];
    EXPECT_EQ(c["index"], i);
    EXPECT_EQ(c["text"], j["choices"][0]["text"]);  // greedy
    const Json& lp = c["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), size_t(kMax));
    for (size_t t = 0; t < size_t(kMax); ++t) {
      const Json& top = lp["top_logprobs"][t];
      ASSERT_EQ(top.size(), 1u);
      EXPECT_EQ(top.begin().value(), lp["token_logprobs"][t]);
    }
  }
  ExpectNoBlocksUsed();

  // Streamed, two choices: each index's chunks add up to its text.
  Json stream = CompletionBody(prompt, kMax, /*stream=*/true);
  stream["n"] = 2;
  const HttpReply s = Post(port_, "/v1/completions", stream);
  ASSERT_EQ(s.status, 200) << s.body;
  std::vector<std::string> texts(2);
  std::vector<int> finals(2, 0);
  for (const Json& chunk : ParseSse(s.body).chunks) {
    ASSERT_EQ(chunk["choices"].size(), 1u) << chunk.dump();
    const Json& c = chunk["choices"][0];
    const int i = c["index"].get<int>();
    ASSERT_TRUE(i == 0 || i == 1) << chunk.dump();
    texts[size_t(i)] += c["text"].get<std::string>();
    finals[size_t(i)] += !c["finish_reason"].is_null();
  }
  EXPECT_EQ(finals, (std::vector<int>{1, 1}));
  EXPECT_EQ(texts[0], j["choices"][0]["text"]);
  EXPECT_EQ(texts[1], j["choices"][0]["text"]);
}

// Sampled choices: the same seed gives the same choices; choice i is the
// single request with seed + i; best_of returns n of its choices.
TEST_F(ServerTest, SeedsChoicesAndBestOf) {
  const std::string prompt = Words("seeds", 40);
  auto sampled = [&](int seed, int n, int best_of) {
    Json b = CompletionBody(prompt, 16);
    b["temperature"] = 1.5;
    b["seed"] = seed;
    b["n"] = n;
    if (best_of > 0) b["best_of"] = best_of;
    const HttpReply r = Post(port_, "/v1/completions", b);
    EXPECT_EQ(r.status, 200) << r.body;
    std::vector<std::string> texts;
    const Json j = ParseJson(r.body);
    EXPECT_TRUE(j.contains("choices")) << r.body;
    for (const Json& c : j["choices"]) {
      texts.push_back(c["text"].get<std::string>());
    }
    return texts;
  };
  const std::vector<std::string> three = sampled(77, 3, 0);
  ASSERT_EQ(three.size(), 3u);
  EXPECT_EQ(sampled(77, 3, 0), three);
  EXPECT_NE(three[0], three[1]);
  EXPECT_EQ(sampled(78, 1, 0), std::vector<std::string>{three[1]});
  EXPECT_EQ(sampled(79, 1, 0), std::vector<std::string>{three[2]});
  const std::vector<std::string> best = sampled(77, 2, 3);
  ASSERT_EQ(best.size(), 2u);
  for (const std::string& t : best) {
    EXPECT_NE(std::find(three.begin(), three.end(), t), three.end()) << t;
  }
}

// logit_bias, penalties and stop ids change what is sampled as OpenAI's
// definitions say; chat gets logprobs in its shape.
TEST_F(ServerTest, BiasPenaltiesStopIdsAndChatLogprobs) {
  const std::string prompt = Words("bias", 40);
  const std::vector<int32_t> ids = model_->tokenizer().Encode(prompt, true);
  Json b = CompletionBody(prompt, 8);
  b["logprobs"] = 0;
  const Json plain = ExpectCompletion(Post(port_, "/v1/completions", b), 8);
  const std::string first_token =
      plain["choices"][0]["logprobs"]["tokens"][0].get<std::string>();
  // Token 1000's text, 8 times.
  const Tokenizer& tok = model_->tokenizer();
  b["logit_bias"] = {{"1000", 100}};
  const Json forced = ExpectCompletion(Post(port_, "/v1/completions", b), 8);
  const Json& forced_tokens = forced["choices"][0]["logprobs"]["tokens"];
  EXPECT_EQ(forced_tokens[0], tok.DecodeToken(ids.back(), 1000));
  for (size_t i = 1; i < forced_tokens.size(); ++i) {
    EXPECT_EQ(forced_tokens[i], tok.DecodeToken(1000, 1000));
  }
  // -100 on the greedy first token (every id of its text): another one
  // comes first.
  std::vector<int32_t> first_ids;
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    if (tok.DecodeToken(ids.back(), id) == first_token) first_ids.push_back(id);
  }
  ASSERT_FALSE(first_ids.empty());
  ASSERT_LE(first_ids.size(), 64u);
  b["logit_bias"] = Json::object();
  for (int32_t id : first_ids) b["logit_bias"][std::to_string(id)] = -100;
  const Json other = ExpectCompletion(Post(port_, "/v1/completions", b), 8);
  EXPECT_NE(other["choices"][0]["logprobs"]["tokens"][0], first_token);
  // A frequency penalty of 2 never lets a token repeat much in greedy text.
  Json pen = CompletionBody(prompt, 40);
  pen["frequency_penalty"] = 2.0;
  pen["presence_penalty"] = 2.0;
  EXPECT_EQ(Post(port_, "/v1/completions", pen).status, 200);
  pen["presence_penalty"] = 2.5;
  EXPECT_EQ(Post(port_, "/v1/completions", pen).status, 400);
  // A stop id ends the choice as "stop", before that token.
  Json stop = CompletionBody(prompt, 8);
  stop["stop_token_ids"] = first_ids;
  const HttpReply sr = Post(port_, "/v1/completions", stop);
  ASSERT_EQ(sr.status, 200) << sr.body;
  const Json stopped = ParseJson(sr.body);
  EXPECT_EQ(stopped["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(stopped["choices"][0]["text"], "");
  // Ids outside the vocabulary are named.
  b["logit_bias"] = {{"999999", 1}};
  EXPECT_EQ(ParseJson(Post(port_, "/v1/completions", b).body)["error"]["param"],
            "logit_bias");
  stop["stop_token_ids"] = {999999};
  EXPECT_EQ(
      ParseJson(Post(port_, "/v1/completions", stop).body)["error"]["param"],
      "stop_token_ids");

  Json chat = ChatBody(Words("chat-logprobs", 20), 6);
  chat["logprobs"] = true;
  chat["top_logprobs"] = 3;
  const HttpReply cr = Post(port_, "/v1/chat/completions", chat);
  ASSERT_EQ(cr.status, 200) << cr.body;
  const Json content = ParseJson(cr.body)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 6u);
  std::string joined;
  for (const Json& t : content) {
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);  // greedy
    std::string bytes;
    for (const Json& byte : t["bytes"]) bytes += char(byte.get<int>());
    joined += bytes;
  }
  const std::string message =
      ParseJson(cr.body)["choices"][0]["message"]["content"];
  if (message.find("\xef\xbf\xbd") == std::string::npos) {
    EXPECT_EQ(joined, message);  // (bytes a token splits are replaced there)
  }
}

// GET /dashboard: a page with no data, for anyone; GET /dashboard/data: the
// cache as the page draws it, for admins only.
TEST_F(ServerTest, DashboardDataIsAdminOnlyAndFollowsTheCache) {
  auto server = StartKeyed(
      "dash-alice-0123456789 alice\n"
      "dash-ops-0123456789 ops admin\n");
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  const httplib::Headers alice = {{"Authorization",
                                   "Bearer dash-alice-0123456789"}},
                         ops = {
                             {"Authorization", "Bearer dash-ops-0123456789"}};
  // The page: served without a key, self-contained, locked down by its CSP.
  httplib::Client c = NewClient(port);
  auto page = c.Get("/dashboard");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_LT(page->body.size(), size_t{200} << 10);
  EXPECT_NE(page->body.find("/dashboard/data"), std::string::npos);
  EXPECT_EQ(page->body.find("src=\"http"), std::string::npos);
  const std::string csp = page->get_header_value("Content-Security-Policy");
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("script-src 'sha256-"), std::string::npos) << csp;
  EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos) << csp;
  // The data: admins only.
  ExpectApiError(Get(port, "/dashboard/data"), 401, "dashboard without a key");
  ExpectApiError(Get(port, "/dashboard/data", alice), 403,
                 "a tenant's dashboard");
  ASSERT_EQ(Post(port, "/kv/clear", Json::object(), ops).status, 200);
  const Json before = ParseJson(Get(port, "/dashboard/data", ops).body);
  ASSERT_TRUE(before.is_object());

  const std::string prompt = Words("dashboard-hot", 80);
  const int n = PromptTokens(prompt);
  const Json body = CompletionBody(prompt, 2);
  for (int i = 0; i < 3; ++i) {
    ExpectCompletion(Post(port, "/v1/completions", body, alice), 2);
  }
  ExpectNoBlocksUsed();
  const HttpReply r = Get(port, "/dashboard/data", ops);
  ASSERT_EQ(r.status, 200) << r.body;
  const Json d = ParseJson(r.body);
  ASSERT_TRUE(d.is_object()) << r.body;
  EXPECT_EQ(d.value("model", ""), kModelId);
  const Json& kv = d["kv"];
  EXPECT_EQ(kv["used_blocks"].get<size_t>() +
                kv["cached_blocks"].get<size_t>() +
                kv["free_blocks"].get<size_t>(),
            kv["capacity_blocks"].get<size_t>());
  EXPECT_GE(kv["cached_blocks"].get<int>(), n / kBlockTokens);
  EXPECT_EQ(kv["block_tokens"].get<int>(), kBlockTokens);
  EXPECT_EQ(kv["queried_tokens"].get<int>() -
                before["kv"]["queried_tokens"].get<int>(),
            3 * n);
  EXPECT_EQ(kv["hit_tokens"].get<int>() - before["kv"]["hit_tokens"].get<int>(),
            2 * FullHit(n));
  const Json& rq = d["requests"];
  EXPECT_EQ(
      rq["finished"].get<int>() - before["requests"]["finished"].get<int>(), 3);
  EXPECT_EQ(rq["running"].get<int>(), 0);
  EXPECT_EQ(rq["waiting"].get<int>(), 0);
  // The hottest prefix: the prompt's full blocks, hit twice, its first words.
  ASSERT_EQ(d["hottest"].size(), 1u) << d["hottest"].dump();
  const Json& hot = d["hottest"][0];
  EXPECT_EQ(hot["tokens"].get<int>(), n / kBlockTokens * kBlockTokens);
  EXPECT_EQ(hot["hits"].get<int>(), 2);
  EXPECT_FALSE(hot["in_use"].get<bool>());
  EXPECT_TRUE(hot["tiers"].empty());
  EXPECT_EQ(hot["first_tokens"].size(), size_t(kBlockTokens));
  const std::string text = hot["text"].get<std::string>();
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(prompt.substr(0, text.size()), text);
  EXPECT_TRUE(d["tiers"].empty());
  // Latency histograms: per-bucket counts, one past the last bound.
  for (const char* name : {"ttft", "itl"}) {
    SCOPED_TRACE(name);
    const Json& h = d[name];
    ASSERT_EQ(h["counts"].size(), h["le"].size() + 1);
    uint64_t total = 0;
    for (const Json& count : h["counts"]) total += count.get<uint64_t>();
    EXPECT_EQ(total, h["count"].get<uint64_t>());
  }
  // Each server counts its own requests' latencies.
  EXPECT_EQ(d["ttft"]["count"].get<int>(), 3);
}

}  // namespace
}  // namespace kvstash
