#include "bench/load_bench.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string_view>
#include <thread>

#include "bench/requests.h"

namespace kvstash::bench {
namespace {

using Json = nlohmann::json;

// How much of a body a failure's example keeps.
constexpr size_t kExampleBytes = 300;

std::string Dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------
// The server.

struct Target {
  std::string host;
  int port = 0;
};

Result<Target> ParseUrl(const std::string& url) {
  const auto invalid = [&] {
    return Status::InvalidArgument(
        "bench load: the URL must be "
        "http://HOST:PORT, not '" +
        url + "'");
  };
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) return invalid();
  std::string rest = url.substr(kScheme.size());
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || rest.find('/') != std::string::npos) {
    return invalid();
  }
  Target t;
  t.host = rest.substr(0, colon);
  if (t.host.size() > 2 && t.host.front() == '[' && t.host.back() == ']') {
    t.host = t.host.substr(1, t.host.size() - 2);  // [::1]
  }
  const std::string port = rest.substr(colon + 1);
  if (t.host.empty() || port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    return invalid();
  }
  t.port = std::stoi(port);
  if (t.port < 1 || t.port > 65535) return invalid();
  return t;
}

std::unique_ptr<httplib::Client> Connect(const Target& t, double timeout_s,
                                         bool keep_alive) {
  auto c = std::make_unique<httplib::Client>(t.host, t.port);
  const time_t sec = time_t(timeout_s);
  const time_t usec = time_t((timeout_s - double(sec)) * 1e6);
  c->set_connection_timeout(sec, usec);
  c->set_read_timeout(sec, usec);
  c->set_write_timeout(sec, usec);
  c->set_keep_alive(keep_alive);
  return c;
}

httplib::Headers AuthHeaders(const std::string& key) {
  if (key.empty()) return {};
  return {{"Authorization", "Bearer " + key}};
}

// What a request that got no (whole) response ran into. `silent_s`: how
// long nothing had arrived when it failed.
std::string TransportKind(httplib::Error e, double silent_s, double timeout_s) {
  switch (e) {
    case httplib::Error::Connection:
      return "connect";
    case httplib::Error::ConnectionTimeout:
      return "timeout";
    case httplib::Error::Read:
    case httplib::Error::Write:
      return silent_s >= 0.99 * timeout_s ? "timeout" : "connection lost";
    default:
      return httplib::to_string(e);
  }
}

// ---------------------------------------------------------------------------
// Prompts.

constexpr const char* kBuiltinWords[] = {
    "the",     "little", "dog",      "ran",     "across",    "a",
    "green",   "field",  "while",    "bright",  "sun",       "was",
    "shining", "over",   "old",      "river",   "and",       "children",
    "played",  "with",   "red",      "ball",    "near",      "tall",
    "trees",   "where",  "birds",    "sang",    "songs",     "about",
    "summer",  "rain",   "house",    "window",  "quiet",     "garden",
    "flower",  "stone",  "bridge",   "morning", "night",     "moon",
    "cat",     "slept",  "warm",     "blanket", "kitchen",   "bread",
    "apple",   "forest", "path",     "friend",  "story",     "happy",
    "small",   "boat",   "mountain", "letter",  "teacher",   "market",
    "winter",  "lamp",   "painted",  "yellow",  "whispered", "carried",
    "every",   "under",  "because",  "before",  "after",     "thought"};

// The words prompts are made of: a text's, in order, or the built-in ones,
// drawn at random.
class Corpus {
 public:
  explicit Corpus(const std::string& text) {
    size_t i = 0;
    while (i < text.size()) {
      const size_t start = text.find_first_not_of(" \t\r\n\f\v", i);
      if (start == std::string::npos) break;
      size_t end = text.find_first_of(" \t\r\n\f\v", start);
      if (end == std::string::npos) end = text.size();
      words_.push_back(text.substr(start, end - start));
      i = end;
    }
  }

  bool from_text() const { return !words_.empty(); }

  // `n` words: consecutive words of the text from a random place
  // (wrapping), or random built-in words.
  std::string Passage(std::mt19937_64& rng, int n) const {
    std::string s;
    const size_t first = from_text() ? rng() % words_.size() : 0;
    for (int i = 0; i < n; ++i) {
      if (i > 0) s += ' ';
      s += from_text() ? words_[(first + size_t(i)) % words_.size()]
                       : kBuiltinWords[rng() % std::size(kBuiltinWords)];
    }
    return s;
  }

