// `kvstash serve`, `kvstash demo` and `kvstash bench serve`: the serving
// stack (KV block pool, scheduler, HTTP server) wired from flags.
#include <httplib.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "apps/tiers.h"
#include "bench/serve_bench.h"
#include "compress/policy.h"
#include "kvcache/kv_manager.h"
#include "model/random_model.h"
#include "serve/http_server.h"
#include "serve/scheduler.h"

namespace kvstash::apps {
namespace {

using Clock = std::chrono::steady_clock;

// Everything a running server holds, in construction order.
struct ServeStack {
  std::unique_ptr<Model> model;
  std::unique_ptr<ThreadPool> pool;
  OpenedTiers tiers;  // used by kv
  std::unique_ptr<kvcache::KvManager> kv;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<HttpServer> server;
};

bool Loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The keys the flags or KVSTASH_API_KEY give (none: an empty set).
Result<ApiKeys> ResolveApiKeys(const ServeStackOptions& o) {
  const char* env = std::getenv("KVSTASH_API_KEY");
  const bool from_env = env != nullptr && *env != '\0';
  if (int(!o.api_keys_file.empty()) + int(!o.api_key_file.empty()) +
          int(!o.api_key.empty()) + int(from_env) >
      1) {
    return Status::InvalidArgument(
        "give one of --api-keys, --api-key-file, --api-key and "
        "KVSTASH_API_KEY");
  }
  Result<ApiKeys> keys = ApiKeys();
  std::string source;
  if (!o.api_keys_file.empty()) {
    source = "--api-keys";
    keys = ApiKeys::Load(o.api_keys_file);
  } else if (!o.api_key_file.empty()) {
    source = "--api-key-file";
    Result<std::string> key = ReadSecretFile(o.api_key_file);
    keys = key.ok() ? ApiKeys::Single(*key) : Result<ApiKeys>(key.status());
  } else if (from_env) {
    source = "KVSTASH_API_KEY";
    keys = ApiKeys::Single(env);
  } else if (!o.api_key.empty()) {
    source = "--api-key";
    std::fprintf(stderr,
                 "kvstash: warning: --api-key is visible to every user of "
                 "this machine (ps); prefer --api-key-file\n");
    keys = ApiKeys::Single(o.api_key);
  }
  if (!keys.ok()) return keys.status().WithPrefix(source);
  return keys;
}

Result<ServeStack> StartStack(std::unique_ptr<Model> model,
                              const std::string& model_path,
                              const ServeStackOptions& o) {
  ServeStack s;
  s.model = std::move(model);
  kernels::KvFormat kv_format;
  KV_RETURN_IF_ERROR(ParseRunOptions(o.run, &s.pool, &kv_format));
  if (o.block_tokens < 1 || o.block_tokens > 1024) {
    return Status::InvalidArgument("--block-tokens must be in [1, 1024]");
  }
  if (o.port < 0 || o.port > 65535) {
    return Status::InvalidArgument("--port must be in [0, 65535]");
  }
  const ModelConfig& c = s.model->config();
  compress::PolicyOptions kv_compression;
  if (!o.kv_policy.policy.empty()) {
    kv_compression = o.kv_policy;
    const Status valid = compress::CheckPolicyOptions(kv_compression);
    if (!valid.ok()) return Status::InvalidArgument("--kv-" + valid.message());
    const std::string why = KvCompactionSupports(kv_format);
    if (!why.empty()) return Status::InvalidArgument("--kv-policy: " + why);
  }
  kvcache::KvManagerOptions kvo;
  kvo.layout = {c.n_layers, c.n_kv_heads, c.head_dim, o.block_tokens,
                kv_format};
  kvo.capacity_bytes = o.kv_cache_mb << 20;
  KV_ASSIGN_OR_RETURN(s.tiers, OpenTiers(o.tiers));
  kvo.tiers = s.tiers.options;
  kvo.tier_codec = s.tiers.codec;
  kvo.chunk_blocks = s.tiers.chunk_blocks;
  KV_ASSIGN_OR_RETURN(s.kv, kvcache::KvManager::Create(kvo));
  SchedulerOptions so;
  so.max_batch_tokens = o.max_batch_tokens;
  so.max_running = o.max_running;
  so.max_queue = o.max_queue;
  so.context = o.ctx > 0              ? o.ctx
               : c.context_length > 0 ? c.context_length
                                      : 2048;
  KV_ASSIGN_OR_RETURN(s.scheduler,
                      Scheduler::Create(*s.model, s.pool.get(), *s.kv, so));
  ServerOptions server;
  server.host = o.host;
  server.port = o.port;
  KV_ASSIGN_OR_RETURN(server.api_keys, ResolveApiKeys(o));
  if (server.api_keys.empty() && !Loopback(o.host)) {
    return Status::InvalidArgument(
        "--host " + o.host +
        " without API keys would let anyone who reaches it use and clear "
        "the cache: give --api-keys, --api-key-file or KVSTASH_API_KEY, or "
        "serve 127.0.0.1");
  }
  if (o.max_body_mb < 1 || o.max_body_mb > 1024) {
    return Status::InvalidArgument("--max-body-mb must be in [1, 1024]");
  }
  server.max_body_bytes = o.max_body_mb << 20;
  server.cors_origins = o.cors_origins;
  server.special_tokens_in_content = o.special_in_content;
  server.kv_compression = kv_compression;
  server.model_id = o.model_id.empty()
                        ? std::filesystem::path(model_path).filename().string()
                        : o.model_id;
  KV_ASSIGN_OR_RETURN(
      s.server, HttpServer::Create(*s.model, *s.scheduler, *s.kv, server));
  const kvcache::KvStats kv = s.kv->Stats();
  std::fprintf(stderr,
               "kvstash: serving %s on http://%s:%d (%zu threads, context %d, "
               "KV cache %s = %zu blocks of %zu tokens = %zu tokens at %s, "
               "%.0f bytes/token)\n",
               server.model_id.c_str(), o.host.c_str(), s.server->port(),
               s.pool->NumWorkers(), so.context,
               HumanBytes(kv.capacity_blocks * kv.block_bytes).c_str(),
               kv.capacity_blocks, kv.block_tokens, kv.capacity_tokens(),
               kernels::KvFormatName(kv.kv_format).c_str(), kv.bytes_per_token);
  for (const std::string& tier : s.tiers.descriptions) {
    std::fprintf(stderr, "kvstash: KV tier %s\n", tier.c_str());
  }
  if (server.api_keys.empty()) {
    std::fprintf(stderr,
                 "kvstash: no API keys: one tenant, every caller an admin "
                 "(loopback only)\n");
  } else {
    std::fprintf(stderr,
                 "kvstash: %zu API keys; each tenant has its own cache "
                 "namespace\n",
                 server.api_keys.size());
  }
  return s;
}

// Text for the demo's shared prompt: numbered sections of a made-up policy,
// cut to `tokens` tokens.
std::string DemoDocument(const Tokenizer& tok, int tokens) {
  static constexpr const char* kSentences[] = {
      "Orders ship within two business days from the warehouse nearest to "
      "the customer.",
      "Refunds are issued to the original payment method within ten days of "
      "receiving the returned item.",
      "Gift cards never expire and can be combined with any other offer.",
      "Support is available by chat from eight in the morning to eight in "
      "the evening, every day of the week.",
      "Damaged items must be reported within forty-eight hours, with a "
      "photograph of the package.",
      "Members of the loyalty program earn one point for every dollar spent "
      "and receive free shipping.",
      "International orders may be subject to customs fees that the "
      "customer pays on delivery.",
      "Prices are reviewed every quarter and published on the first Monday "
      "of the month."};
  std::string doc = "Customer service handbook.\n";
  for (int section = 1;; ++section) {
    for (const char* s : kSentences) {
      std::string next =
          doc + "Section " + std::to_string(section) + ". " + s + "\n";
      if (int(tok.Encode(next, true).size()) > tokens) return doc;
      doc = std::move(next);
    }
  }
}

struct DemoReply {
  double ttft_s = -1;
  double total_s = 0;
  int prompt_tokens = 0;
  int cached_tokens = 0;
  std::string from_tiers;  // ", from disk N" per tier below DRAM that served
  std::string text;
};

// Streams one completion and times its first token as a client sees it.
Result<DemoReply> StreamCompletion(int port, const std::string& prompt) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.body = Json{{"prompt", prompt},
                  {"max_tokens", 16},
                  {"temperature", 0},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}}}
                 .dump();
  DemoReply reply;
  std::string body;
  const Clock::time_point start = Clock::now();
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (reply.ttft_s < 0) {
      reply.ttft_s =
          std::chrono::duration<double>(Clock::now() - start).count();
    }
    body.append(data, n);
    return true;
  };
  httplib::Response res;
  httplib::Error error;
  if (!client.send(req, res, error)) {
    return Status::IOError("demo: request failed: " +
                           httplib::to_string(error));
  }
  reply.total_s = std::chrono::duration<double>(Clock::now() - start).count();
  if (res.status != 200) {
    return Status::Internal("demo: HTTP " + std::to_string(res.status) + ": " +
                            body);
  }
  std::istringstream lines(body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: {", 0) != 0) continue;
    const Json chunk = Json::parse(line.substr(6), nullptr, false);
    if (chunk.is_discarded()) continue;
    if (chunk.contains("usage") && chunk["usage"].is_object()) {
      reply.prompt_tokens = chunk["usage"]["prompt_tokens"];
      const Json& details = chunk["usage"]["prompt_tokens_details"];
      reply.cached_tokens = details["cached_tokens"];
      for (const auto& [tier, tokens] :
           details["kvstash_cached_tokens_by_tier"].items()) {
        if (tier != "dram" && tokens.get<int>() > 0) {
          reply.from_tiers += ", from " + tier + " " + tokens.dump();
        }
      }
    }
    if (chunk.contains("choices") && !chunk["choices"].empty()) {
      reply.text += chunk["choices"][0].value("text", "");
    }
  }
  return reply;
}

