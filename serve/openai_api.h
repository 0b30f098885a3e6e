// OpenAI API: the JSON side of POST /v1/completions, POST
// /v1/chat/completions and GET /v1/models. ParseCompletionRequest turns a
// request body into a validated CompletionRequest or the ApiError to send
// back; the builders below write the response bodies and Server-Sent-Events
// chunks. No HTTP here: the transport calls these.
//
// Parsing contract:
//  - The body must be a JSON object of at most ParseLimits::max_body_bytes
//    (else 413) nested at most ParseLimits::max_depth deep (else 400), in
//    valid UTF-8 (the JSON parser rejects invalid UTF-8 and lone surrogates).
//  - Unknown fields are ignored. A known field set to null counts as absent.
//    A known field of the wrong JSON type is a 400 naming it in `param`, and
//    so is a value out of range or one this server does not support
//    (tools/functions, tool_choice other than "none"/"auto", response_format
//    other than "text", a non-empty suffix).
//  - Batch prompts (several strings, or arrays of token-id arrays) are a 400.
//  - Nested parameters are named with dots and indexes:
//    "stream_options.include_usage", "messages[2].content[0].type".
//
// Response builders never fail: text that is not valid UTF-8 (e.g. a token
// that ends mid-character) is written with U+FFFD in place of the bad bytes.
//
// Everything here is a pure function of its arguments, except NewResponseId
// (random); all of it is thread-safe and throws nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "compress/policy.h"
#include "engine/logprobs.h"
#include "model/chat_template.h"

namespace kvstash {

// An error response: OpenAI's body
//   {"error":{"message":..,"type":..,"param":..|null,"code":null}}
// sent with `http_status`.
struct ApiError {
  int http_status = 400;
  std::string type;     // "invalid_request_error", "server_error", ...
  std::string message;  // for people
  std::string param;    // the request field at fault; empty: null

  std::string ToJson() const;

  // 400 invalid_request_error.
  static ApiError BadRequest(std::string message, std::string param = {});
  // 401 authentication_error.
  static ApiError Unauthorized(std::string message);
  // 403 permission_error: the caller may not do this (a tenant's key on an
  // admin endpoint, a page of a foreign origin).
  static ApiError Forbidden(std::string message);
  // 415 invalid_request_error: a POST body that is not application/json.
  static ApiError UnsupportedMediaType(std::string message);
  // 404 not_found_error (e.g. an unknown model: param "model").
  static ApiError NotFound(std::string message, std::string param = {});
  // 413 invalid_request_error.
  static ApiError PayloadTooLarge(std::string message);
  // 429 rate_limit_error: too many requests in flight or queued.
  static ApiError TooManyRequests(std::string message);
  // 500 server_error.
  static ApiError Internal(std::string message);
  // 503 unavailable_error (e.g. loading or shutting down).
  static ApiError Unavailable(std::string message);
};

enum class Endpoint {
  kCompletions,      // POST /v1/completions
  kChatCompletions,  // POST /v1/chat/completions
};

struct ParseLimits {
  size_t max_body_bytes = 8 << 20;  // a larger body: 413
  int max_depth = 64;               // deeper arrays/objects: 400
  int max_tokens = 1 << 20;         // a larger max_tokens: 400 (the server
                                    // passes its context length)
  int max_choices = 128;            // a larger n or best_of: 400 (the server
                                    // passes its max running sequences)
};

// A validated request. Fields not given keep the defaults below, which are
// OpenAI's (sampling extensions default to off).
struct CompletionRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::optional<std::string> model;

  // kCompletions only: "prompt" as text (a string, or an array holding one
  // string; may be empty) or as token ids (a non-empty array of integers in
  // [0, 2^31), not checked against the vocabulary here).
  std::variant<std::string, std::vector<int32_t>> prompt;

  // kChatCompletions only: "messages", non-empty, roles "system", "user" or
  // "assistant" ("developer" is taken as "system"); content is a string or
  // the concatenation of an array of {"type":"text","text":..} parts (no
  // separator); an assistant message without content has "".
  std::vector<ChatMessage> messages;