 private:
  std::vector<std::string> words_;
};

// ---------------------------------------------------------------------------
// Requests.

// One request as sent.
struct Call {
  std::string path;
  std::string content_type = "application/json";
  std::string body;
  httplib::Headers headers;
};

constexpr const char* kCompletions = "/v1/completions";
constexpr const char* kChat = "/v1/chat/completions";

bool Chance(std::mt19937_64& rng, double p) {
  return std::bernoulli_distribution(p)(rng);
}

// A well-formed body: `context` (a shared document or a passage of its own)
// then `question`.
Json WellFormedBody(bool chat, const std::string& context,
                    const std::string& question, int max_tokens, bool stream,
                    std::mt19937_64& rng) {
  Json b;
  if (chat) {
    b["messages"] = Json::array({{{"role", "system"}, {"content", context}},
                                 {{"role", "user"}, {"content", question}}});
    b["max_completion_tokens"] = max_tokens;
  } else {
    b["prompt"] = context + "\nQuestion: " + question + "\nAnswer:";
    b["max_tokens"] = max_tokens;
  }
  if (Chance(rng, 0.5)) {
    b["temperature"] = 0;
  } else {
    b["temperature"] = 0.8;
    b["seed"] = rng() >> 1;
  }
  if (stream) {
    b["stream"] = true;
    b["stream_options"] = {{"include_usage", true}};
  }
  return b;
}

enum class Bad {
  kMalformedJson,
  kNotAnObject,
  kWrongContentType,
  kWrongType,
  kOutOfRange,
  kOversizedMaxTokens,
  kUnsupportedParameter,
  kMissingPrompt,
  kUnknownRole,
  kStreamOptionsWithoutStream,
  kInvalidTokenId,
  kUnknownRoute,
  kWrongKey,  // last: only to a server that checks keys
};
constexpr int kBadKinds = int(Bad::kWrongKey) + 1;

const char* BadName(Bad b) {
  switch (b) {
    case Bad::kMalformedJson:
      return "malformed JSON";
    case Bad::kNotAnObject:
      return "not a JSON object";
    case Bad::kWrongContentType:
      return "wrong content type";
    case Bad::kWrongType:
      return "wrong type";
    case Bad::kOutOfRange:
      return "value out of range";
    case Bad::kOversizedMaxTokens:
      return "oversized max_tokens";
    case Bad::kUnsupportedParameter:
      return "unsupported parameter";
    case Bad::kMissingPrompt:
      return "missing prompt";
    case Bad::kUnknownRole:
      return "unknown role";
    case Bad::kStreamOptionsWithoutStream:
      return "stream_options without stream";
    case Bad::kInvalidTokenId:
      return "invalid token id";
    case Bad::kUnknownRoute:
      return "unknown route";
    case Bad::kWrongKey:
      return "wrong API key";
  }
  return "";
}

// A request the server must refuse with a 4xx, made from a well-formed
// completion or chat body (`chat` picks which).
Call BadCall(Bad kind, Json body, bool chat, const httplib::Headers& auth) {
  Call c{chat ? kChat : kCompletions, "application/json", "", auth};
  switch (kind) {
    case Bad::kMalformedJson:
      c.body = Dump(body);
      c.body.pop_back();  // the closing brace
      return c;
    case Bad::kNotAnObject:
      c.body = Dump(Json::array({body}));
      return c;
    case Bad::kWrongContentType:
      c.content_type = "text/plain";
      break;
    case Bad::kWrongType:
      body[chat ? "messages" : "prompt"] = 42;
      break;
    case Bad::kOutOfRange:
      body["temperature"] = 7.5;
      break;
    case Bad::kOversizedMaxTokens:
      body.erase("max_completion_tokens");
      body["max_tokens"] = 1 << 30;
      break;
    case Bad::kUnsupportedParameter:
      body["response_format"] = {{"type", "json_object"}};
      break;
    case Bad::kMissingPrompt:
      body.erase(chat ? "messages" : "prompt");
      break;
    case Bad::kUnknownRole:
      c.path = kChat;
      body.erase("prompt");
      body["messages"] = Json::array({{{"role", "robot"}, {"content", "hi"}}});
      break;
    case Bad::kStreamOptionsWithoutStream:
      body["stream"] = false;
      body["stream_options"] = {{"include_usage", true}};
      break;
    case Bad::kInvalidTokenId:
      c.path = kCompletions;
      body.erase("messages");
      body["prompt"] = Json::array({1, -5, 2});
      break;
    case Bad::kUnknownRoute:
      c.path = "/v1/completion";
      break;
    case Bad::kWrongKey:
      c.headers = AuthHeaders("not-the-key");
      break;
  }
  c.body = Dump(body);
  return c;
}

