#include "serve/http_server.h"

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <semaphore>
#include <thread>
#include <variant>

#include "base/process.h"
#include "kernels/kv_format.h"
#include "model/chat_template.h"
#include "serve/metrics.h"
#include "serve/openai_api.h"
#include "serve/text_stream.h"
#include "serve/tokenize_api.h"

// kDashboardHtml: serve/dashboard.html, embedded at build time
// (cmake/embed_text.cmake).
#include "dashboard_html.h"

namespace kvstash {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr std::string_view kJson = "application/json";

void Reply(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(e.ToJson(), std::string(kJson));
}

void Reply(httplib::Response& res, const Json& body) {
  res.status = 200;
  res.set_content(body.dump(-1, ' ', false, Json::error_handler_t::replace),
                  std::string(kJson));
}

ApiError FromStatus(const Status& st) {
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
      return ApiError::BadRequest(st.message());
    case StatusCode::kResourceExhausted:
      return ApiError::TooManyRequests(st.message());
    case StatusCode::kUnavailable:
      return ApiError::Unavailable(st.message());
    default:
      return ApiError::Internal(st.message());
  }
}

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Brings a counter that mirrors a monotonic total up to it.
void CatchUp(Counter* counter, uint64_t total) {
  if (total > counter->Value()) counter->Inc(total - counter->Value());
}

}  // namespace

// Holds one of a counting semaphore's slots for its lifetime.
class ParseSlot {
 public:
  explicit ParseSlot(std::counting_semaphore<>& slots) : slots_(slots) {
    slots_.acquire();
  }
  ~ParseSlot() { slots_.release(); }
  ParseSlot(const ParseSlot&) = delete;
  ParseSlot& operator=(const ParseSlot&) = delete;

 private:
  std::counting_semaphore<>& slots_;
};

struct HttpServer::Impl {
  const Model& model;
  Scheduler& scheduler;
  kvcache::KvManager& kv;
  ServerOptions options;
  ChatTemplateFamily chat_family;
  int64_t created = std::time(nullptr);
  httplib::Server http;
  int port = 0;
  std::mt19937_64 seeds{std::random_device{}()};
  std::mutex seeds_mu;

  MetricsRegistry metrics;
  Counter* requests[2];
  Counter* rejected;
  Counter* finished_stop;
  Counter* finished_length;
  Counter* finished_cancelled;
  Counter* finished_error;
  Counter* prompt_tokens;
  Counter* cached_tokens;
  Counter* generated_tokens;
  Counter* evictions;
  Counter* preemptions;
  Counter* compressions;
  Counter* evicted_tokens;
  Counter* compressed_prefix_hits;
  Gauge* sequence_bytes;
  Gauge* blocks_used;
  Gauge* blocks_cached;
  Gauge* blocks_free;
  Gauge* queue_depth;
  Gauge* running;
  Gauge* resident_bytes;
  Histogram* ttft;
  Histogram* itl;
  Histogram* e2e;
  // One per tier below DRAM, in the KV manager's order.
  struct TierMetrics {
    std::string name;
    Counter* hits;
    Counter* misses;
    Counter* read_bytes;
    Counter* written_bytes;
    Counter* errors;
    Counter* evictions;
    Counter* corrupt;
    Counter* forged;
    Counter* dropped_writes;
    Counter* loaded_blocks;
    Counter* load_failures;
    Counter* cached_tokens;
    Gauge* objects;
    Gauge* bytes;
    Gauge* queue_objects;
    Gauge* queue_bytes;
    Histogram* load_seconds;
  };
  std::vector<TierMetrics> tier_metrics;
  std::mutex scrape_mu;  // evictions/preemptions catch up at scrape time
  // The keys in force (SetApiKeys swaps them); null: no keys.
  mutable std::mutex keys_mu;
  std::shared_ptr<const ApiKeys> keys;
  // Each tenant's own counters (with keys), for its /kv/stats.
  struct TenantCounters {
    uint64_t requests = 0, prompt_tokens = 0, cached_tokens = 0,
             completion_tokens = 0;
  };
  std::mutex tenants_mu;
  std::map<std::string, TenantCounters> tenants;
  std::counting_semaphore<> parse_slots;
  // Stop() may come before Serve() listens (httplib's stop() is then a
  // no-op): Serve() checks `stopped` first, Stop() waits for it to listen.
  std::atomic<bool> stopped{false};
  std::atomic<bool> serving{false};

  Impl(const Model& m, Scheduler& s, kvcache::KvManager& k,
       const ServerOptions& o)
      : model(m),
        scheduler(s),
        kv(k),
        options(o),
        chat_family(DetectChatTemplate(m.chat_template())),
        parse_slots(std::max(1, o.max_parsing)) {
    if (!o.api_keys.empty()) {
      keys = std::make_shared<const ApiKeys>(o.api_keys);
    }
    RegisterMetrics();
    Routes();
  }

  void RegisterMetrics();
  void Routes();
  // The caller a request's key names (every caller is an admin of the one
  // tenant without keys), or nullopt after answering 401.
  std::optional<Caller> Authenticate(const httplib::Request& req,
                                     httplib::Response& res) const;
  // Authenticate, and answers 403 unless the caller is an admin.
  bool Admin(const httplib::Request& req, httplib::Response& res) const;
  // Origins and media types (see ServerOptions): before routing, or for a
  // POST in its route, once its body is read (Routes says why).
  httplib::Server::HandlerResponse Screen(const httplib::Request& req,
                                          httplib::Response& res) const;
  // The prompt's token ids, or the error to send.
  // The document of a chat request for kv_compression: the positions of
  // `prompt` its messages before the last render to (their rendering's
  // tokens that start `prompt`); 0 for a completion or a single message.
  int ChatContext(const CompletionRequest& r,
                  std::span<const int32_t> prompt) const;
  // A rendered chat's tokens: the template's markers become control tokens,
  // the messages' text does not (unless special_tokens_in_content).
  std::vector<int32_t> EncodeChat(const RenderedChat& chat) const;
  // Limits before work: a 400 for a body longer than any request whose
  // prompt fits the context can be, before it is parsed.
  std::optional<ApiError> BodyTooLong(const httplib::Request& req,
                                      Endpoint endpoint) const;
  std::variant<std::vector<int32_t>, ApiError> PromptTokens(
      const CompletionRequest& r) const;
  void Complete(Endpoint endpoint, const httplib::Request& req,
                httplib::Response& res);
  void Lookup(const httplib::Request& req, httplib::Response& res);
  Json KvStatsJson();
  // GET /dashboard/data: what the dashboard page draws (bounded work: the
  // stats, the k hottest prefixes, their first tokens decoded).
  Json DashboardJson();
  // Mirrors the tiers' counters into tier_metrics. REQUIRES: scrape_mu held.
  void ScrapeTiers();
  void RecordFinish(const RequestEvent& finish, const std::string& tenant);
  class Responder;
  uint64_t NextSeed() {
    std::lock_guard<std::mutex> lock(seeds_mu);
    return seeds();
  }
};

