// HttpServer: the OpenAI-compatible HTTP front of kvstash (cpp-httplib).
//
// Endpoints:
//   POST /v1/completions, POST /v1/chat/completions  (streaming as SSE ending
//        with "data: [DONE]", or one JSON body); usage reports
//        prompt_tokens_details.cached_tokens;
//   GET  /v1/models (with max_model_len and the KV cache's types, blocks
//        and tiers), GET /health, GET /metrics (Prometheus text format);
//   POST /tokenize, POST /detokenize (llama.cpp's; serve/tokenize_api.h);
//   A request may ask for token eviction once its prompt is computed:
//   "kv_compression": {"policy": "snapkv", "ratio": 0.5} (compress/policy.h;
//   "policy": "none" turns the server's default off); usage then reports
//   kvstash_kv_compression (rows kept per layer and head, blocks before and
//   after).
//   GET  /kv/stats, POST /kv/lookup (a prompt, token ids or messages ->
//        cached prefix length), POST /kv/clear (evict every unreferenced
//        cached block).
//   GET  /dashboard (the live cache page, serve/dashboard.html: no data, so
//        no key) and GET /dashboard/data (what it draws: pool, hit rate,
//        hottest prefixes, tiers, requests, latency histograms; admin).
//
// A request is parsed and validated (serve/openai_api.h), tokenized (chat
// messages through the model's chat template family, model/chat_template.h),
// checked against the context, and submitted to the Scheduler; its tokens
// come back as events, are detokenized, cut at stop strings (TextStream) and
// written out. A client that disconnects from a stream has its request
// cancelled, which releases its blocks at the next scheduler step.
//
// Every error is an OpenAI-style JSON body with a 4xx/5xx status: malformed
// or invalid requests 400, a wrong or missing API key 401, a key without
// the role or a foreign Origin 403, unknown routes 404, bodies over the
// limit 413, a POST that is not application/json 415, a full queue 429. Nothing
// a client sends can crash the server.
//
// Thread-safety: Serve() runs the accept loop on the calling thread and
// handles requests on its own worker threads; Stop() may be called from any
// thread.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "base/status.h"
#include "kvcache/kv_manager.h"
#include "model/model.h"
#include "serve/api_keys.h"
#include "serve/scheduler.h"

namespace kvstash {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8080;                 // 0: any free port (see port())
  // When not empty, every endpoint but /health requires
  // "Authorization: Bearer <key>" of one of them (serve/api_keys.h): the
  // key names the caller's tenant, whose requests, lookups and counters are
  // its own; /kv/clear, /metrics and the global /kv/stats need an admin
  // key. Empty: one tenant, every caller an admin (bind to loopback then).
  // HttpServer::SetApiKeys replaces them while serving (SIGHUP).
  ApiKeys api_keys;
  // Origins (e.g. "http://localhost:3000") whose web pages may call the
  // server: their requests get CORS headers and preflights are answered. A
  // request with any other Origin is refused (403), and every POST must be
  // application/json, so a foreign page cannot drive the server.
  std::vector<std::string> cors_origins;
  // Whether text in chat messages that spells a control token ("</s>",
  // "<|im_start|>") becomes that token (the old behaviour, for trusted
  // clients). Off: only the chat template's own markers do; a message
  // cannot end its turn or forge another role's.
  bool special_tokens_in_content = false;
  // Requests parsed and tokenized at once; others wait their turn (bounds
  // the memory bodies being parsed take).
  int max_parsing = 4;
  std::string model_id = "kvstash";  // the name /v1/models reports
  size_t max_body_bytes = size_t{8} << 20;
  int http_threads = 64;  // connections served at once (streams hold one)
  // max_tokens when a request gives none (capped by the room left in the
  // context).
  int default_max_tokens = 256;
  // Token eviction for requests that do not ask ("kv_compression"); an
  // empty policy: none.
  compress::PolicyOptions kv_compression;
};

class HttpServer {
 public:
  // Binds host:port; IOError when that fails. The model, scheduler and KV
  // manager must outlive the server.
  static Result<std::unique_ptr<HttpServer>> Create(
      const Model& model, Scheduler& scheduler, kvcache::KvManager& kv,
      const ServerOptions& options);
  ~HttpServer();

  int port() const;
  // Replaces the API keys (a server started without keys stays without).
  void SetApiKeys(ApiKeys keys);
  // Serves until Stop(). IOError if the listening socket fails.
  Status Serve();
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstash
