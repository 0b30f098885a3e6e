// The load generator behind `kvstash bench load`: drives a running kvstash
// server (any OpenAI-compatible one, for the completion endpoints) over real
// HTTP from `clients` threads for `duration_s`. Each client loops until the
// time is up (a request in flight then runs to its end) on one keep-alive
// connection, drawing every request from a mix:
//   - bad (`bad_share` of all requests): malformed JSON, a body that is not
//     an object, a wrong content type, a field of the wrong type or out of
//     range, an oversized max_tokens, an unsupported parameter, a missing
//     prompt, an unknown chat role, stream_options without stream, an
//     invalid token id, an unknown route, and to a server that checks keys
//     (one that refuses GET /v1/models without a key) a wrong key;
//   - well-formed, the rest: completions or chat completions (`chat_share`),
//     streamed as Server-Sent Events with stream_options.include_usage or
//     not (`stream_share`), greedy or sampled with a seed, `max_tokens`
//     each; the prompt is one of `documents` shared passages (the system
//     prompt of a chat) followed by a question of its own, so that the
//     prefix cache is exercised, or, for `unique_share` of them, a passage
//     of its own;
//   - `cancel_share` of the streamed ones close their connection after
//     `cancel_after` chunks of text (the server must cancel them).
// Prompts are words of `text` (consecutive, from a random place) or
// built-in words; every choice comes from `seed` (documents) and the
// client's index, so a run is reproducible up to how many requests each
// client gets to send.
//
// Outcomes. A well-formed request is ok when answered 200 with a
// well-formed body (choices[0].text or .message.content, and usage), or a
// well-formed stream ("data: <JSON>\n\n" events of text chunks, a usage
// chunk, then "data: [DONE]" and nothing after). Anything else is a failure
// counted by kind: "http <status>", "connect" (no connection), "timeout"
// (nothing received for `timeout_s`), "connection lost", "malformed JSON",
// "malformed SSE", "error event" (the server ended a stream with an error).
// A bad request answered 4xx with an OpenAI error body ({"error":
// {"message": ...}}) is refused as expected; a 2xx or 3xx is accepted (a server
// bug); a 5xx, a transport error or a 4xx without that body is a failure
// (kinds prefixed "bad request: ").
//
// Figures are as the client sees them: TTFT from sending a streamed request
// to its first chunk of text, inter-token latency between consecutive
// chunks of text, the whole time of a request that is not streamed; tokens
// and cached prompt tokens from the responses' usage (a cancelled stream
// counts the chunks it received). The server's resident memory is read from
// its /metrics (process_resident_memory_bytes) every `rss_every_s` with the
// same key (a server with keys answers /metrics to admin keys only); when
// it cannot be read, `rss_unknown` says why and no figure is made up.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "bench/llm_bench.h"

namespace kvstash::bench {

struct LoadBenchOptions {
  std::string url;      // http://HOST:PORT
  std::string api_key;  // sent as "Authorization: Bearer KEY"; empty: none
  int clients = 16;
  double duration_s = 60;
  int max_tokens = 32;  // per well-formed request
  uint64_t seed = 1;
  // Words prompts are made of, in the text's order; empty: built-in words.
  std::string text;
  int documents = 4;  // shared passages
  int document_words = 80;
  int question_words = 12;
  double chat_share = 0.5;    // of well-formed requests
  double stream_share = 0.5;  // of well-formed requests
  double cancel_share = 0.2;  // of streamed requests
  int cancel_after = 3;       // chunks of text before a cancel (< max_tokens)
  double unique_share = 0.2;  // of well-formed requests: no shared passage
  double bad_share = 0.05;    // of all requests
  double timeout_s = 120;     // connect, and silence while reading
  double rss_every_s = 5;
  double progress_every_s = 10;
};

// Nearest-rank percentiles of latency samples, in seconds; all 0 when
// count is 0.
struct LatencySummary {
  size_t count = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
};
LatencySummary Summarize(std::vector<double> samples);

struct LoadFailure {
  uint64_t count = 0;
  std::string example;  // what the first one got (status and body, error)
};

struct RssSample {
  double t_s = 0;  // since the run started
  double bytes = 0;
};

struct LoadBenchResult {
  double elapsed_s = 0;  // until the last client's last request ended
  // Well-formed requests.
  uint64_t ok = 0;           // answered in full
  uint64_t streamed_ok = 0;  // of `ok`
  uint64_t cancelled = 0;    // closed by the client mid-stream, as planned
  uint64_t failed = 0;
  // Bad requests.
  uint64_t bad_refused = 0;
  uint64_t bad_accepted = 0;
  uint64_t bad_failed = 0;
  std::map<std::string, uint64_t> bad_accepted_kinds;
  std::map<std::string, LoadFailure> failures;  // by kind, bad ones too
  LatencySummary ttft;     // streamed requests that got a first chunk
  LatencySummary latency;  // requests not streamed, answered in full
  LatencySummary itl;
  uint64_t completion_tokens = 0;
  uint64_t prompt_tokens = 0;  // of responses with usage
  uint64_t cached_tokens = 0;  // usage.prompt_tokens_details.cached_tokens
  // The server's RSS over the run. Sampling stops for good at a refusal
  // (401/403), a /metrics without the figure or a first scrape that fails
  // (rss_unknown says which; empty when it ran to the end); a later failed
  // scrape is counted and sampling goes on.
  std::vector<RssSample> rss;
  std::string rss_unknown;
  uint64_t rss_failed_scrapes = 0;

  double requests_per_s() const { return ok / elapsed_s; }
  double tokens_per_s() const { return completion_tokens / elapsed_s; }
  double cached_share() const {
    return prompt_tokens > 0 ? double(cached_tokens) / prompt_tokens : 0;
  }
  // The first sample at or after `t_s`; nullopt when none (a shorter run,
  // RSS unknown).
  std::optional<RssSample> RssAt(double t_s) const;
  double RssMax() const;  // 0 when unknown
  // No well-formed request failed, no bad one was accepted or failed.
  bool Passed() const {
    return failed == 0 && bad_accepted == 0 && bad_failed == 0;
  }
};

// Runs the load against options.url. InvalidArgument for options out of
// range or a URL that is not http://HOST:PORT; Unavailable when the server
// does not answer GET /v1/models with 200 before the run (a wrong address
// or key). Progress lines (elapsed, requests, errors, RSS) every
// `progress_every_s`.
Result<LoadBenchResult> RunLoadBench(const LoadBenchOptions& options,
                                     const BenchProgress& progress);

}  // namespace kvstash::bench