void HttpServer::Impl::RegisterMetrics() {
  MetricsRegistry& m = metrics;
  requests[0] =
      &m.AddCounter("kvstash_requests_total", "Generation requests accepted",
                    {{"endpoint", "completions"}});
  requests[1] =
      &m.AddCounter("kvstash_requests_total", "Generation requests accepted",
                    {{"endpoint", "chat_completions"}});
  rejected = &m.AddCounter("kvstash_requests_rejected_total",
                           "Requests answered with an error status");
  const char* kFinished = "Requests finished, by reason";
  finished_stop = &m.AddCounter("kvstash_requests_finished_total", kFinished,
                                {{"reason", "stop"}});
  finished_length = &m.AddCounter("kvstash_requests_finished_total", kFinished,
                                  {{"reason", "length"}});
  finished_cancelled = &m.AddCounter("kvstash_requests_finished_total",
                                     kFinished, {{"reason", "cancelled"}});
  finished_error = &m.AddCounter("kvstash_requests_finished_total", kFinished,
                                 {{"reason", "error"}});
  prompt_tokens = &m.AddCounter("kvstash_prompt_tokens_total",
                                "Prompt tokens of finished requests");
  cached_tokens =
      &m.AddCounter("kvstash_cached_prompt_tokens_total",
                    "Prompt tokens whose K/V were mapped from the cache");
  generated_tokens =
      &m.AddCounter("kvstash_generated_tokens_total", "Tokens generated");
  evictions = &m.AddCounter("kvstash_kv_evictions_total",
                            "KV blocks evicted on allocation pressure");
  preemptions = &m.AddCounter("kvstash_preemptions_total",
                              "Sequences preempted for lack of KV blocks");
  compressions =
      &m.AddCounter("kvstash_kv_compressions_total",
                    "Prompts whose tokens were evicted (kv_compression)");
  evicted_tokens = &m.AddCounter(
      "kvstash_kv_evicted_tokens_total",
      "Prompt tokens evicted by kv_compression (mean per layer and kv head)");
  compressed_prefix_hits = &m.AddCounter(
      "kvstash_kv_compressed_prefix_hits_total",
      "Compressed documents mapped from the cache instead of recomputed");
  sequence_bytes =
      &m.AddGauge("kvstash_kv_sequence_bytes",
                  "KV bytes held by the running sequences' blocks");
  const char* kBlocks = "KV cache blocks by state";
  blocks_used = &m.AddGauge("kvstash_kv_blocks", kBlocks, {{"state", "used"}});
  blocks_cached =
      &m.AddGauge("kvstash_kv_blocks", kBlocks, {{"state", "cached"}});
  blocks_free = &m.AddGauge("kvstash_kv_blocks", kBlocks, {{"state", "free"}});
  const kvcache::KvStats kv_stats = kv.Stats();
  m.AddGauge("kvstash_kv_capacity_tokens",
             "Tokens the KV block pool holds at its KV types")
      .Set(double(kv_stats.capacity_tokens()));
  m.AddGauge("kvstash_kv_bytes_per_token",
             "K/V bytes per cached token (all layers, scales included)",
             {{"k", std::string(kernels::KvTypeName(kv_stats.kv_format.k))},
              {"v", std::string(kernels::KvTypeName(kv_stats.kv_format.v))}})
      .Set(kv_stats.bytes_per_token);
  queue_depth =
      &m.AddGauge("kvstash_queue_depth", "Requests waiting to be scheduled");
  running = &m.AddGauge("kvstash_running_sequences",
                        "Sequences in the running batch");
  // The name every Prometheus client library's process collector uses.
  resident_bytes = &m.AddGauge("process_resident_memory_bytes",
                               "Resident memory size in bytes");
  ttft = &m.AddHistogram("kvstash_time_to_first_token_seconds",
                         "Time from request arrival to its first token",
                         LatencyBuckets());
  itl = &m.AddHistogram("kvstash_inter_token_latency_seconds",
                        "Time between consecutive tokens of a request",
                        LatencyBuckets());
  e2e =
      &m.AddHistogram("kvstash_request_duration_seconds",
                      "Time from request arrival to its end", LatencyBuckets());
  for (const kvcache::TierCounters& c : kv.TierStats()) {
    const MetricLabels l = {{"tier", c.name}};
    TierMetrics t;
    t.name = c.name;
    t.hits = &m.AddCounter("kvstash_tier_hits_total",
                           "Objects a tier returned on a read", l);
    t.misses = &m.AddCounter("kvstash_tier_misses_total",
                             "Objects a tier did not return on a read", l);
    t.read_bytes = &m.AddCounter("kvstash_tier_read_bytes_total",
                                 "Bytes read from a tier", l);
    t.written_bytes = &m.AddCounter("kvstash_tier_written_bytes_total",
                                    "Bytes stored in a tier", l);
    t.errors = &m.AddCounter("kvstash_tier_errors_total",
                             "Failed tier operations (I/O, network)", l);
    t.evictions =
        &m.AddCounter("kvstash_tier_evictions_total",
                      "Objects a tier removed to stay in capacity", l);
    t.corrupt = &m.AddCounter("kvstash_tier_corrupt_dropped_total",
                              "Objects found damaged, deleted", l);
    t.forged = &m.AddCounter(
        "kvstash_tier_forged_dropped_total",
        "Intact objects not sealed with the tier key (forged), deleted", l);
    t.dropped_writes =
        &m.AddCounter("kvstash_tier_dropped_writes_total",
                      "Writes a tier refused (queue full, too large)", l);
    t.loaded_blocks =
        &m.AddCounter("kvstash_tier_loaded_blocks_total",
                      "KV blocks loaded from a tier into DRAM", l);
    t.load_failures =
        &m.AddCounter("kvstash_tier_load_failures_total",
                      "Loads that found an object missing or bad", l);
    t.cached_tokens =
        &m.AddCounter("kvstash_tier_cached_prompt_tokens_total",
                      "Prompt tokens whose K/V were loaded from a tier", l);
    t.objects = &m.AddGauge("kvstash_tier_objects", "Objects in a tier", l);
    t.bytes =
        &m.AddGauge("kvstash_tier_bytes", "Bytes of objects in a tier", l);
    t.queue_objects =
        &m.AddGauge("kvstash_tier_queue_objects",
                    "Objects queued for writing to a tier (write-behind)", l);
    t.queue_bytes = &m.AddGauge("kvstash_tier_queue_bytes",
                                "Bytes queued for writing to a tier", l);
    t.load_seconds = &m.AddHistogram(
        "kvstash_tier_load_seconds",
        "Wall time of one batched read of KV blocks from a tier",
        LatencyBuckets(), l);
    tier_metrics.push_back(t);
  }
  kv.SetLoadObserver([this](size_t tier, double seconds, size_t) {
    tier_metrics[tier].load_seconds->Observe(seconds);
  });
}

void HttpServer::Impl::ScrapeTiers() {
  const std::vector<kvcache::TierCounters> stats = kv.TierStats();
  for (size_t i = 0; i < stats.size(); ++i) {
    const kvcache::TierCounters& c = stats[i];
    TierMetrics& t = tier_metrics[i];
    CatchUp(t.hits, c.store.hits);
    CatchUp(t.misses, c.store.misses);
    CatchUp(t.read_bytes, c.store.bytes_read);
    CatchUp(t.written_bytes, c.store.bytes_written);
    CatchUp(t.errors, c.store.errors);
    CatchUp(t.evictions, c.store.evictions);
    CatchUp(t.corrupt, c.store.corrupt_dropped);
    CatchUp(t.forged, c.store.forged_dropped);
    CatchUp(t.dropped_writes, c.store.dropped_writes);
    CatchUp(t.loaded_blocks, c.loaded_blocks);
    CatchUp(t.load_failures, c.load_failures);
    t.objects->Set(double(c.store.objects));
    t.bytes->Set(double(c.store.bytes_used));
    t.queue_objects->Set(double(c.store.queue_objects));
    t.queue_bytes->Set(double(c.store.queue_bytes));
  }
}