// The text a chunk or response carries: choices[0].text (completions) or
// choices[0].delta.content / .message.content (chat; absent content is "").
// nullopt when the shape is wrong; a chunk with no choices (the usage
// chunk) carries "".
std::optional<std::string> ChoiceText(const Json& j, bool chat,
                                      const char* chat_field) {
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array()) {
    return std::nullopt;
  }
  if (j["choices"].empty()) return std::string();
  const Json& c = j["choices"][0];
  if (!c.is_object()) return std::nullopt;
  if (!chat) {
    if (!c.contains("text") || !c["text"].is_string()) return std::nullopt;
    return c["text"].get<std::string>();
  }
  if (!c.contains(chat_field) || !c[chat_field].is_object()) {
    return std::nullopt;
  }
  const Json& m = c[chat_field];
  if (!m.contains("content") || m["content"].is_null()) return std::string();
  if (!m["content"].is_string()) return std::nullopt;
  return m["content"].get<std::string>();
}

// Splits a Server-Sent Events body into the payloads of its events as bytes
// arrive: every event must be one "data: <payload>" line ended by a blank
// line.
class SseReader {
 public:
  // Appends `bytes` and moves the payloads of the events they complete to
  // *events. False once the stream is malformed (why()).
  bool Feed(std::string_view bytes, std::vector<std::string>* events) {
    buffer_.append(bytes);
    size_t pos = 0;
    for (size_t end; (end = buffer_.find("\n\n", pos)) != std::string::npos;
         pos = end + 2) {
      const std::string_view event(buffer_.data() + pos, end - pos);
      if (event.rfind("data: ", 0) != 0 ||
          event.find('\n') != std::string_view::npos) {
        why_ = "not one data line: " + std::string(event.substr(0, 80));
        return false;
      }
      events->emplace_back(event.substr(6));
    }
    buffer_.erase(0, pos);
    return true;
  }
  bool pending() const { return !buffer_.empty(); }
  const std::string& why() const { return why_; }

 private:
  std::string buffer_;
  std::string why_;
};

// ---------------------------------------------------------------------------
// Clients.

// Counters every client adds to and the progress line reads.
struct Counters {
  std::atomic<uint64_t> ok{0}, streamed_ok{0}, cancelled{0}, failed{0};
  std::atomic<uint64_t> bad_refused{0}, bad_accepted{0}, bad_failed{0};
};

// What one client saw, merged at the end.
struct Tally {
  std::map<std::string, LoadFailure> failures;
  std::map<std::string, uint64_t> bad_accepted_kinds;
  std::vector<double> ttft, latency, itl;
  uint64_t completion_tokens = 0, prompt_tokens = 0, cached_tokens = 0;

  void Fail(const std::string& kind, const std::string& example) {
    LoadFailure& f = failures[kind];
    if (f.count++ == 0) f.example = example.substr(0, kExampleBytes);
  }
  // Adds a usage object's counts; false when it is not one.
  bool AddUsage(const Json& usage) {
    if (!usage.is_object() || !usage.contains("completion_tokens") ||
        !usage["completion_tokens"].is_number_integer() ||
        !usage.contains("prompt_tokens") ||
        !usage["prompt_tokens"].is_number_integer()) {
      return false;
    }
    completion_tokens += usage["completion_tokens"].get<uint64_t>();
    prompt_tokens += usage["prompt_tokens"].get<uint64_t>();
    const Json details = usage.value("prompt_tokens_details", Json::object());
    if (details.is_object() && details.contains("cached_tokens") &&
        details["cached_tokens"].is_number_integer()) {
      cached_tokens += details["cached_tokens"].get<uint64_t>();
    }
    return true;
  }
  void Merge(Tally&& o) {
    for (auto& [kind, f] : o.failures) {
      LoadFailure& mine = failures[kind];
      if (mine.count == 0) mine.example = std::move(f.example);
      mine.count += f.count;
    }
    for (const auto& [kind, n] : o.bad_accepted_kinds) {
      bad_accepted_kinds[kind] += n;
    }
    ttft.insert(ttft.end(), o.ttft.begin(), o.ttft.end());
    latency.insert(latency.end(), o.latency.begin(), o.latency.end());
    itl.insert(itl.end(), o.itl.begin(), o.itl.end());
    completion_tokens += o.completion_tokens;
    prompt_tokens += o.prompt_tokens;
    cached_tokens += o.cached_tokens;
  }
};

