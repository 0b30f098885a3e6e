// `kvstash bench load`: the HTTP load generator (bench/load_bench.h) against
// a running server, its report as text or one JSON object.
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "base/file.h"
#include "bench/load_bench.h"

namespace kvstash::apps {
namespace {

struct BenchLoadCommandOptions {
  bench::LoadBenchOptions load;  // api_key and text come from the two below
  std::string api_key_file;      // else KVSTASH_API_KEY; neither: no key
  std::string prompts_file;      // words of the prompts; empty: built-in
  bool json = false;
};

Json LatencyJson(const bench::LatencySummary& s) {
  return Json{{"count", s.count},
              {"p50", s.p50},
              {"p90", s.p90},
              {"p99", s.p99},
              {"max", s.max}};
}

void PrintLatencyLine(const char* name, const bench::LatencySummary& s) {
  std::printf("%-36s p50 %.1f  p90 %.1f  p99 %.1f  max %.1f  (%zu)\n", name,
              s.p50 * 1e3, s.p90 * 1e3, s.p99 * 1e3, s.max * 1e3, s.count);
}

// RSS growth from minute 1 to the end, as a fraction; nullopt before a
// minute.
std::optional<double> GrowthSinceMinute1(const bench::LoadBenchResult& r) {
  const std::optional<bench::RssSample> minute1 = r.RssAt(60);
  if (!minute1 || r.rss.back().t_s <= minute1->t_s) return std::nullopt;
  return r.rss.back().bytes / minute1->bytes - 1;
}

Json RssJson(const bench::LoadBenchResult& r) {
  Json j{{"unknown", r.rss_unknown.empty() ? Json() : Json(r.rss_unknown)},
         {"failed_scrapes", r.rss_failed_scrapes}};
  if (r.rss.empty()) return j;
  const std::optional<bench::RssSample> minute1 = r.RssAt(60);
  const std::optional<double> growth = GrowthSinceMinute1(r);
  Json samples = Json::array();
  for (const bench::RssSample& s : r.rss) samples.push_back({s.t_s, s.bytes});
  j["start_bytes"] = r.rss.front().bytes;
  j["minute1_bytes"] = minute1 ? Json(minute1->bytes) : Json();
  j["end_bytes"] = r.rss.back().bytes;
  j["max_bytes"] = r.RssMax();
  j["growth_since_minute1"] = growth ? Json(*growth) : Json();
  j["samples"] = samples;  // [seconds since the start, bytes]
  return j;
}

void PrintText(const bench::LoadBenchOptions& o,
               const bench::LoadBenchResult& r) {
  std::printf("%s: %d clients for %.0f s (ran %.1f s), max_tokens %d\n",
              o.url.c_str(), o.clients, o.duration_s, r.elapsed_s,
              o.max_tokens);
  std::printf("%-36s %llu ok (%llu streamed), %llu failed, %llu cancelled\n",
              "well-formed requests", (unsigned long long)r.ok,
              (unsigned long long)r.streamed_ok, (unsigned long long)r.failed,
              (unsigned long long)r.cancelled);
  std::printf("%-36s %.2f\n", "requests/s (well-formed, completed)",
              r.requests_per_s());
  std::printf("%-36s %llu refused as expected, %llu accepted, %llu failed\n",
              "bad requests", (unsigned long long)r.bad_refused,
              (unsigned long long)r.bad_accepted,
              (unsigned long long)r.bad_failed);
  PrintLatencyLine("TTFT, streamed (ms)", r.ttft);
  PrintLatencyLine("latency, not streamed (ms)", r.latency);
  PrintLatencyLine("inter-token latency (ms)", r.itl);
  std::printf("%-36s %llu = %.1f tok/s\n", "tokens generated",
              (unsigned long long)r.completion_tokens, r.tokens_per_s());
  std::printf("%-36s %.3f (%llu of %llu)\n", "cached share of prompt tokens",
              r.cached_share(), (unsigned long long)r.cached_tokens,
              (unsigned long long)r.prompt_tokens);
  if (!r.rss.empty()) {
    const std::optional<bench::RssSample> minute1 = r.RssAt(60);
    const std::optional<double> growth = GrowthSinceMinute1(r);
    char since[32] = "n/a";
    if (growth) std::snprintf(since, sizeof(since), "%+.1f%%", *growth * 100);
    const std::string at1 =
        minute1 ? HumanBytes(uint64_t(minute1->bytes)) : "n/a";
    std::printf(
        "%-36s start %s, minute 1 %s, end %s, max %s; growth "
        "since minute 1 %s (%zu samples)\n",
        "server RSS", HumanBytes(uint64_t(r.rss.front().bytes)).c_str(),
        at1.c_str(), HumanBytes(uint64_t(r.rss.back().bytes)).c_str(),
        HumanBytes(uint64_t(r.RssMax())).c_str(), since, r.rss.size());
  }
  if (!r.rss_unknown.empty()) {
    std::printf("%-36s unknown: %s\n", "server RSS", r.rss_unknown.c_str());
  }
  for (const auto& [kind, f] : r.failures) {
    std::printf("failure %-28s %llu, the first: %s\n", kind.c_str(),
                (unsigned long long)f.count, f.example.c_str());
  }
  for (const auto& [kind, n] : r.bad_accepted_kinds) {
    std::printf("bad request accepted %-15s %llu\n", kind.c_str(),
                (unsigned long long)n);
  }
}

int RunBenchLoad(const BenchLoadCommandOptions& options) {
  bench::LoadBenchOptions o = options.load;
  const char* env = std::getenv("KVSTASH_API_KEY");
  const bool from_env = env != nullptr && *env != '\0';
  if (!options.api_key_file.empty() && from_env) {
    return Fail("give one of --api-key-file and KVSTASH_API_KEY");
  }
  if (!options.api_key_file.empty()) {
    Result<std::string> key = ReadSecretFile(options.api_key_file);
    if (!key.ok()) return Fail("--api-key-file: " + key.status().message());
    o.api_key = *key;
  } else if (from_env) {
    o.api_key = env;
  }
  if (!options.prompts_file.empty()) {
    Result<std::string> text = ReadFile(options.prompts_file);
    if (!text.ok()) return Fail(text.status().message());
    if (text->find_first_not_of(" \t\r\n\f\v") == std::string::npos) {
      return Fail("--prompts-file " + options.prompts_file + " has no words");
    }
    o.text = std::move(*text);
  }
  Result<bench::LoadBenchResult> r = bench::RunLoadBench(o, PrintProgress);
  if (!r.ok()) return Fail(r.status().message());
  if (options.json) {
    Json failures = Json::object();
    for (const auto& [kind, f] : r->failures) {
      failures[kind] = {{"count", f.count}, {"example", f.example}};
    }
    PrintJson({{"url", o.url},
               {"clients", o.clients},
               {"duration_s", o.duration_s},
               {"max_tokens", o.max_tokens},
               {"seed", o.seed},
               {"elapsed_s", r->elapsed_s},
               {"ok", r->ok},
               {"streamed_ok", r->streamed_ok},
               {"cancelled", r->cancelled},
               {"failed", r->failed},
               {"requests_per_s", r->requests_per_s()},
               {"bad_refused", r->bad_refused},
               {"bad_accepted", r->bad_accepted},
               {"bad_failed", r->bad_failed},
               {"bad_accepted_kinds", r->bad_accepted_kinds},
               {"failures", failures},
               {"ttft_s", LatencyJson(r->ttft)},
               {"latency_s", LatencyJson(r->latency)},
               {"itl_s", LatencyJson(r->itl)},
               {"completion_tokens", r->completion_tokens},
               {"tokens_per_s", r->tokens_per_s()},
               {"prompt_tokens", r->prompt_tokens},
               {"cached_tokens", r->cached_tokens},
               {"cached_share", r->cached_share()},
               {"rss", RssJson(*r)},
               {"passed", r->Passed()}});
  } else {
    PrintText(o, *r);
  }
  if (!r->Passed()) {
    return Fail(std::to_string(r->failed) + " well-formed requests failed, " +
                std::to_string(r->bad_accepted) +
                " bad requests were accepted and " +
                std::to_string(r->bad_failed) + " failed");
  }
  return 0;
}

}  // namespace

Command RegisterBenchLoad(CLI::App& parent) {
  auto o = std::make_shared<BenchLoadCommandOptions>();
  bench::LoadBenchOptions& l = o->load;
  CLI::App* cmd = parent.add_subcommand(
      "load",
      "HTTP load generator against a running server: N clients sending "
      "completions and chats, streamed or not, over shared prefixes, some "
      "streams cancelled, some requests bad; requests/s, TTFT and "
      "inter-token percentiles, failures by kind, the server's RSS; exits 1 "
      "when a well-formed request failed or a bad one was accepted");
  cmd->add_option("--url", l.url, "the server: http://HOST:PORT")->required();
  cmd->add_option("--clients", l.clients,
                  "concurrent clients, one connection each");
  cmd->add_option("--duration", l.duration_s,
                  "seconds of load; requests in flight then end");
  cmd->add_option(
      "--api-key-file", o->api_key_file,
      "a private file holding the API key (else KVSTASH_API_KEY); RSS is "
      "read from /metrics with it, which needs an admin key");
  cmd->add_option("--max-tokens", l.max_tokens,
                  "max_tokens of each well-formed request");
  cmd->add_option("--seed", l.seed, "seed of the prompts and of the mix");
  cmd->add_option("--prompts-file", o->prompts_file,
                  "text whose words the prompts are made of, "
                  "passages taken in order (built-in words)");
  cmd->add_option("--documents", l.documents,
                  "shared passages the prompts start with");
  cmd->add_option("--document-words", l.document_words,
                  "words per passage; a passage, a question and "
                  "--max-tokens must fit the server's context");
  cmd->add_option("--question-words", l.question_words,
                  "words per question after the passage");
  cmd->add_option("--chat-share", l.chat_share, "share of chat completions");
  cmd->add_option("--stream-share", l.stream_share,
                  "share of streamed requests");
  cmd->add_option("--cancel-share", l.cancel_share,
                  "share of streams closed mid-way");
  cmd->add_option("--cancel-after", l.cancel_after,
                  "chunks of text a cancelled stream reads");
  cmd->add_option("--unique-share", l.unique_share,
                  "share of prompts with a passage of their own "
                  "instead of a shared one");
  cmd->add_option("--bad-share", l.bad_share,
                  "share of bad requests, which must get a 4xx");
  cmd->add_option("--timeout", l.timeout_s,
                  "seconds to connect, and of silence before a "
                  "request times out");
  cmd->add_option("--rss-every", l.rss_every_s,
                  "seconds between reads of the server's RSS");
  cmd->add_option("--progress-every", l.progress_every_s,
                  "seconds between progress lines on stderr");
  AddJsonFlag(cmd, &o->json);

  return {cmd, [o] { return RunBenchLoad(*o); }};
}

}  // namespace kvstash::apps