std::optional<Caller> HttpServer::Impl::Authenticate(
    const httplib::Request& req, httplib::Response& res) const {
  std::shared_ptr<const ApiKeys> current;
  {
    std::lock_guard<std::mutex> lock(keys_mu);
    current = keys;
  }
  if (current == nullptr) return Caller{"", /*admin=*/true};
  constexpr std::string_view kBearer = "Bearer ";
  const std::string header = req.get_header_value("Authorization");
  if (header.compare(0, kBearer.size(), kBearer) == 0) {
    if (const Caller* caller =
            current->Find(std::string_view(header).substr(kBearer.size()))) {
      return *caller;
    }
  }
  Reply(res, ApiError::Unauthorized(
                 "missing or wrong API key (Authorization: Bearer <key>)"));
  return std::nullopt;
}

bool HttpServer::Impl::Admin(const httplib::Request& req,
                             httplib::Response& res) const {
  const std::optional<Caller> caller = Authenticate(req, res);
  if (!caller) return false;
  if (caller->admin) return true;
  Reply(res, ApiError::Forbidden("this endpoint needs an admin key"));
  return false;
}

httplib::Server::HandlerResponse HttpServer::Impl::Screen(
    const httplib::Request& req, httplib::Response& res) const {
  using Handled = httplib::Server::HandlerResponse;
  if (req.has_header("Origin")) {
    const std::string origin = req.get_header_value("Origin");
    if (std::find(options.cors_origins.begin(), options.cors_origins.end(),
                  origin) == options.cors_origins.end()) {
      Reply(res, ApiError::Forbidden("requests from origin '" + origin +
                                     "' are not allowed (--cors-origin)"));
      return Handled::Handled;
    }
    res.set_header("Access-Control-Allow-Origin", origin);
    res.set_header("Vary", "Origin");
    if (req.method == "OPTIONS") {  // a preflight
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers",
                     "Authorization, Content-Type");
      res.set_header("Access-Control-Max-Age", "600");
      res.status = 204;
      return Handled::Handled;
    }
  }
  // A POST with a body (a bodiless one, e.g. /kv/clear, has nothing to
  // type).
  if (req.method == "POST" &&
      !(req.body.empty() && !req.has_header("Content-Type"))) {
    // Only JSON: a browser sends a form or text/plain cross-origin without
    // asking first, application/json only after a preflight.
    const std::string type = req.get_header_value("Content-Type");
    const std::string_view kJsonType = "application/json";
    if (type.compare(0, kJsonType.size(), kJsonType) != 0 ||
        (type.size() > kJsonType.size() && type[kJsonType.size()] != ';')) {
      Reply(res, ApiError::UnsupportedMediaType(
                     "POST bodies must be Content-Type: application/json"));
      return Handled::Handled;
    }
  }
  return Handled::Unhandled;
}

std::optional<ApiError> HttpServer::Impl::BodyTooLong(
    const httplib::Request& req, Endpoint endpoint) const {
  // Every byte of prompt text written as \u00XX, and 1 MiB for the rest.
  const size_t most = size_t(scheduler.options().context) *
                          model.tokenizer().max_text_bytes() * 6 +
                      (size_t{1} << 20);
  if (req.body.size() <= most) return std::nullopt;
  return ApiError::BadRequest(
      "the body has " + std::to_string(req.body.size()) +
          " bytes; a prompt this model's context holds fits in " +
          std::to_string(most),
      endpoint == Endpoint::kChatCompletions ? "messages" : "prompt");
}

std::vector<int32_t> HttpServer::Impl::EncodeChat(
    const RenderedChat& chat) const {
  return model.tokenizer().EncodeWithSpecialTokens(
      chat.text, /*add_bos=*/true,
      options.special_tokens_in_content
          ? std::span<const std::pair<size_t, size_t>>()
          : std::span<const std::pair<size_t, size_t>>(chat.content));
}

int HttpServer::Impl::ChatContext(const CompletionRequest& r,
                                  std::span<const int32_t> prompt) const {
  if (r.endpoint != Endpoint::kChatCompletions || r.messages.size() < 2) {
    return 0;
  }
  Result<RenderedChat> chat = RenderChat(
      chat_family, std::span(r.messages).first(r.messages.size() - 1),
      /*add_generation_prompt=*/false);
  if (!chat.ok()) return 0;  // a prefix the template cannot render alone
  const std::vector<int32_t> ids = EncodeChat(*chat);
  const auto end =
      std::mismatch(ids.begin(), ids.end(), prompt.begin(), prompt.end());
  return int(end.first - ids.begin());
}

std::variant<std::vector<int32_t>, ApiError> HttpServer::Impl::PromptTokens(
    const CompletionRequest& r) const {
  const Tokenizer& tok = model.tokenizer();
  const int context = scheduler.options().context;
  // Limits before work: a text longer than the context's tokens can stand
  // for is refused without being tokenized (or rendered).
  size_t text_bytes = 0;
  if (r.endpoint == Endpoint::kChatCompletions) {
    for (const ChatMessage& m : r.messages) text_bytes += m.content.size();
  } else if (const auto* text = std::get_if<std::string>(&r.prompt)) {
    text_bytes = text->size();
  }
  if (text_bytes > size_t(context) * tok.max_text_bytes()) {
    return ApiError::BadRequest(
        "the prompt has " + std::to_string(text_bytes) +
            " bytes of text; this model's context holds " +
            std::to_string(context) + " tokens, at most " +
            std::to_string(size_t(context) * tok.max_text_bytes()) + " bytes",
        r.endpoint == Endpoint::kChatCompletions ? "messages" : "prompt");
  }
  std::vector<int32_t> ids;
  const char* param = "prompt";
  if (r.endpoint == Endpoint::kChatCompletions) {
    param = "messages";
    Result<RenderedChat> chat = RenderChat(chat_family, r.messages, true);
    if (!chat.ok()) return ApiError::BadRequest(chat.status().message(), param);
    ids = EncodeChat(*chat);
  } else if (const auto* text = std::get_if<std::string>(&r.prompt)) {
    ids = tok.Encode(*text, /*add_bos=*/true);
  } else {
    ids = std::get<std::vector<int32_t>>(r.prompt);
    for (int32_t id : ids) {
      if (id >= tok.vocab_size()) {
        return ApiError::BadRequest("token id " + std::to_string(id) +
                                        " is outside the vocabulary of " +
                                        std::to_string(tok.vocab_size()),
                                    param);
      }
    }
  }
  if (ids.empty()) return ApiError::BadRequest("the prompt is empty", param);
  if (int(ids.size()) >= context) {
    return ApiError::BadRequest(
        "this model's context holds " + std::to_string(context) +
            " tokens, prompt and completion together; the prompt has " +
            std::to_string(ids.size()),
        param);
  }
  return ids;
}

void HttpServer::Impl::RecordFinish(const RequestEvent& finish,
                                    const std::string& tenant) {
  if (!tenant.empty()) {
    std::lock_guard<std::mutex> lock(tenants_mu);
    TenantCounters& c = tenants[tenant];
    ++c.requests;
    c.prompt_tokens += uint64_t(finish.usage.prompt_tokens);
    c.cached_tokens += uint64_t(finish.usage.cached_tokens);
    c.completion_tokens += uint64_t(finish.usage.completion_tokens);
  }
  switch (finish.finish) {
    case RequestEnd::kStop:
      finished_stop->Inc();
      break;
    case RequestEnd::kLength:
      finished_length->Inc();
      break;
    case RequestEnd::kCancelled:
      finished_cancelled->Inc();
      break;
    case RequestEnd::kError:
      finished_error->Inc();
      break;
  }
  prompt_tokens->Inc(finish.usage.prompt_tokens);
  cached_tokens->Inc(finish.usage.cached_tokens);
  const std::vector<int>& by_tier = finish.usage.tier_cached_tokens;
  for (size_t t = 0; t < by_tier.size() && t < tier_metrics.size(); ++t) {
    tier_metrics[t].cached_tokens->Inc(uint64_t(by_tier[t]));
  }
  generated_tokens->Inc(finish.usage.completion_tokens);
}