// Client `index`'s choices, from the run's seed.
std::mt19937_64 ClientRng(uint64_t seed, int index) {
  std::seed_seq s{uint32_t(seed), uint32_t(seed >> 32), uint32_t(index)};
  return std::mt19937_64(s);
}

// One client thread: its connection, its random choices, its tally.
class Client {
 public:
  Client(const LoadBenchOptions& o, const Target& target, const Corpus& corpus,
         const std::vector<std::string>& documents, Counters& counters,
         bool keys_checked, int index)
      : o_(o),
        corpus_(corpus),
        documents_(documents),
        counters_(counters),
        http_(Connect(target, o.timeout_s, /*keep_alive=*/true)),
        auth_(AuthHeaders(o.api_key)),
        keys_checked_(keys_checked),
        rng_(ClientRng(o.seed, index)) {}

  void Run(Clock::time_point deadline) {
    while (Clock::now() < deadline) {
      const bool chat = Chance(rng_, o_.chat_share);
      const bool stream = Chance(rng_, o_.stream_share);
      const std::string context = Chance(rng_, o_.unique_share)
                                      ? corpus_.Passage(rng_, o_.document_words)
                                      : documents_[rng_() % documents_.size()];
      const std::string question =
          corpus_.Passage(rng_, o_.question_words) + "?";
      Json body =
          WellFormedBody(chat, context, question, o_.max_tokens, stream, rng_);
      if (Chance(rng_, o_.bad_share)) {
        const int kinds = keys_checked_ ? kBadKinds : kBadKinds - 1;
        const Bad kind = Bad(rng_() % kinds);
        SendBad(BadCall(kind, std::move(body), chat, auth_), BadName(kind));
      } else if (stream) {
        SendStreamed(chat, Dump(body), Chance(rng_, o_.cancel_share));
      } else {
        SendWhole(chat, Dump(body));
      }
    }
  }

  Tally& tally() { return tally_; }

 private:
  void Failed(const std::string& kind, const std::string& example) {
    tally_.Fail(kind, example);
    ++counters_.failed;
  }

  void SendWhole(bool chat, const std::string& body) {
    const Clock::time_point start = Clock::now();
    const httplib::Result r = http_->Post(chat ? kChat : kCompletions, auth_,
                                          body, "application/json");
    const double seconds = Seconds(start, Clock::now());
    if (!r) {
      return Failed(TransportKind(r.error(), seconds, o_.timeout_s),
                    httplib::to_string(r.error()));
    }
    if (r->status != 200) {
      return Failed("http " + std::to_string(r->status), r->body);
    }
    const Json j = Json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    if (!ChoiceText(j, chat, "message") || j["choices"].empty() ||
        !j.contains("usage") || !tally_.AddUsage(j["usage"])) {
      return Failed("malformed JSON", r->body);
    }
    tally_.latency.push_back(seconds);
    ++counters_.ok;
  }