std::string DefaultCacheDir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    return std::string(xdg) + "/kvstash";
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    return std::string(home) + "/.cache/kvstash";
  }
  return ".kvstash-cache";
}

std::string DefaultVocab() {
  const char* shared = std::getenv("KVSTASH_SHARED_DIR");
  return std::string(shared && *shared ? shared : "../shared") +
         "/vocab/ggml-vocab-llama-spm.gguf";
}

// The demo model (the 110m preset, q8_0), written once into the cache dir.
Result<std::string> DemoModel(const DemoCommandOptions& o, ThreadPool* pool) {
  const std::string dir = o.cache_dir.empty() ? DefaultCacheDir() : o.cache_dir;
  const std::string path = dir + "/demo-110m-q8_0.gguf";
  if (std::filesystem::exists(path)) return path;
  const std::string vocab =
      o.vocab_path.empty() ? DefaultVocab() : o.vocab_path;
  if (!std::filesystem::exists(vocab)) {
    return Status::NotFound("demo: vocabulary '" + vocab +
                            "' not found; pass --vocab or set "
                            "KVSTASH_SHARED_DIR to the shared/ folder");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Status::IOError("demo: cannot create " + dir + ": " + ec.message());
  }
  RandomModelOptions m;
  KV_RETURN_IF_ERROR(ApplyRandomModelPreset("110m", &m));
  m.type = kernels::DType::kQ8_0;
  m.vocab_path = vocab;
  std::fprintf(stderr,
               "kvstash demo: writing a random-weight 110m model to "
               "%s (once) ...\n",
               path.c_str());
  KV_RETURN_IF_ERROR(WriteRandomModel(m, path, pool));
  return path;
}

}  // namespace