// One request's way from scheduler events to client text, per choice:
// detokenizes, cuts at stop strings (cancelling that choice there), attaches
// log-probabilities to the text they belong to, and times the tokens.
// With echo, each choice's text starts with the prompt's (its tokens
// decoded in place), and so do its logprobs when asked for.
class HttpServer::Impl::Responder {
 public:
  Responder(HttpServer::Impl& server, std::shared_ptr<RequestHandle> handle,
            const CompletionRequest& request, std::vector<int32_t> prompt,
            std::string tenant)
      : server_(server),
        handle_(std::move(handle)),
        tenant_(std::move(tenant)),
        logprobs_(request.logprobs >= 0),
        echo_(request.echo),
        prompt_(std::move(prompt)) {
    const Tokenizer& tok = server_.model.tokenizer();
    for (int c = 0; c < handle_->choices(); ++c) {
      choices_.emplace_back(request.stop, prompt_.back());
    }
    if (echo_) {
      for (size_t p = 0; p < prompt_.size(); ++p) {
        prompt_text_ +=
            tok.DecodeToken(p == 0 ? -1 : prompt_[p - 1], prompt_[p]);
      }
    }
  }

  // What one event released for one choice.
  struct Update {
    int choice = 0;
    std::string text;
    std::vector<LogprobEntry> logprobs;
    bool finished = false;
  };

  // Waits up to `timeout` for the next event; false on timeout. Otherwise
  // `updates` holds what may be sent now (with echo: first the prompt of
  // every choice, once its logprobs are known). done() once every choice
  // ended.
  bool Next(std::chrono::milliseconds timeout, std::vector<Update>* updates) {
    updates->clear();
    if (echo_ && !echoed_ && (!logprobs_ || prompt_scores_)) {
      echoed_ = true;
      // The prompt is decoded and scored once; every choice gets a copy.
      const Update echo = EchoUpdate();
      for (int c = 0; c < int(choices_.size()); ++c) {
        updates->push_back(echo);
        updates->back().choice = c;
      }
      return true;
    }
    RequestEvent ev;
    if (!handle_->Next(&ev, timeout)) return false;
    ChoiceState& st = choices_[size_t(ev.choice)];
    const Tokenizer& tok = server_.model.tokenizer();
    if (ev.kind == RequestEvent::Kind::kPrompt) {
      prompt_scores_ = std::move(ev.prompt_logprobs);
      return true;  // the echo goes out at the next call
    }
    Update u;
    u.choice = ev.choice;
    if (ev.kind == RequestEvent::Kind::kToken) {
      const std::string piece = tok.DecodeToken(st.prev, ev.token);
      if (ev.logprob) {
        LogprobEntry e;
        e.text = piece;
        e.offset = Offset() + st.produced;
        e.logprob = ev.logprob->logprob;
        for (const auto& [id, lp] : ev.logprob->top) {
          e.top.push_back({tok.DecodeToken(st.prev, id), lp});
        }
        st.pending.push_back(std::move(e));
      }
      st.produced += piece.size();
      st.prev = ev.token;
      if (!st.text.stopped()) ++st.tokens_to_stop;
      u.text = st.text.Add(piece);
      if (st.text.stopped()) handle_->Cancel(ev.choice);
      if (!first_token_seen_) {
        first_token_seen_ = true;
        server_.ttft->Observe(Seconds(handle_->submitted(), ev.time));
      } else if (st.last_token != Clock::time_point()) {
        server_.itl->Observe(Seconds(st.last_token, ev.time));
      }
      st.last_token = ev.time;
      st.released += u.text.size();
      u.logprobs = st.Release(Offset(), /*final=*/false);
      updates->push_back(std::move(u));
      return true;
    }
    u.text = st.text.Flush();
    st.released += u.text.size();
    u.finished = true;
    st.finish = ev;
    if (st.text.stopped()) {
      // We cancelled at the stop string: the choice ended with "stop", and
      // tokens the scheduler made before it saw the cancel do not count.
      st.finish.finish = RequestEnd::kStop;
      st.finish.usage.completion_tokens = st.tokens_to_stop;
    }
    u.logprobs = st.Release(Offset(), /*final=*/true);
    st.done = true;
    if (++finished_ == choices_.size()) {
      server_.e2e->Observe(Seconds(handle_->submitted(), ev.time));
      RequestEvent all = choices_[0].finish;
      all.usage = usage_event();
      server_.RecordFinish(all, tenant_);
    }
    updates->push_back(std::move(u));
    return true;
  }

  // The client is gone: cancels the request and waits for its end, so that
  // its blocks are released and its finish is counted.
  void Abandon() {
    handle_->Cancel();
    std::vector<Update> updates;
    while (!done()) Next(std::chrono::milliseconds(100), &updates);
  }

  bool done() const { return finished_ == choices_.size(); }
  int choices() const { return int(choices_.size()); }
  size_t prompt_size() const { return prompt_.size(); }
  const RequestEvent& finish(int choice) const {
    return choices_[size_t(choice)].finish;
  }
  // The OpenAI finish reason; a stop string counts as "stop".
  FinishReason reason(int choice) const {
    return finish(choice).finish == RequestEnd::kLength ? FinishReason::kLength
                                                        : FinishReason::kStop;
  }
  // The prompt's counts (choice 0's) and the completion tokens of every
  // choice.
  Usage usage() const {
    const RequestUsage all = usage_event();
    Usage u;
    u.prompt_tokens = all.prompt_tokens;
    u.completion_tokens = all.completion_tokens;
    u.cached_tokens = all.cached_tokens;
    for (size_t t = 0; t < all.tier_cached_tokens.size(); ++t) {
      u.tier_cached_tokens.push_back(
          {server_.tier_metrics[t].name, all.tier_cached_tokens[t]});
    }
    u.kv_policy = all.kv_policy;
    u.kv_kept_tokens = all.kv_kept_tokens;
    u.kv_blocks_before = all.kv_blocks_before;
    u.kv_blocks_after = all.kv_blocks_after;
    u.kv_compressed_tokens = all.kv_compressed_tokens;
    u.kv_cache = all.kv_cache;
    u.kv_recompressions = all.kv_recompressions;
    return u;
  }
  // The first error of a choice that failed (or was cancelled by the
  // scheduler), if any.
  std::optional<Status> failure() const {
    for (const ChoiceState& c : choices_) {
      if (c.finish.finish == RequestEnd::kError ||
          c.finish.finish == RequestEnd::kCancelled) {
        return c.finish.error.ok() ? Status::Internal("request dropped")
                                   : c.finish.error;
      }
    }
    return std::nullopt;
  }

 private:
  struct ChoiceState {
    ChoiceState(const std::vector<std::string>& stop, int32_t last_prompt)
        : text(stop), prev(last_prompt) {}
    TextStream text;
    int32_t prev;
    size_t produced = 0;  // bytes of the pieces so far
    size_t released = 0;  // of which released (before any stop string)
    // Logprobs of tokens whose text is not released yet.
    std::vector<LogprobEntry> pending;
    Clock::time_point last_token;
    RequestEvent finish;
    int tokens_to_stop = 0;  // tokens received up to the stop string
    bool done = false;