  void SendStreamed(bool chat, const std::string& body, bool cancel) {
    httplib::Request req;
    req.method = "POST";
    req.path = chat ? kChat : kCompletions;
    req.headers = auth_;
    req.set_header("Content-Type", "application/json");
    req.body = body;
    int status = 0;
    std::string error_body, malformed, error_event;
    SseReader sse;
    Json usage;
    int chunks = 0;
    bool done = false, cancelled = false;
    const Clock::time_point start = Clock::now();
    Clock::time_point last_text = start, last_bytes = start;
    std::vector<double> itl;
    std::optional<double> ttft;
    req.response_handler = [&](const httplib::Response& res) {
      status = res.status;
      if (status == 200 &&
          res.get_header_value("Content-Type").rfind("text/event-stream", 0) !=
              0) {
        malformed = "Content-Type " + res.get_header_value("Content-Type");
        return false;
      }
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      const Clock::time_point now = Clock::now();
      last_bytes = now;
      if (status != 200) {
        error_body.append(data, n);
        return true;
      }
      std::vector<std::string> events;
      if (!sse.Feed(std::string_view(data, n), &events)) {
        malformed = sse.why();
        return false;
      }
      for (const std::string& e : events) {
        if (done) {
          malformed = "an event after [DONE]: " + e;
          return false;
        }
        if (e == "[DONE]") {
          done = true;
          continue;
        }
        const Json j = Json::parse(e, nullptr, /*allow_exceptions=*/false);
        if (j.is_object() && j.contains("error")) {
          error_event = e;
          return false;
        }
        const std::optional<std::string> text = ChoiceText(j, chat, "delta");
        if (!text) {
          malformed = "not a chunk: " + e;
          return false;
        }
        if (j.contains("usage") && !j["usage"].is_null()) usage = j["usage"];
        if (text->empty()) continue;
        if (ttft) {
          itl.push_back(Seconds(last_text, now));
        } else {
          ttft = Seconds(start, now);
        }
        last_text = now;
        if (++chunks == o_.cancel_after && cancel) {
          cancelled = true;
          return false;  // closes the connection
        }
      }
      return true;
    };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    const bool sent = http_->send(req, res, error);
    // A stream that produced text counts its latencies whatever its end.
    if (ttft) tally_.ttft.push_back(*ttft);
    tally_.itl.insert(tally_.itl.end(), itl.begin(), itl.end());
    if (cancelled) {
      tally_.completion_tokens += uint64_t(chunks);
      ++counters_.cancelled;
      return;
    }
    if (!malformed.empty()) return Failed("malformed SSE", malformed);
    if (!error_event.empty()) return Failed("error event", error_event);
    if (!sent) {
      return Failed(
          TransportKind(error, Seconds(last_bytes, Clock::now()), o_.timeout_s),
          httplib::to_string(error) + " after " + std::to_string(chunks) +
              " chunks");
    }
    if (status != 200) {
      return Failed("http " + std::to_string(status), error_body);
    }
    if (!done || sse.pending()) {
      return Failed("malformed SSE", "the stream ended without data: [DONE]");
    }
    if (!tally_.AddUsage(usage)) {
      return Failed("malformed SSE",
                    "no usage chunk (stream_options.include_usage)");
    }
    ++counters_.ok;
    ++counters_.streamed_ok;
  }

  void SendBad(const Call& call, const std::string& kind) {
    const Clock::time_point start = Clock::now();
    const httplib::Result r = http_->Post(call.path.c_str(), call.headers,
                                          call.body, call.content_type.c_str());
    const auto failed = [&](const std::string& why, const std::string& what) {
      tally_.Fail("bad request: " + why, kind + ": " + what);
      ++counters_.bad_failed;
    };
    if (!r) {
      return failed(
          TransportKind(r.error(), Seconds(start, Clock::now()), o_.timeout_s),
          httplib::to_string(r.error()));
    }
    if (r->status < 400) {
      ++tally_.bad_accepted_kinds[kind];
      ++counters_.bad_accepted;
      return;
    }
    if (r->status >= 500) {
      return failed("http " + std::to_string(r->status), r->body);
    }
    const Json j = Json::parse(r->body, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("error") || !j["error"].is_object() ||
        !j["error"].contains("message") || !j["error"]["message"].is_string()) {
      return failed("no OpenAI error body",
                    std::to_string(r->status) + " " + r->body);
    }
    ++counters_.bad_refused;
  }

  const LoadBenchOptions& o_;
  const Corpus& corpus_;
  const std::vector<std::string>& documents_;
  Counters& counters_;
  std::unique_ptr<httplib::Client> http_;
  const httplib::Headers auth_;
  const bool keys_checked_;  // "wrong API key" is a bad request
  std::mt19937_64 rng_;
  Tally tally_;
};

// ---------------------------------------------------------------------------
// The server's resident memory.

// Reads process_resident_memory_bytes from /metrics every rss_every_s on its
// own thread (and once more at Stop()).
class RssSampler {
 public:
  RssSampler(const LoadBenchOptions& o, const Target& target,
             Clock::time_point start)
      : o_(o),
        http_(Connect(target, o.timeout_s, /*keep_alive=*/false)),
        auth_(AuthHeaders(o.api_key)),
        start_(start),
        thread_([this] { Loop(); }) {}

  // Takes the last sample and ends the thread.
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  // The latest sample's bytes; 0 when none yet.
  double Latest() {
    std::lock_guard<std::mutex> lock(mu_);
    return samples_.empty() ? 0 : samples_.back().bytes;
  }