int RunServe(const ServeCommandOptions& options) {
  // Buffers of 1 MiB and more (request bodies, their parse) are mapped and
  // unmapped, never kept in a worker thread's heap: a body near the limit
  // does not grow the server's memory for good (glibc would otherwise raise
  // the threshold after the first such free and keep the next ones).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // SIGINT/SIGTERM are taken by a waiting thread (every thread started from
  // here inherits the blocked mask) and stop the server cleanly.
  // SIGHUP re-reads --api-keys.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<ServeStack> stack =
      StartStack(std::move(*model), options.model.model_path, options.stack);
  if (!stack.ok()) return Fail(stack.status().message());
  HttpServer& server = *stack->server;
  const std::string& keys_file = options.stack.api_keys_file;
  std::thread waiter([&] {
    int sig = 0;
    while (sigwait(&stop_signals, &sig) == 0 && sig == SIGHUP) {
      if (keys_file.empty()) continue;
      Result<ApiKeys> keys = ApiKeys::Load(keys_file);
      if (!keys.ok()) {
        std::fprintf(stderr,
                     "kvstash: SIGHUP: keeping the API keys in force: %s\n",
                     keys.status().message().c_str());
        continue;
      }
      std::fprintf(stderr, "kvstash: SIGHUP: %zu API keys from %s\n",
                   keys->size(), keys_file.c_str());
      server.SetApiKeys(std::move(*keys));
    }
    server.Stop();
  });
  const Status served = server.Serve();
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  if (!served.ok()) return Fail(served.message());
  std::fprintf(stderr, "kvstash: stopped\n");
  return 0;
}