    // The pending entries whose text starts in the released text (at the
    // end: all of them, unless a stop string cut the text before them).
    std::vector<LogprobEntry> Release(size_t base, bool final) {
      std::vector<LogprobEntry> out;
      size_t i = 0;
      while (i < pending.size() && (pending[i].offset < base + released ||
                                    (final && !text.stopped()))) {
        out.push_back(std::move(pending[i++]));
      }
      pending.erase(pending.begin(), pending.begin() + i);
      if (final) pending.clear();
      return out;
    }
  };

  size_t Offset() const { return prompt_text_.size(); }

  // The prompt's text (and logprobs) that starts every choice.
  Update EchoUpdate() const {
    Update u;
    u.text = prompt_text_;
    if (!logprobs_) return u;
    const Tokenizer& tok = server_.model.tokenizer();
    size_t offset = 0;
    for (size_t p = 0; p < prompt_.size(); ++p) {
      const int32_t prev = p == 0 ? -1 : prompt_[p - 1];
      LogprobEntry e;
      e.text = tok.DecodeToken(prev, prompt_[p]);
      e.offset = offset;
      offset += e.text.size();
      if (p > 0 && p - 1 < prompt_scores_->size()) {
        const ScoredToken& s = (*prompt_scores_)[p - 1];
        e.logprob = s.logprob;
        for (const auto& [id, lp] : s.top) {
          e.top.push_back({tok.DecodeToken(prev, id), lp});
        }
      }
      u.logprobs.push_back(std::move(e));
    }
    return u;
  }

  RequestUsage usage_event() const {
    RequestUsage u = choices_[0].finish.usage;
    for (size_t c = 1; c < choices_.size(); ++c) {
      u.completion_tokens += choices_[c].finish.usage.completion_tokens;
    }
    return u;
  }

  HttpServer::Impl& server_;
  std::shared_ptr<RequestHandle> handle_;
  const std::string tenant_;
  const bool logprobs_;
  const bool echo_;
  const std::vector<int32_t> prompt_;
  std::string prompt_text_;  // with echo
  std::optional<std::vector<ScoredToken>> prompt_scores_;
  bool echoed_ = false;
  bool first_token_seen_ = false;
  std::vector<ChoiceState> choices_;
  size_t finished_ = 0;
};

namespace {

// best_of: the `n` choices of the highest mean token log-probability (a
// choice without tokens ranks last), in their order, numbered from 0.
std::vector<Choice> BestOf(std::vector<Choice> all, size_t n,
                           size_t echo_entries) {
  auto mean = [&](const Choice& c) {
    double sum = 0;
    size_t count = 0;
    for (size_t i = echo_entries; i < c.logprobs.size(); ++i) {
      sum += c.logprobs[i].logprob.value_or(0.0f);
      ++count;
    }
    return count == 0 ? -std::numeric_limits<double>::infinity()
                      : sum / double(count);
  };
  std::vector<size_t> order(all.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return mean(all[a]) > mean(all[b]);
  });
  order.resize(n);
  std::sort(order.begin(), order.end());
  std::vector<Choice> best;
  for (size_t i : order) {
    best.push_back(std::move(all[i]));
    best.back().index = int(best.size()) - 1;
  }
  return best;
}

}  // namespace

void HttpServer::Impl::Complete(Endpoint endpoint, const httplib::Request& req,
                                httplib::Response& res) {
  const std::optional<Caller> caller = Authenticate(req, res);
  if (!caller) return;
  ParseLimits limits;
  limits.max_body_bytes = options.max_body_bytes;
  limits.max_tokens = scheduler.options().context;
  limits.max_choices = scheduler.options().max_running;
  if (std::optional<ApiError> e = BodyTooLong(req, endpoint)) {
    return Reply(res, *e);
  }
  std::optional<ParseSlot> slot(std::in_place, parse_slots);
  auto parsed = ParseCompletionRequest(endpoint, req.body, limits);
  if (auto* e = std::get_if<ApiError>(&parsed)) return Reply(res, *e);
  const CompletionRequest& r = std::get<CompletionRequest>(parsed);
  auto prompt = PromptTokens(r);
  slot.reset();
  if (auto* e = std::get_if<ApiError>(&prompt)) return Reply(res, *e);
  GenerationRequest g;
  g.prompt = std::move(std::get<std::vector<int32_t>>(prompt));
  const int room = scheduler.options().context - int(g.prompt.size());
  if (r.max_tokens && *r.max_tokens > room) {
    return Reply(res, ApiError::BadRequest(
                          "max_tokens is " + std::to_string(*r.max_tokens) +
                              " but the context leaves room for " +
                              std::to_string(room) + " tokens after the prompt",
                          endpoint == Endpoint::kChatCompletions &&
                                  req.body.find("max_completion_tokens") !=
                                      std::string::npos
                              ? "max_completion_tokens"
                              : "max_tokens"));
  }
  const int vocab = model.tokenizer().vocab_size();
  for (const auto& [id, bias] : r.logit_bias) {
    if (id >= vocab) {
      return Reply(
          res, ApiError::BadRequest(
                   "logit_bias names token " + std::to_string(id) +
                       ", outside the vocabulary of " + std::to_string(vocab),
                   "logit_bias"));
    }
  }
  for (int32_t id : r.stop_token_ids) {
    if (id >= vocab) {
      return Reply(res,
                   ApiError::BadRequest("stop token " + std::to_string(id) +
                                            " is outside the vocabulary of " +
                                            std::to_string(vocab),
                                        "stop_token_ids"));
    }
  }
  g.max_tokens =
      r.max_tokens.value_or(std::min(options.default_max_tokens, room));
  g.sampling.temperature = r.temperature;
  g.sampling.top_p = r.top_p;
  g.sampling.top_k = r.top_k;
  g.sampling.min_p = r.min_p;
  g.sampling.repetition_penalty = r.repetition_penalty;
  g.sampling.presence_penalty = r.presence_penalty;
  g.sampling.frequency_penalty = r.frequency_penalty;
  g.sampling.logit_bias = r.logit_bias;
  g.sampling.seed = r.seed ? *r.seed : NextSeed();
  g.stop_token_ids = r.stop_token_ids;
  g.n = r.best_of;
  // best_of ranks the choices by their tokens' log-probabilities.
  g.logprobs = r.best_of > r.n ? std::max(r.logprobs, 0) : r.logprobs;
  g.prompt_logprobs = r.echo && r.logprobs >= 0;
  g.cache_salt = TenantSalt(*caller, r.cache_salt.value_or(""));
  g.kv_compression = r.kv_compression.value_or(options.kv_compression);
  if (!g.kv_compression.policy.empty()) g.kv_context = ChatContext(r, g.prompt);
  if (g.n > 1 && !g.kv_compression.policy.empty()) {
    return Reply(res, ApiError::BadRequest(
                          "n > 1 (or best_of > 1) cannot be combined with "
                          "kv_compression",
                          r.best_of > r.n ? "best_of" : "n"));
  }
  std::vector<int32_t> prompt_ids = g.prompt;
  Result<std::shared_ptr<RequestHandle>> handle =
      scheduler.Submit(std::move(g));
  if (!handle.ok()) return Reply(res, FromStatus(handle.status()));
  requests[endpoint == Endpoint::kChatCompletions]->Inc();

  ResponseMeta meta{endpoint, NewResponseId(endpoint), std::time(nullptr),
                    options.model_id, r.include_usage};
  auto responder = std::make_shared<Responder>(
      *this, std::move(*handle), r, std::move(prompt_ids), caller->tenant);
  using Update = Responder::Update;
  const bool with_logprobs = r.logprobs >= 0;
  if (!r.stream) {
    std::vector<Choice> choices(size_t(responder->choices()));
    std::vector<Update> updates;
    while (!responder->done()) {
      if (!responder->Next(std::chrono::milliseconds(1000), &updates)) continue;
      for (Update& u : updates) {
        Choice& c = choices[size_t(u.choice)];
        c.text += u.text;
        for (LogprobEntry& e : u.logprobs) c.logprobs.push_back(std::move(e));
      }
    }
    if (std::optional<Status> failed = responder->failure()) {
      return Reply(res, FromStatus(*failed));
    }
    size_t echo_entries = 0;
    if (r.echo && with_logprobs) echo_entries = responder->prompt_size();
    for (int i = 0; i < int(choices.size()); ++i) {
      choices[size_t(i)].index = i;
      choices[size_t(i)].finish = responder->reason(i);
      choices[size_t(i)].has_logprobs = with_logprobs;
    }
    if (r.best_of > r.n) {
      choices = BestOf(std::move(choices), size_t(r.n), echo_entries);
      if (!with_logprobs) {
        for (Choice& c : choices) {
          c.has_logprobs = false;
          c.logprobs.clear();
        }
      }
    }
    res.status = 200;
    res.set_content(CompletionResponse(meta, choices, responder->usage()),
                    std::string(kJson));
    return;
  }
  res.set_header("Cache-Control", "no-cache");
  // Per choice: whether its first chunk went out (chat's carries the role).
  auto started =
      std::make_shared<std::vector<bool>>(size_t(responder->choices()), false);
  res.set_chunked_content_provider(
      "text/event-stream",
      [responder, meta, started, with_logprobs](size_t,
                                                httplib::DataSink& sink) {
        std::vector<Update> updates;
        while (!responder->Next(std::chrono::milliseconds(100), &updates)) {
          if (!sink.is_writable()) return false;  // the releaser cancels
        }
        std::string out;
        for (Update& u : updates) {
          Choice c;
          c.index = u.choice;
          c.has_logprobs = with_logprobs;
          if (!u.text.empty() || !u.logprobs.empty()) {
            c.text = std::move(u.text);
            c.logprobs = std::move(u.logprobs);
            out +=
                SseEvent(StreamChunk(meta, c, !(*started)[size_t(u.choice)]));
            (*started)[size_t(u.choice)] = true;
          }
          if (u.finished && !responder->failure()) {
            Choice last;
            last.index = u.choice;
            last.finish = responder->reason(u.choice);
            out += SseEvent(
                StreamChunk(meta, last, !(*started)[size_t(u.choice)]));
            (*started)[size_t(u.choice)] = true;
          }
        }
        const bool finished = responder->done();
        if (finished) {
          if (std::optional<Status> failed = responder->failure()) {
            out += SseEvent(FromStatus(*failed).ToJson());
          } else if (meta.include_usage) {
            out += SseEvent(StreamUsageChunk(meta, responder->usage()));
          }
          out += kSseDone;
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          return false;  // the client is gone; the releaser cancels
        }
        if (finished) sink.done();
        return true;
      },
      // Whatever way the stream ends, the request ends with it.
      [responder](bool) { responder->Abandon(); });
}