  // After Stop(): fills the result's RSS fields.
  void Report(LoadBenchResult* r) {
    r->rss = samples_;
    r->rss_failed_scrapes = failed_scrapes_;
    r->rss_unknown = unknown_;
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      const bool last = stop_;
      lock.unlock();
      Sample();
      lock.lock();
      if (last || !unknown_.empty()) return;
      wake_.wait_for(lock, std::chrono::duration<double>(o_.rss_every_s),
                     [&] { return stop_; });
    }
  }

  // One scrape. A refusal, a /metrics without the figure or a first scrape
  // that fails ends sampling (unknown_ says why); a later failure is
  // counted.
  void Sample() {
    const httplib::Result r = http_->Get("/metrics", auth_);
    const double t = Seconds(start_, Clock::now());
    std::lock_guard<std::mutex> lock(mu_);
    if (!r || r->status != 200) {
      if (r && (r->status == 401 || r->status == 403)) {
        unknown_ = "/metrics answered " + std::to_string(r->status) +
                   " (it needs an admin key)";
      } else if (samples_.empty()) {
        unknown_ = "/metrics: " + (r ? "HTTP " + std::to_string(r->status)
                                     : httplib::to_string(r.error()));
      } else {
        ++failed_scrapes_;
      }
      return;
    }
    constexpr std::string_view kName = "process_resident_memory_bytes ";
    size_t at = 0;
    while (at < r->body.size() && r->body.compare(at, kName.size(), kName)) {
      at = r->body.find('\n', at);
      at = at == std::string::npos ? r->body.size() : at + 1;
    }
    if (at >= r->body.size()) {
      unknown_ = "the server's /metrics has no process_resident_memory_bytes";
      return;
    }
    samples_.push_back(
        {t, std::strtod(r->body.c_str() + at + kName.size(), nullptr)});
  }

  const LoadBenchOptions& o_;
  std::unique_ptr<httplib::Client> http_;
  const httplib::Headers auth_;
  const Clock::time_point start_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::vector<RssSample> samples_;
  std::string unknown_;
  uint64_t failed_scrapes_ = 0;
  std::thread thread_;  // last: starts once the rest is built
};

Status Validate(const LoadBenchOptions& o) {
  const auto share = [](double s) { return s >= 0 && s <= 1; };
  if (o.clients < 1 || o.duration_s <= 0 || o.max_tokens < 1 ||
      o.documents < 1 || o.document_words < 1 || o.question_words < 1 ||
      o.timeout_s <= 0 || o.rss_every_s <= 0 || o.progress_every_s <= 0) {
    return Status::InvalidArgument(
        "bench load: need clients, max_tokens, documents, document_words, "
        "question_words >= 1 and duration, timeout, RSS and progress "
        "intervals > 0");
  }
  if (!share(o.chat_share) || !share(o.stream_share) ||
      !share(o.cancel_share) || !share(o.unique_share) || !share(o.bad_share)) {
    return Status::InvalidArgument("bench load: shares must be in [0, 1]");
  }
  if (o.cancel_after < 1 || o.cancel_after >= o.max_tokens) {
    return Status::InvalidArgument(
        "bench load: need 1 <= cancel_after < max_tokens");
  }
  return Status::OK();
}

// GET /v1/models before the run: a wrong address or key fails here, once.
// Whether the server checks keys (it refuses that GET without one).
Result<bool> Preflight(const LoadBenchOptions& o, const Target& target) {
  std::unique_ptr<httplib::Client> http =
      Connect(target, o.timeout_s, /*keep_alive=*/false);
  const httplib::Result r = http->Get("/v1/models", AuthHeaders(o.api_key));
  if (!r) {
    return Status::Unavailable("bench load: cannot reach " + o.url + ": " +
                               httplib::to_string(r.error()));
  }
  if (r->status != 200) {
    return Status::Unavailable(
        "bench load: GET " + o.url + "/v1/models answered " +
        std::to_string(r->status) +
        (r->status == 401 ? " (a wrong or missing API key)" : "") + ": " +
        r->body.substr(0, kExampleBytes));
  }
  if (o.api_key.empty()) return false;
  const httplib::Result keyless = http->Get("/v1/models");
  return keyless && keyless->status == 401;
}