  // "max_tokens" in [1, ParseLimits::max_tokens]; for chat,
  // "max_completion_tokens" (same range) wins when both are given. Absent:
  // the server's choice.
  std::optional<int> max_tokens;

  float temperature = 1.0f;         // [0, 2]; 0: greedy
  float top_p = 1.0f;               // (0, 1]
  int top_k = 0;                    // extension; -1 or 0: off
  float min_p = 0.0f;               // extension; [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // extension ("repetition_penalty" or
                                    // llama.cpp's "repeat_penalty"); > 0
  std::optional<uint64_t> seed;     // "seed", a non-negative integer
  std::vector<std::string> stop;    // "stop": a string or an array; at most
                                    // 4, each non-empty
  // "presence_penalty", "frequency_penalty": [-2, 2].
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // "logit_bias": {"<token id>": bias in [-100, 100]}, at most 300 entries
  // (ids are checked against the vocabulary by the server).
  std::vector<std::pair<int32_t, float>> logit_bias;
  // Extension (vLLM's): "stop_token_ids", at most 64 ids; a choice ends
  // when it samples one (not included in its text).
  std::vector<int32_t> stop_token_ids;
  // "n": choices, in [1, ParseLimits::max_choices]. kCompletions:
  // "best_of" in [n, max_choices] (default n): that many are generated and
  // the n with the highest mean token log-probability returned; not with
  // stream when greater than n.
  int n = 1;
  int best_of = 1;
  // Log-probabilities with this many alternatives per token, in [0,
  // kMaxTopLogprobs]; -1: none. kCompletions: "logprobs" (an integer);
  // kChatCompletions: "logprobs": true, with "top_logprobs" (needs it).
  int logprobs = -1;
  // kCompletions: "echo": the prompt starts each choice's text (and its
  // tokens its logprobs); "max_tokens": 0 is then allowed.
  bool echo = false;
  bool stream = false;
  bool include_usage = false;             // "stream_options.include_usage";
                                          // stream_options needs stream: true
  std::optional<std::string> cache_salt;  // 1 to 256 bytes
  // Extension: "kv_compression": {"policy": NAME, "ratio": R, "merge": B}
  // (compress/policy.h; ratio in [0, 1), default 0.5; "policy": "none"
  // gives an empty policy: no compression). Absent: the server's default.
  std::optional<compress::PolicyOptions> kv_compression;
};

// The request in `body`, or the error to answer with. Never throws.
std::variant<CompletionRequest, ApiError> ParseCompletionRequest(
    Endpoint endpoint, std::string_view body, const ParseLimits& limits);
// The same for a body of either endpoint (/kv/lookup): a chat request when
// it holds "messages", else a completion; one parse, the same limits.
std::variant<CompletionRequest, ApiError> ParseLookupRequest(
    std::string_view body, const ParseLimits& limits);

enum class FinishReason { kStop, kLength };

// "stop" or "length".
std::string_view FinishReasonName(FinishReason reason);

// One token of a choice's log-probabilities: its text as decoded in place
// (bytes; a token may hold part of a UTF-8 character), its byte offset in
// the choice's text, its log-probability (none for a prompt's first token,
// which has no context) and the most likely alternatives (text, logprob),
// most likely first.
struct LogprobEntry {
  std::string text;
  size_t offset = 0;
  std::optional<float> logprob;
  std::vector<std::pair<std::string, float>> top;
};

// A choice, or the part of it one stream chunk carries.
struct Choice {
  int index = 0;
  std::string text;
  std::optional<FinishReason> finish;  // none: a stream chunk's text
  // Whether logprobs were asked for: "logprobs" is then an object holding
  // `logprobs` (the tokens of `text`), else null.
  bool has_logprobs = false;
  std::vector<LogprobEntry> logprobs;
};

