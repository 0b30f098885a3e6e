// `kvstash demo`: writes a small random model once, serves it on a free
// loopback port (serve/stack.h) and shows a long prompt's time to first
// token cold and from the cache.
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "apps/serve_stack.h"
#include "model/random_model.h"

namespace kvstash::apps {
namespace {

using Clock = std::chrono::steady_clock;

struct DemoCommandOptions {
  std::string vocab_path;  // empty: the shared vocabulary beside the repo
  std::string cache_dir;   // empty: $XDG_CACHE_HOME/kvstash or ~/.cache/kvstash
  int prompt_tokens = 1500;
  ServeStackFlags stack;
};

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
  ServeStackFlags flags = options.stack;
  flags.stack.server.port = 0;
  flags.model_id = "demo-110m-q8_0";
  Result<std::unique_ptr<ServingStack>> stack =
      StartServeStack(std::move(*model), *path, flags);
  if (!stack.ok()) return Fail(stack.status().message());
  HttpServer& server = (*stack)->server();
  (*stack)->ServeInBackground();
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
      (*stack)->pool()->NumWorkers(), options.prompt_tokens, server.port());
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
    const kvcache::KvStats kv = (*stack)->kv().Stats();
    std::printf(
        "\nKV cache: %zu blocks cached, %zu free; hit rate %.0f%% of "
        "prompt tokens. Next: `kvstash serve --model %s`.\n",
        kv.cached_blocks, kv.free_blocks,
        100.0 * kv.hit_tokens / std::max<uint64_t>(1, kv.queried_tokens),
        path->c_str());
  }
  (void)(*stack)->Stop();
  return status;
}

}  // namespace

Command RegisterDemo(CLI::App& parent) {
  auto o = std::make_shared<DemoCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "demo",
      "first run: writes a small random model, serves it, and shows a long "
      "prompt's time to first token cold and from the cache");
  cmd->add_option("--vocab", o->vocab_path,
                  "vocabulary GGUF (../shared/vocab/"
                  "ggml-vocab-llama-spm.gguf)");
  cmd->add_option("--cache-dir", o->cache_dir,
                  "where the demo model is kept (~/.cache/kvstash)");
  cmd->add_option("--prompt-tokens", o->prompt_tokens,
                  "length of the shared prompt");
  AddServeStackFlags(cmd, &o->stack, /*network=*/false);
  return {cmd, [o] { return RunDemo(*o); }};
}

}  // namespace kvstash::apps