std::string ProgressLine(double elapsed_s, double duration_s, const Counters& c,
                         double rss_bytes) {
  char line[320];
  std::snprintf(line, sizeof(line),
                "bench load: %.0f s of %.0f: %llu ok, %llu failed, %llu "
                "cancelled, %llu bad refused, %llu bad accepted or failed",
                elapsed_s, duration_s, (unsigned long long)c.ok.load(),
                (unsigned long long)c.failed.load(),
                (unsigned long long)c.cancelled.load(),
                (unsigned long long)c.bad_refused.load(),
                (unsigned long long)(c.bad_accepted + c.bad_failed));
  std::string out = line;
  if (rss_bytes > 0) {
    std::snprintf(line, sizeof(line), ", server RSS %.1f MiB",
                  rss_bytes / (1 << 20));
    out += line;
  }
  return out;
}

}  // namespace

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary s;
  s.count = samples.size();
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  const auto rank = [&](double p) {
    const size_t r = size_t(std::ceil(p * double(samples.size())));
    return samples[std::max<size_t>(r, 1) - 1];
  };
  s.p50 = rank(0.50);
  s.p90 = rank(0.90);
  s.p99 = rank(0.99);
  s.max = samples.back();
  return s;
}

std::optional<RssSample> LoadBenchResult::RssAt(double t_s) const {
  for (const RssSample& s : rss) {
    if (s.t_s >= t_s) return s;
  }
  return std::nullopt;
}

double LoadBenchResult::RssMax() const {
  double most = 0;
  for (const RssSample& s : rss) most = std::max(most, s.bytes);
  return most;
}

Result<LoadBenchResult> RunLoadBench(const LoadBenchOptions& options,
                                     const BenchProgress& progress) {
  KV_RETURN_IF_ERROR(Validate(options));
  KV_ASSIGN_OR_RETURN(const Target target, ParseUrl(options.url));
  KV_ASSIGN_OR_RETURN(const bool keys_checked, Preflight(options, target));
  const Corpus corpus(options.text);
  std::mt19937_64 rng(options.seed);
  std::vector<std::string> documents;
  for (int d = 0; d < options.documents; ++d) {
    documents.push_back("Document " + std::to_string(d + 1) + ". " +
                        corpus.Passage(rng, options.document_words));
  }

  Counters counters;
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < options.clients; ++i) {
    clients.push_back(std::make_unique<Client>(
        options, target, corpus, documents, counters, keys_checked, i));
  }
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(options.duration_s));
  RssSampler rss(options, target, start);
  std::mutex mu;
  std::condition_variable finished_cv;
  int finished = 0;
  std::vector<std::thread> threads;
  for (const std::unique_ptr<Client>& c : clients) {
    threads.emplace_back([&, client = c.get()] {
      client->Run(deadline);
      std::lock_guard<std::mutex> lock(mu);
      ++finished;
      finished_cv.notify_all();
    });
  }
  {
    const auto every = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(options.progress_every_s));
    std::unique_lock<std::mutex> lock(mu);
    for (Clock::time_point next = start + every; !finished_cv.wait_until(
             lock, next, [&] { return finished == options.clients; });
         next += every) {
      progress(ProgressLine(Seconds(start, Clock::now()), options.duration_s,
                            counters, rss.Latest()));
    }
  }
  for (std::thread& t : threads) t.join();
  LoadBenchResult r;
  r.elapsed_s = Seconds(start, Clock::now());
  rss.Stop();
  rss.Report(&r);

  Tally all;
  for (const std::unique_ptr<Client>& c : clients)
    all.Merge(std::move(c->tally()));
  r.ok = counters.ok;
  r.streamed_ok = counters.streamed_ok;
  r.cancelled = counters.cancelled;
  r.failed = counters.failed;
  r.bad_refused = counters.bad_refused;
  r.bad_accepted = counters.bad_accepted;
  r.bad_failed = counters.bad_failed;
  r.bad_accepted_kinds = std::move(all.bad_accepted_kinds);
  r.failures = std::move(all.failures);
  r.ttft = Summarize(std::move(all.ttft));
  r.latency = Summarize(std::move(all.latency));
  r.itl = Summarize(std::move(all.itl));
  r.completion_tokens = all.completion_tokens;
  r.prompt_tokens = all.prompt_tokens;
  r.cached_tokens = all.cached_tokens;
  progress(ProgressLine(r.elapsed_s, options.duration_s, counters,
                        r.rss.empty() ? 0 : r.rss.back().bytes));
  return r;
}

}  // namespace kvstash::bench