// Token counts of one request. Written as
//   {"prompt_tokens":P,"completion_tokens":C,"total_tokens":P+C,
//    "prompt_tokens_details":{"cached_tokens":K,
//        "kvstash_cached_tokens_by_tier":{"dram":D,"disk":S,"redis":R}}}
// where the kvstash-specific object splits K by where the K/V were found
// (DRAM, then each configured tier in search order; D + S + R = K).
struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose K/V came from the cache
  // Of cached_tokens, those loaded from each tier below DRAM (name, tokens).
  std::vector<std::pair<std::string, int64_t>> tier_cached_tokens;
  // Token eviction (written as "kvstash_kv_compression": {"policy",
  // "compressed_tokens", "kept_tokens", "blocks_before", "blocks_after",
  // "cache", "recompressions"} when a policy ran; see RequestUsage in
  // serve/scheduler.h).
  std::string kv_policy;
  int64_t kv_compressed_tokens = 0;
  double kv_kept_tokens = 0;
  int64_t kv_blocks_before = 0, kv_blocks_after = 0;
  std::string kv_cache;
  int64_t kv_recompressions = 0;
};

// What the responses and chunks of one request share.
struct ResponseMeta {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string id;       // from NewResponseId
  int64_t created = 0;  // unix seconds
  std::string model;
  // Streaming with stream_options.include_usage: every chunk carries
  // "usage": null and StreamUsageChunk follows the final chunk.
  bool include_usage = false;
};

// "cmpl-<32 hex digits>" or "chatcmpl-<32 hex digits>", random.
std::string NewResponseId(Endpoint endpoint);

// The non-streaming response: {"id","object":"text_completion","created",
// "model","choices":[{"text","index","logprobs","finish_reason"}...],
// "usage"}, or for chat "object":"chat.completion" and each choice's
// "message" = {"role":"assistant","content":text}. Logprobs, when asked
// for, in OpenAI's shapes: completions {"tokens":[text],"token_logprobs":
// [lp|null],"top_logprobs":[{text:lp}|null],"text_offset":[offset]}; chat
// {"content":[{"token","logprob","bytes","top_logprobs":[{"token",
// "logprob","bytes"}]}],"refusal":null}. REQUIRES: every choice has finish.
std::string CompletionResponse(const ResponseMeta& meta,
                               const std::vector<Choice>& choices,
                               const Usage& usage);

// One stream chunk of one choice: a "text_completion" object with
// choices[0] = {"text","index","logprobs","finish_reason"}, or a
// "chat.completion.chunk" with choices[0].delta = {"content":text} (plus
// "role":"assistant" when `first`: a chat choice's first chunk must carry
// it; ignored for completions). With choice.finish: that choice's last
// chunk (chat: an empty delta), finish_reason set.
std::string StreamChunk(const ResponseMeta& meta, const Choice& choice,
                        bool first);

// The usage chunk sent after the final one when meta.include_usage:
// "choices":[] and "usage".
std::string StreamUsageChunk(const ResponseMeta& meta, const Usage& usage);

// "data: <json>\n\n".
std::string SseEvent(std::string_view json);
// Ends a stream.
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// What GET /v1/models says of the one model served.
struct ModelInfo {
  std::string id;
  int64_t created = 0;    // unix seconds
  int max_model_len = 0;  // the context: prompt and completion tokens
  // The KV cache, named as /kv/stats names it.
  std::string kv_type_k, kv_type_v;
  int64_t block_tokens = 0;
  int64_t capacity_tokens = 0;
  std::string tier_codec;
  std::vector<std::string> tiers;  // below DRAM, in search order
};

// GET /v1/models: {"object":"list","data":[{"id","object":"model","created",
// "owned_by":"kvstash","max_model_len" (vLLM's name),"kvstash":{"kv_type_k",
// "kv_type_v","block_tokens","capacity_tokens","tier_codec","tiers"}}]}.
std::string ModelsResponse(const ModelInfo& model);

}  // namespace kvstash