namespace {

// A histogram as the dashboard draws it: per-bucket counts (not
// cumulative), the last one past the largest bound.
Json HistogramJson(const Histogram& h) {
  const Histogram::Snapshot snap = h.Read();
  Json counts = Json::array();
  uint64_t below = 0;
  for (const uint64_t c : snap.cumulative) {
    counts.push_back(c - std::min(c, below));
    below = std::max(below, c);
  }
  return Json{{"le", h.upper_bounds()},
              {"counts", counts},
              {"count", snap.count},
              {"sum", snap.sum}};
}

// The Content-Security-Policy of the dashboard page: nothing but its own
// inline script and style (by their SHA-256) and fetches of its own origin.
std::string DashboardPolicy(std::string_view page) {
  std::string sources[2];  // script, style
  const std::string_view opens[2] = {"<script>", "<style>"};
  const std::string_view closes[2] = {"</script>", "</style>"};
  for (int i = 0; i < 2; ++i) {
    const std::string_view open = opens[i], close = closes[i];
    for (size_t at = page.find(open); at != std::string_view::npos;
         at = page.find(open, at)) {
      // Not one inside a comment.
      const size_t comment = page.rfind("<!--", at);
      if (comment != std::string_view::npos && page.find("-->", comment) > at) {
        at = page.find("-->", comment);
        continue;
      }
      at += open.size();
      const size_t end = page.find(close, at);
      if (end == std::string_view::npos) break;
      unsigned char digest[SHA256_DIGEST_LENGTH];
      SHA256(reinterpret_cast<const unsigned char*>(page.data() + at), end - at,
             digest);
      unsigned char b64[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
      EVP_EncodeBlock(b64, digest, SHA256_DIGEST_LENGTH);
      sources[i]
          .append(" 'sha256-")
          .append(reinterpret_cast<const char*>(b64))
          .append("'");
      at = end;
    }
  }
  return "default-src 'none'; script-src" + sources[0] + "; style-src" +
         sources[1] +
         "; connect-src 'self'; img-src data:; base-uri 'none'; "
         "form-action 'none'; frame-ancestors 'none'";
}

}  // namespace

Json HttpServer::Impl::DashboardJson() {
  constexpr size_t kHottest = 8;
  const kvcache::KvStats s = kv.Stats();
  const SchedulerStats q = scheduler.Stats();
  Json tiers = Json::array();
  const std::vector<kvcache::TierCounters> tier_stats = kv.TierStats();
  for (size_t t = 0; t < tier_stats.size(); ++t) {
    const kvcache::TierCounters& c = tier_stats[t];
    tiers.push_back(
        {{"name", c.name},
         {"objects", c.store.objects},
         {"bytes_used", c.store.bytes_used},
         {"hits", c.store.hits},
         {"misses", c.store.misses},
         {"loaded_blocks", c.loaded_blocks},
         {"load_failures", c.load_failures},
         {"bytes_read", c.store.bytes_read},
         {"bytes_written", c.store.bytes_written},
         {"queue_objects", c.store.queue_objects},
         {"errors", c.store.errors},
         {"load_seconds", HistogramJson(*tier_metrics[t].load_seconds)}});
  }
  Json hottest = Json::array();
  for (const kvcache::HotPrefix& p : kv.HottestPrefixes(kHottest)) {
    Json held = Json::array();
    for (size_t t = 0; t < tier_metrics.size(); ++t) {
      if (p.in_tiers & (1u << t)) held.push_back(tier_metrics[t].name);
    }
    hottest.push_back({{"tokens", p.tokens},
                       {"hits", p.hits},
                       {"in_use", p.in_use},
                       {"tiers", held},
                       {"first_tokens", p.first_tokens},
                       {"text", model.tokenizer().Decode(p.first_tokens)}});
  }
  return Json{{"model", options.model_id},
              {"uptime_seconds", std::time(nullptr) - created},
              {"kv",
               {{"capacity_blocks", s.capacity_blocks},
                {"used_blocks", s.used_blocks},
                {"cached_blocks", s.cached_blocks},
                {"free_blocks", s.free_blocks},
                {"block_tokens", s.block_tokens},
                {"block_bytes", s.block_bytes},
                {"kv_type_k", kernels::KvTypeName(s.kv_format.k)},
                {"kv_type_v", kernels::KvTypeName(s.kv_format.v)},
                {"queried_tokens", s.queried_tokens},
                {"hit_tokens", s.hit_tokens},
                {"evictions", s.evictions},
                {"allocations", s.allocations}}},
              {"requests",
               {{"running", q.running},
                {"waiting", q.waiting},
                {"loading", q.loading},
                {"submitted", q.requests_submitted},
                {"finished", q.requests_finished},
                {"rejected", rejected->Value()},
                {"preemptions", q.preemptions},
                {"prompt_tokens", q.prompt_tokens},
                {"cached_tokens", q.cached_tokens},
                {"generated_tokens", q.generated_tokens}}},
              {"tiers", tiers},
              {"hottest", hottest},
              {"ttft", HistogramJson(*ttft)},
              {"itl", HistogramJson(*itl)}};
}

Json HttpServer::Impl::KvStatsJson() {
  const kvcache::KvStats s = kv.Stats();
  const SchedulerStats q = scheduler.Stats();
  Json tiers = Json::array();
  for (const kvcache::TierCounters& c : kv.TierStats()) {
    tiers.push_back({{"name", c.name},
                     {"write_policy", kvcache::TierWritePolicyName(c.write)},
                     {"loaded_blocks", c.loaded_blocks},
                     {"load_failures", c.load_failures},
                     {"queued_blocks", c.queued_blocks},
                     {"hits", c.store.hits},
                     {"misses", c.store.misses},
                     {"bytes_read", c.store.bytes_read},
                     {"bytes_written", c.store.bytes_written},
                     {"writes", c.store.writes},
                     {"dropped_writes", c.store.dropped_writes},
                     {"errors", c.store.errors},
                     {"evictions", c.store.evictions},
                     {"corrupt_dropped", c.store.corrupt_dropped},
                     {"forged_dropped", c.store.forged_dropped},
                     {"objects", c.store.objects},
                     {"bytes_used", c.store.bytes_used},
                     {"queue_objects", c.store.queue_objects},
                     {"queue_bytes", c.store.queue_bytes},
                     {"last_error", c.store.last_error}});
  }
  Json sequences = Json::array();
  for (const SequenceHolding& h : q.sequences) {
    sequences.push_back({{"id", h.id},
                         {"positions", h.positions},
                         {"blocks", h.blocks},
                         {"bytes", uint64_t(h.blocks) * s.block_bytes},
                         {"kv_policy", h.kv_policy}});
  }
  return Json{
      {"capacity_blocks", s.capacity_blocks},
      {"used_blocks", s.used_blocks},
      {"cached_blocks", s.cached_blocks},
      {"free_blocks", s.free_blocks},
      {"block_tokens", s.block_tokens},
      {"block_bytes", s.block_bytes},
      {"capacity_tokens", s.capacity_tokens()},
      {"kv_type_k", kernels::KvTypeName(s.kv_format.k)},
      {"kv_type_v", kernels::KvTypeName(s.kv_format.v)},
      {"bytes_per_token", s.bytes_per_token},
      {"tier_codec", store::CodecName(s.tier_codec)},
      {"tier_chunk_blocks", s.tier_chunk_blocks},
      {"queried_tokens", s.queried_tokens},
      {"hit_tokens", s.hit_tokens},
      {"hit_rate", s.queried_tokens > 0
                       ? double(s.hit_tokens) / double(s.queried_tokens)
                       : 0.0},
      {"evictions", s.evictions},
      {"cow_copies", s.cow_copies},
      {"allocations", s.allocations},
      {"shared_loads", s.shared_loads},
      {"layered_loads", s.layered_loads},
      {"layered_load_failures", s.layered_load_failures},
      {"tiers", tiers},
      {"compression",
       {{"compressions", q.compressions},
        {"evicted_tokens", q.evicted_tokens},
        {"failures", q.compression_failures},
        {"seconds", q.compress_seconds},
        {"blocks_before", s.rewrite_blocks_before},
        {"blocks_after", s.rewrite_blocks_after},
        {"recompressions", q.recompressions},
        {"documents_stored", s.rows_published},
        {"documents_mapped", q.compressed_prefix_hits},
        {"document_tokens_mapped", q.compressed_prefix_tokens}}},
      {"sequences", sequences},
      {"scheduler",
       {{"waiting", q.waiting},
        {"running", q.running},
        {"requests_submitted", q.requests_submitted},
        {"requests_finished", q.requests_finished},
        {"preemptions", q.preemptions},
        {"prompt_tokens", q.prompt_tokens},
        {"cached_tokens", q.cached_tokens},
        {"loading", q.loading},
        {"generated_tokens", q.generated_tokens},
        {"steps", q.steps},
        {"bookkeeping_share",
         q.step_seconds > 0 ? 1 - q.forward_seconds / q.step_seconds : 0.0}}}};
}

// POST /kv/lookup: a completions-style {"prompt": text | ids} or a chat-style
// {"messages": [...]}, with an optional "cache_salt".
void HttpServer::Impl::Lookup(const httplib::Request& req,
                              httplib::Response& res) {
  const std::optional<Caller> caller = Authenticate(req, res);
  if (!caller) return;
  ParseLimits limits;
  limits.max_body_bytes = options.max_body_bytes;
  if (std::optional<ApiError> e = BodyTooLong(req, Endpoint::kCompletions)) {
    return Reply(res, *e);
  }
  std::optional<ParseSlot> slot(std::in_place, parse_slots);
  auto parsed = ParseLookupRequest(req.body, limits);
  if (auto* e = std::get_if<ApiError>(&parsed)) return Reply(res, *e);
  const CompletionRequest& r = std::get<CompletionRequest>(parsed);
  auto prompt = PromptTokens(r);
  slot.reset();
  if (auto* e = std::get_if<ApiError>(&prompt)) return Reply(res, *e);
  const std::vector<int32_t>& ids = std::get<std::vector<int32_t>>(prompt);
  // The caller's own namespace only.
  const kvcache::PrefixHit hit = scheduler.CachedPrefix(
      ids, TenantSalt(*caller, r.cache_salt.value_or("")));
  Json by_tier = {{"dram", hit.dram_tokens}};
  for (size_t t = 0; t < hit.tier_tokens.size(); ++t) {
    by_tier[tier_metrics[t].name] = hit.tier_tokens[t];
  }
  Reply(res, Json{{"prompt_tokens", ids.size()},
                  {"cached_tokens", hit.total()},
                  {"cached_tokens_by_tier", by_tier}});
}

void HttpServer::Impl::Routes() {
  http.set_payload_max_length(options.max_body_bytes);
  const int threads = options.http_threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // httplib reads a POST's body after the pre-routing handler: a POST
  // refused there would leave its body in a keep-alive connection, to be
  // read as the client's next request (which got a 400 for it). POSTs are
  // screened in their routes instead.
  using Handled = httplib::Server::HandlerResponse;
  http.set_pre_routing_handler([this](const auto& req, auto& res) {
    return req.method == "POST" ? Handled::Unhandled : Screen(req, res);
  });
  const auto post = [this](const char* path, httplib::Server::Handler route) {
    http.Post(path, [this, route](const auto& req, auto& res) {
      if (Screen(req, res) == Handled::Unhandled) route(req, res);
    });
  };
  post("/v1/completions", [this](const auto& req, auto& res) {
    Complete(Endpoint::kCompletions, req, res);
  });
  post("/v1/chat/completions", [this](const auto& req, auto& res) {
    Complete(Endpoint::kChatCompletions, req, res);
  });
  http.Options(".*", [](const auto&, auto& res) {
    // Reached only without an Origin (Screen answers preflights).
    res.status = 204;
  });
  http.Get("/v1/models", [this](const auto& req, auto& res) {
    if (!Authenticate(req, res)) return;
    const kvcache::KvStats s = kv.Stats();
    std::vector<std::string> tiers;
    for (const TierMetrics& t : tier_metrics) tiers.push_back(t.name);
    res.set_content(
        ModelsResponse(
            {.id = options.model_id,
             .created = created,
             .max_model_len = scheduler.options().context,
             .kv_type_k = std::string(kernels::KvTypeName(s.kv_format.k)),
             .kv_type_v = std::string(kernels::KvTypeName(s.kv_format.v)),
             .block_tokens = int64_t(s.block_tokens),
             .capacity_tokens = int64_t(s.capacity_tokens()),
             .tier_codec = store::CodecName(s.tier_codec),
             .tiers = std::move(tiers)}),
        std::string(kJson));
  });
  // llama.cpp's tokenizer endpoints (serve/tokenize_api.h), for any caller.
  ParseLimits body_limits;
  body_limits.max_body_bytes = options.max_body_bytes;
  post("/tokenize", [this, body_limits](const auto& req, auto& res) {
    if (!Authenticate(req, res)) return;
    ParseSlot slot(parse_slots);
    auto parsed = ParseTokenizeRequest(req.body, body_limits);
    if (auto* e = std::get_if<ApiError>(&parsed)) return Reply(res, *e);
    res.set_content(
        TokenizeResponse(model.tokenizer(), std::get<TokenizeRequest>(parsed)),
        std::string(kJson));
  });
  post("/detokenize", [this, body_limits](const auto& req, auto& res) {
    if (!Authenticate(req, res)) return;
    ParseSlot slot(parse_slots);
    auto parsed = ParseDetokenizeRequest(req.body, body_limits,
                                         model.tokenizer().vocab_size());
    if (auto* e = std::get_if<ApiError>(&parsed)) return Reply(res, *e);
    res.set_content(DetokenizeResponse(model.tokenizer(),
                                       std::get<std::vector<int32_t>>(parsed)),
                    std::string(kJson));
  });
  // The dashboard: the page holds no data, so it is served to any caller
  // Screen lets through (a browser cannot send a key when navigating); its
  // script fetches /dashboard/data, which needs an admin key as /metrics
  // does.
  http.Get("/dashboard",
           [policy = DashboardPolicy(kDashboardHtml)](const auto&, auto& res) {
             res.set_header("Content-Security-Policy", policy);
             res.set_header("X-Content-Type-Options", "nosniff");
             res.set_header("Referrer-Policy", "no-referrer");
             res.set_header("Cache-Control", "no-cache");
             res.set_content(kDashboardHtml.data(), kDashboardHtml.size(),
                             "text/html; charset=utf-8");
           });
  http.Get("/dashboard/data", [this](const auto& req, auto& res) {
    if (!Admin(req, res)) return;
    res.set_header("Cache-Control", "no-store");
    Reply(res, DashboardJson());
  });
  http.Get("/health", [](const auto&, auto& res) {
    Reply(res, Json{{"status", "ok"}});
  });
  http.Get("/metrics", [this](const auto& req, auto& res) {
    if (!Admin(req, res)) return;
    {
      std::lock_guard<std::mutex> lock(scrape_mu);
      const kvcache::KvStats s = kv.Stats();
      const SchedulerStats q = scheduler.Stats();
      CatchUp(evictions, s.evictions);
      CatchUp(preemptions, q.preemptions);
      CatchUp(compressions, q.compressions);
      CatchUp(evicted_tokens, uint64_t(q.evicted_tokens));
      CatchUp(compressed_prefix_hits, q.compressed_prefix_hits);
      double held = 0;
      for (const SequenceHolding& h : q.sequences) {
        held += double(h.blocks) * double(s.block_bytes);
      }
      sequence_bytes->Set(held);
      ScrapeTiers();
      blocks_used->Set(double(s.used_blocks));
      blocks_cached->Set(double(s.cached_blocks));
      blocks_free->Set(double(s.free_blocks));
      queue_depth->Set(double(q.waiting));
      running->Set(double(q.running));
      resident_bytes->Set(double(ResidentBytes()));
    }
    res.set_content(metrics.Render(), std::string(kPrometheusContentType));
  });
  http.Get("/kv/stats", [this](const auto& req, auto& res) {
    const std::optional<Caller> caller = Authenticate(req, res);
    if (!caller) return;
    if (caller->admin) return Reply(res, KvStatsJson());
    // A tenant sees its own counters, nothing of the others'.
    TenantCounters c;
    {
      std::lock_guard<std::mutex> lock(tenants_mu);
      if (auto it = tenants.find(caller->tenant); it != tenants.end()) {
        c = it->second;
      }
    }
    Reply(res, Json{{"tenant", caller->tenant},
                    {"requests", c.requests},
                    {"prompt_tokens", c.prompt_tokens},
                    {"cached_tokens", c.cached_tokens},
                    {"completion_tokens", c.completion_tokens}});
  });
  post("/kv/lookup", [this](const auto& req, auto& res) { Lookup(req, res); });
  post("/kv/clear", [this](const auto& req, auto& res) {
    if (!Admin(req, res)) return;
    Reply(res, Json{{"evicted_blocks", kv.Clear()}});
  });
  // Statuses set by httplib itself (unknown route 404, oversized body 413,
  // unparsable request 400) get an OpenAI-style body too.
  http.set_error_handler([this](const auto&, auto& res) {
    if (!res.body.empty()) {
      if (res.status >= 400) rejected->Inc();
      return;
    }
    rejected->Inc();
    ApiError e = res.status == 404 ? ApiError::NotFound("no such route")
                 : res.status == 413
                     ? ApiError::PayloadTooLarge(
                           "the body exceeds " +
                           std::to_string(options.max_body_bytes) + " bytes")
                     : ApiError::BadRequest("malformed HTTP request");
    e.http_status = res.status;
    res.set_content(e.ToJson(), std::string(kJson));
  });
  http.set_exception_handler([](const auto&, auto& res, std::exception_ptr) {
    Reply(res, ApiError::Internal("internal error"));
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Create(
    const Model& model, Scheduler& scheduler, kvcache::KvManager& kv,
    const ServerOptions& options) {
  auto impl = std::make_unique<Impl>(model, scheduler, kv, options);
  if (options.port == 0) {
    impl->port = impl->http.bind_to_any_port(options.host);
  } else if (impl->http.bind_to_port(options.host, options.port)) {
    impl->port = options.port;
  } else {
    impl->port = -1;
  }
  if (impl->port <= 0) {
    return Status::IOError("cannot listen on " + options.host + ":" +
                           std::to_string(options.port));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port; }

void HttpServer::SetApiKeys(ApiKeys keys) {
  std::lock_guard<std::mutex> lock(impl_->keys_mu);
  if (impl_->keys == nullptr) return;  // started without keys: stays open
  impl_->keys = std::make_shared<const ApiKeys>(std::move(keys));
}

Status HttpServer::Serve() {
  impl_->serving = true;
  if (impl_->stopped) {
    impl_->serving = false;
    return Status::OK();
  }
  const bool ok = impl_->http.listen_after_bind();
  impl_->serving = false;
  if (!ok) return Status::IOError("the listening socket failed");
  return Status::OK();
}

void HttpServer::Stop() {
  impl_->stopped = true;
  while (impl_->serving && !impl_->http.is_running()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  impl_->http.stop();
}

}  // namespace kvstash