int RunDemo(const DemoCommandOptions& options) {
  if (options.prompt_tokens < 64) return Fail("--prompt-tokens must be >= 64");
  std::unique_ptr<ThreadPool> writer_pool = MakePool(options.stack.run.threads);
  Result<std::string> path = DemoModel(options, writer_pool.get());
  writer_pool.reset();
  if (!path.ok()) return Fail(path.status().message());
  Result<std::unique_ptr<Model>> model = Model::Load(*path, "");
  if (!model.ok()) return Fail(model.status().message());
  const std::string doc =
      DemoDocument((*model)->tokenizer(), options.prompt_tokens);
  ServeStackOptions so = options.stack;
  so.port = 0;
  so.model_id = "demo-110m-q8_0";
  Result<ServeStack> stack = StartStack(std::move(*model), *path, so);
  if (!stack.ok()) return Fail(stack.status().message());
  HttpServer& server = *stack->server;
  std::thread serving([&] { (void)server.Serve(); });
  struct Step {
    const char* what;
    std::string prompt;
  };
  const Step steps[] = {
      {"1. a long prompt this server has not seen (cold, unless a "
       "--disk-cache or --redis tier holds it)",
       doc + "\nQuestion: how long do refunds take?\nAnswer:"},
      {"2. the same prompt again",
       doc + "\nQuestion: how long do refunds take?\nAnswer:"},
      {"3. the same document, another question",
       doc + "\nQuestion: when is support open?\nAnswer:"}};
  std::printf(
      "kvstash demo: a random-weight 110m model (its text is noise; the "
      "speed is real), %zu threads, prompts of about %d tokens, streamed "
      "over HTTP from 127.0.0.1:%d.\n\n",
      stack->pool->NumWorkers(), options.prompt_tokens, server.port());
  double first_ttft = 0;
  int status = 0;
  for (const Step& step : steps) {
    Result<DemoReply> r = StreamCompletion(server.port(), step.prompt);
    if (!r.ok()) {
      status = Fail(r.status().message());
      break;
    }
    if (first_ttft == 0) first_ttft = r->ttft_s;
    std::printf(
        "%s\n   time to first token %8.3f s  (%5.1fx faster than step "
        "1)   cached prompt tokens %d of %d%s\n   text: %.60s...\n",
        step.what, r->ttft_s, first_ttft / r->ttft_s, r->cached_tokens,
        r->prompt_tokens, r->from_tiers.c_str(), r->text.c_str());
  }
  if (status == 0) {
    const kvcache::KvStats kv = stack->kv->Stats();
    std::printf(
        "\nKV cache: %zu blocks cached, %zu free; hit rate %.0f%% of "
        "prompt tokens. Next: `kvstash serve --model %s`.\n",
        kv.cached_blocks, kv.free_blocks,
        100.0 * kv.hit_tokens / std::max<uint64_t>(1, kv.queried_tokens),
        path->c_str());
  }
  server.Stop();
  serving.join();
  return status;
}

int RunBenchServe(const BenchServeCommandOptions& options) {
  std::unique_ptr<ThreadPool> pool;
  bench::ServeBenchOptions o;
  if (Status s = ParseRunOptions(options.run, &pool, &o.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  o.prompt_tokens = options.prompt_tokens;
  o.new_tokens = options.new_tokens;
  o.streams = options.streams;
  o.choices = options.choices;
  o.gen_tokens = options.gen_tokens;
  o.repeat = options.repeat;
  o.block_tokens = options.block_tokens;
  o.kv_cache_mb = options.kv_cache_mb;
  o.max_batch_tokens = options.max_batch_tokens;
  o.kv_compression = options.kv_policy;
  if (!o.kv_compression.policy.empty()) {
    const Status valid = compress::CheckPolicyOptions(o.kv_compression);
    if (!valid.ok()) return Fail("--kv-" + valid.message());
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<bench::ServeBenchResult> r =
      bench::RunServeBench(**model, *pool, o, PrintProgress);
  if (!r.ok()) return Fail(r.status().message());
  if (options.json) {
    PrintJson({{"model", options.model.model_path},
               {"threads", pool->NumWorkers()},
               {"prompt_tokens", o.prompt_tokens},
               {"new_tokens", o.new_tokens},
               {"streams", o.streams},
               {"repeat", o.repeat},
               {"cold_ttft_s", SpreadJson(r->cold_ttft_s)},
               {"cold_prompt_s", SpreadJson(r->cold_prompt_s)},
               {"warm_ttft_s", SpreadJson(r->warm_ttft_s)},
               {"warm_prompt_s", SpreadJson(r->warm_prompt_s)},
               {"warm_cached_tokens", r->warm_cached_tokens},
               {"cold_over_warm_ttft", SpreadJson(r->cold_over_warm_ttft)},
               {"partial_ttft_s", SpreadJson(r->partial_ttft_s)},
               {"partial_prompt_s", SpreadJson(r->partial_prompt_s)},
               {"partial_cached_tokens", r->partial_cached_tokens},
               {"kv_policy", o.kv_compression.policy},
               {"kv_ratio", o.kv_compression.ratio},
               {"cold_kv_cache", r->cold_kv_cache},
               {"warm_kv_cache", r->warm_kv_cache},
               {"single_stream_tokens_per_s",
                SpreadJson(r->single_stream_tokens_per_s)},
               {"multi_stream_tokens_per_s",
                SpreadJson(r->multi_stream_tokens_per_s)},
               {"batching_speedup", SpreadJson(r->batching_speedup)},
               {"bookkeeping_share", SpreadJson(r->bookkeeping_share)},
               {"choices", o.choices},
               {"one_choice_s", SpreadJson(r->one_choice_s)},
               {"choices_s", SpreadJson(r->choices_s)},
               {"choices_over_one", SpreadJson(r->choices_over_one)},
               {"prompt_blocks", r->prompt_blocks},
               {"choices_allocations", r->choices_allocations}});
    return 0;
  }
  const auto& line = PrintSpreadLine;
  std::printf("model %s, %zu threads, %d runs\n",
              options.model.model_path.c_str(), pool->NumWorkers(), o.repeat);
  line("cold prompt: TTFT", r->cold_ttft_s, 1e3, "ms");
  line("cold prompt: prompt time", r->cold_prompt_s, 1e3, "ms");
  line("same prompt again: TTFT", r->warm_ttft_s, 1e3, "ms");
  line("same prompt again: prompt time", r->warm_prompt_s, 1e3, "ms");
  line("cold TTFT / warm TTFT", r->cold_over_warm_ttft, 1, "x");
  line("cached + new tokens: TTFT", r->partial_ttft_s, 1e3, "ms");
  line("cached + new tokens: prompt time", r->partial_prompt_s, 1e3, "ms");
  std::printf("%-40s %d and %d of %d\n", "cached tokens (warm, partial)",
              r->warm_cached_tokens, r->partial_cached_tokens, o.prompt_tokens);
  if (!o.kv_compression.policy.empty()) {
    std::printf("%-40s %s %.3g: cold %s, warm %s\n", "kv compression",
                o.kv_compression.policy.c_str(), o.kv_compression.ratio,
                r->cold_kv_cache.c_str(), r->warm_kv_cache.c_str());
  }
  line("decode, 1 stream", r->single_stream_tokens_per_s, 1, "tok/s");
  line("decode, " + std::to_string(o.streams) + " streams (aggregate)",
       r->multi_stream_tokens_per_s, 1, "tok/s");
  line("batching speedup", r->batching_speedup, 1, "x");
  line("bookkeeping share of step time", r->bookkeeping_share, 100, "%");
  line("cold prompt, 1 choice: wall time", r->one_choice_s, 1e3, "ms");
  line("cold prompt, " + std::to_string(o.choices) + " choices: wall time",
       r->choices_s, 1e3, "ms");
  line(std::to_string(o.choices) + " choices / 1 choice", r->choices_over_one,
       1, "x");
  std::printf("%-40s %llu (the prompt's: %d)\n",
              "blocks allocated for the choices",
              static_cast<unsigned long long>(r->choices_allocations),
              r->prompt_blocks);
  return 0;
}

}  // namespace kvstash::apps
