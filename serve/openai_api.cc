#include "serve/openai_api.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <utility>

#include "serve/json_body.h"

namespace kvstash {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;
using MaybeError = std::optional<ApiError>;

ApiError MakeError(int status, std::string type, std::string message,
                   std::string param) {
  return ApiError{status, std::move(type), std::move(message),
                  std::move(param)};
}

ApiError Unsupported(const std::string& param, std::string_view what) {
  return ApiError::BadRequest(
      "'" + param + "': " + std::string(what) + " is not supported", param);
}

MaybeError ReadNumber(const json& o, const char* key,
                      std::optional<double>* out) {
  const json* v = JsonField(o, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return WrongType(key, "a number");
  *out = v->get<double>();
  return std::nullopt;
}

// A number in [lo, hi] (or (lo, hi] when `open_low`), stored as float.
MaybeError ReadRanged(const json& o, const char* key, double lo, double hi,
                      bool open_low, float* out) {
  std::optional<double> v;
  if (MaybeError e = ReadNumber(o, key, &v)) return e;
  if (!v) return std::nullopt;
  const bool ok = (open_low ? *v > lo : *v >= lo) && *v <= hi;
  if (!ok) {
    char range[96];
    std::snprintf(range, sizeof(range), "%s%g, %g]", open_low ? "(" : "[", lo,
                  hi);
    return ApiError::BadRequest(
        "'" + std::string(key) + "' must be in " + range, key);
  }
  *out = static_cast<float>(*v);
  return std::nullopt;
}

// An integer in [lo, hi].
MaybeError ReadInt(const json& o, const char* key, int64_t lo, int64_t hi,
                   std::optional<int64_t>* out) {
  const json* v = JsonField(o, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number_integer()) return WrongType(key, "an integer");
  // Non-negative integers are stored unsigned, up to 2^64 - 1.
  const bool fits =
      !v->is_number_unsigned() ||
      v->get<uint64_t>() <=
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  const int64_t value = fits ? v->get<int64_t>() : 0;
  if (!fits || value < lo || value > hi) {
    return ApiError::BadRequest("'" + std::string(key) + "' must be between " +
                                    std::to_string(lo) + " and " +
                                    std::to_string(hi),
                                key);
  }
  *out = value;
  return std::nullopt;
}

MaybeError ReadString(const json& o, const char* key,
                      std::optional<std::string>* out) {
  const json* v = JsonField(o, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return WrongType(key, "a string");
  *out = v->get<std::string>();
  return std::nullopt;
}

// `zero_ok`: 0 is allowed (a completion with echo: the prompt alone).
MaybeError ReadMaxTokens(const json& o, const char* key, int limit,
                         bool zero_ok, std::optional<int>* out) {
  std::optional<int64_t> v;
  if (MaybeError e = ReadInt(o, key, zero_ok ? 0 : 1, limit, &v)) return e;
  if (v) *out = static_cast<int>(*v);
  return std::nullopt;
}

MaybeError ReadStop(const json& o, std::vector<std::string>* out) {
  const json* v = JsonField(o, "stop");
  if (v == nullptr) return std::nullopt;
  if (v->is_string()) {
    if (v->get_ref<const std::string&>().empty()) {
      return ApiError::BadRequest("'stop' must not be an empty string", "stop");
    }
    out->push_back(v->get<std::string>());
    return std::nullopt;
  }
  if (!v->is_array()) {
    return WrongType("stop", "a string or an array of strings");
  }
  if (v->size() > 4) {
    return ApiError::BadRequest("'stop' may hold at most 4 sequences", "stop");
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const json& s = (*v)[i];
    const std::string param = "stop[" + std::to_string(i) + "]";
    if (!s.is_string()) return WrongType(param, "a string");
    if (s.get_ref<const std::string&>().empty()) {
      return ApiError::BadRequest("'" + param + "' must not be empty", param);
    }
    out->push_back(s.get<std::string>());
  }
  return std::nullopt;
}

MaybeError ReadPrompt(const json& o,
                      std::variant<std::string, std::vector<int32_t>>* out) {
  const json* v = JsonField(o, "prompt");
  if (v == nullptr) {
    return ApiError::BadRequest("'prompt' is required", "prompt");
  }
  if (v->is_string()) {
    *out = v->get<std::string>();
    return std::nullopt;
  }
  const char* kExpected =
      "a string, an array of token ids or an array holding one string";
  if (!v->is_array()) return WrongType("prompt", kExpected);
  if (v->empty()) {
    return ApiError::BadRequest("'prompt' must not be an empty array",
                                "prompt");
  }
  const json& first = v->front();
  if (first.is_string() || first.is_array()) {
    if (v->size() > 1 || first.is_array()) {
      return ApiError::BadRequest(
          "batch prompts are not supported: send one prompt per request",
          "prompt");
    }
    *out = first.get<std::string>();
    return std::nullopt;
  }
  std::vector<int32_t> ids;
  ids.reserve(v->size());
  for (size_t i = 0; i < v->size(); ++i) {
    const json& t = (*v)[i];
    const std::string param = "prompt[" + std::to_string(i) + "]";
    if (!t.is_number_integer()) {
      return WrongType(param, "a token id (an integer)");
    }
    const bool ok =
        t.is_number_unsigned()
            ? t.get<uint64_t>() <= std::numeric_limits<int32_t>::max()
            : t.get<int64_t>() >= 0 &&
                  t.get<int64_t>() <= std::numeric_limits<int32_t>::max();
    if (!ok) {
      return ApiError::BadRequest("'" + param + "' is not a valid token id",
                                  param);
    }
    ids.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  *out = std::move(ids);
  return std::nullopt;
}

MaybeError ReadContent(const json& m, const std::string& prefix,
                       const std::string& role, std::string* out) {
  const std::string param = prefix + ".content";
  const json* c = JsonField(m, "content");
  if (c == nullptr) {
    if (role == "assistant") return std::nullopt;
    return ApiError::BadRequest("'" + param + "' is required", param);
  }
  if (c->is_string()) {
    *out = c->get<std::string>();
    return std::nullopt;
  }
  if (!c->is_array()) {
    return WrongType(param, "a string or an array of text parts");
  }
  for (size_t j = 0; j < c->size(); ++j) {
    const json& part = (*c)[j];
    const std::string part_param = param + "[" + std::to_string(j) + "]";
    if (!part.is_object()) return WrongType(part_param, "an object");
    const json* type = JsonField(part, "type");
    if (type == nullptr || !type->is_string()) {
      return WrongType(part_param + ".type", "a string");
    }
    if (type->get_ref<const std::string&>() != "text") {
      return Unsupported(
          part_param + ".type",
          "content part type '" + type->get<std::string>() + "'");
    }
    const json* text = JsonField(part, "text");
    if (text == nullptr || !text->is_string()) {
      return WrongType(part_param + ".text", "a string");
    }
    *out += text->get_ref<const std::string&>();
  }
  return std::nullopt;
}

MaybeError ReadMessages(const json& o, std::vector<ChatMessage>* out) {
  const json* v = JsonField(o, "messages");
  if (v == nullptr) {
    return ApiError::BadRequest("'messages' is required", "messages");
  }
  if (!v->is_array()) return WrongType("messages", "an array");
  if (v->empty()) {
    return ApiError::BadRequest("'messages' must not be empty", "messages");
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string prefix = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return WrongType(prefix, "an object");
    const json* role_json = JsonField(m, "role");
    const std::string role_param = prefix + ".role";
    if (role_json == nullptr) {
      return ApiError::BadRequest("'" + role_param + "' is required",
                                  role_param);
    }
    if (!role_json->is_string()) return WrongType(role_param, "a string");
    std::string role = role_json->get<std::string>();
    if (role == "developer") role = "system";
    if (role == "tool" || role == "function") {
      return Unsupported(role_param, "role '" + role + "' (tool calling)");
    }
    if (role != "system" && role != "user" && role != "assistant") {
      return ApiError::BadRequest(
          "'" + role_param +
              "' must be one of system, developer, user, "
              "assistant",
          role_param);
    }
    for (const char* key : {"tool_calls", "function_call"}) {
      const json* calls = JsonField(m, key);
      if (calls != nullptr && !(calls->is_array() && calls->empty())) {
        return Unsupported(prefix + "." + key, "tool calling");
      }
    }
    ChatMessage message{role, {}};
    if (MaybeError e = ReadContent(m, prefix, role, &message.content)) {
      return e;
    }
    out->push_back(std::move(message));
  }
  return std::nullopt;
}

constexpr size_t kMaxLogitBias = 300;  // OpenAI's limit
constexpr size_t kMaxStopTokenIds = 64;
constexpr int64_t kMaxTokenId = std::numeric_limits<int32_t>::max();

// "logit_bias": {"<token id>": bias in [-100, 100], ...}, at most
// kMaxLogitBias entries (ids are checked against the vocabulary later).
MaybeError ReadLogitBias(const json& o,
                         std::vector<std::pair<int32_t, float>>* out) {
  const json* v = JsonField(o, "logit_bias");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return WrongType("logit_bias", "an object");
  if (v->size() > kMaxLogitBias) {
    return ApiError::BadRequest("'logit_bias' may hold at most " +
                                    std::to_string(kMaxLogitBias) + " entries",
                                "logit_bias");
  }
  for (const auto& [key, bias] : v->items()) {
    const bool digits = !key.empty() && key.size() <= 10 &&
                        std::all_of(key.begin(), key.end(), [](char c) {
                          return c >= '0' && c <= '9';
                        });
    if (!digits || std::stoll(key) > kMaxTokenId) {
      return ApiError::BadRequest(
          "'logit_bias' keys must be token ids, not '" + key + "'",
          "logit_bias");
    }
    if (!bias.is_number() || !(bias.get<double>() >= -100.0) ||
        !(bias.get<double>() <= 100.0)) {
      return ApiError::BadRequest(
          "'logit_bias' values must be numbers in [-100, 100]", "logit_bias");
    }
    out->push_back({int32_t(std::stoll(key)), float(bias.get<double>())});
  }
  return std::nullopt;
}

// An array of at most `most` token ids (integers in [0, 2^31)).
MaybeError ReadTokenIds(const json& o, const char* key, size_t most,
                        std::vector<int32_t>* out) {
  const json* v = JsonField(o, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array() || v->size() > most) {
    return WrongType(
        key, "an array of at most " + std::to_string(most) + " token ids");
  }
  for (const json& id : *v) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        (id.is_number_unsigned() &&
         id.get<uint64_t>() > uint64_t(kMaxTokenId)) ||
        id.get<int64_t>() > kMaxTokenId) {
      return WrongType(key, "an array of token ids (integers >= 0)");
    }
    out->push_back(int32_t(id.get<int64_t>()));
  }
  return std::nullopt;
}

// n, best_of, logprobs / top_logprobs and echo.
MaybeError ReadChoices(const json& o, Endpoint endpoint,
                       const ParseLimits& limits, CompletionRequest* r) {
  std::optional<int64_t> i;
  if (MaybeError e = ReadInt(o, "n", 1, limits.max_choices, &i)) return e;
  r->n = int(i.value_or(1));
  r->best_of = r->n;
  if (endpoint == Endpoint::kCompletions) {
    i.reset();
    if (MaybeError e = ReadInt(o, "best_of", 1, limits.max_choices, &i)) {
      return e;
    }
    if (i) {
      if (*i < r->n) {
        return ApiError::BadRequest("'best_of' must be at least 'n'",
                                    "best_of");
      }
      r->best_of = int(*i);
    }
    i.reset();
    if (MaybeError e = ReadInt(o, "logprobs", 0, kMaxTopLogprobs, &i)) return e;
    if (i) r->logprobs = int(*i);
    return ReadBool(o, "echo", &r->echo);
  }
  bool logprobs = false;
  if (MaybeError e = ReadBool(o, "logprobs", &logprobs)) return e;
  i.reset();
  if (MaybeError e = ReadInt(o, "top_logprobs", 0, kMaxTopLogprobs, &i))
    return e;
  if (i && *i > 0 && !logprobs) {
    return ApiError::BadRequest("'top_logprobs' needs 'logprobs' to be true",
                                "top_logprobs");
  }
  if (logprobs) r->logprobs = int(i.value_or(0));
  return std::nullopt;
}

// Fields whose only accepted values are the ones that change nothing.
MaybeError RejectUnsupported(const json& o, Endpoint endpoint) {
  if (const json* format = JsonField(o, "response_format")) {
    if (!format->is_object()) return WrongType("response_format", "an object");
    const json* type = JsonField(*format, "type");
    if (type == nullptr || !type->is_string()) {
      return WrongType("response_format.type", "a string");
    }
    if (type->get_ref<const std::string&>() != "text") {
      return Unsupported("response_format",
                         "type '" + type->get<std::string>() + "'");
    }
  }

  if (endpoint == Endpoint::kCompletions) {
    std::optional<std::string> suffix;
    if (MaybeError e = ReadString(o, "suffix", &suffix)) return e;
    if (suffix && !suffix->empty()) return Unsupported("suffix", "a suffix");
    return std::nullopt;
  }

  for (const char* key : {"tools", "functions"}) {
    if (const json* tools = JsonField(o, key)) {
      if (!tools->is_array()) return WrongType(key, "an array");
      if (!tools->empty()) return Unsupported(key, "tool calling");
    }
  }
  for (const char* key : {"tool_choice", "function_call"}) {
    if (const json* choice = JsonField(o, key)) {
      if (!choice->is_string() && !choice->is_object()) {
        return WrongType(key, "a string or an object");
      }
      if (choice->is_object() ||
          (choice->get_ref<const std::string&>() != "none" &&
           choice->get_ref<const std::string&>() != "auto")) {
        return Unsupported(key, "tool calling");
      }
    }
  }
  return std::nullopt;
}

MaybeError ReadSampling(const json& o, CompletionRequest* r) {
  if (MaybeError e =
          ReadRanged(o, "temperature", 0.0, 2.0, false, &r->temperature)) {
    return e;
  }
  if (MaybeError e = ReadRanged(o, "top_p", 0.0, 1.0, true, &r->top_p)) {
    return e;
  }
  if (MaybeError e = ReadRanged(o, "min_p", 0.0, 1.0, false, &r->min_p)) {
    return e;
  }
  std::optional<int64_t> top_k;
  if (MaybeError e = ReadInt(o, "top_k", -1,
                             std::numeric_limits<int32_t>::max(), &top_k)) {
    return e;
  }
  if (top_k) r->top_k = static_cast<int>(*top_k);

  if (JsonField(o, "repetition_penalty") != nullptr &&
      JsonField(o, "repeat_penalty") != nullptr) {
    return ApiError::BadRequest(
        "give only one of 'repetition_penalty' and 'repeat_penalty'",
        "repeat_penalty");
  }
  for (const char* key : {"repetition_penalty", "repeat_penalty"}) {
    std::optional<double> p;
    if (MaybeError e = ReadNumber(o, key, &p)) return e;
    if (!p) continue;
    if (!(*p > 0.0 && *p <= std::numeric_limits<float>::max())) {
      return ApiError::BadRequest(
          "'" + std::string(key) + "' must be a positive number", key);
    }
    r->repetition_penalty = static_cast<float>(*p);
  }

  for (auto [key, out] : {std::pair{"presence_penalty", &r->presence_penalty},
                          {"frequency_penalty", &r->frequency_penalty}}) {
    if (MaybeError e = ReadRanged(o, key, -2.0, 2.0, false, out)) return e;
  }
  if (MaybeError e = ReadLogitBias(o, &r->logit_bias)) return e;
  if (MaybeError e = ReadTokenIds(o, "stop_token_ids", kMaxStopTokenIds,
                                  &r->stop_token_ids)) {
    return e;
  }

  if (const json* seed = JsonField(o, "seed")) {
    if (!seed->is_number_integer()) return WrongType("seed", "an integer");
    if (!seed->is_number_unsigned()) {
      return ApiError::BadRequest("'seed' must not be negative", "seed");
    }
    r->seed = seed->get<uint64_t>();
  }
  return ReadStop(o, &r->stop);
}

MaybeError ReadStreaming(const json& o, CompletionRequest* r) {
  if (MaybeError e = ReadBool(o, "stream", &r->stream)) return e;
  const json* options = JsonField(o, "stream_options");
  if (options == nullptr) return std::nullopt;
  if (!options->is_object()) return WrongType("stream_options", "an object");
  if (!r->stream) {
    return ApiError::BadRequest(
        "'stream_options' is only allowed when 'stream' is true",
        "stream_options");
  }
  if (const json* usage = JsonField(*options, "include_usage")) {
    if (!usage->is_boolean()) {
      return WrongType("stream_options.include_usage", "a boolean");
    }
    r->include_usage = usage->get<bool>();
  }
  return std::nullopt;
}

// "kv_compression": {"policy": NAME, "ratio": R, "merge": B, "every": N}.
MaybeError ReadKvCompression(const json& o,
                             std::optional<compress::PolicyOptions>* out) {
  const json* v = JsonField(o, "kv_compression");
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return WrongType("kv_compression", "an object");
  for (const auto& [key, value] : v->items()) {
    if (key != "policy" && key != "ratio" && key != "merge" && key != "every") {
      return ApiError::BadRequest("'kv_compression." + key +
                                      "' is not a field (policy, ratio, "
                                      "merge, every)",
                                  "kv_compression." + key);
    }
  }
  compress::PolicyOptions options;
  options.ratio = 0.5;
  const json* policy = JsonField(*v, "policy");
  if (policy == nullptr || !policy->is_string()) {
    return WrongType("kv_compression.policy", "a policy name (string)");
  }
  options.policy = policy->get<std::string>();
  if (const json* ratio = JsonField(*v, "ratio")) {
    if (!ratio->is_number())
      return WrongType("kv_compression.ratio", "a number");
    options.ratio = ratio->get<double>();
  }
  if (const json* merge = JsonField(*v, "merge")) {
    if (!merge->is_boolean()) {
      return WrongType("kv_compression.merge", "a boolean");
    }
    options.merge = merge->get<bool>();
  }
  if (const json* every = JsonField(*v, "every")) {
    if (!every->is_number_integer() || every->get<int64_t>() < 0 ||
        every->get<int64_t>() > 1 << 30) {
      return WrongType("kv_compression.every",
                       "a count of positions (an integer >= 0)");
    }
    options.every = every->get<int>();
  }
  if (options.policy == "none") {
    *out = compress::PolicyOptions{};
    return std::nullopt;
  }
  const Status valid = compress::CheckPolicyOptions(options);
  if (!valid.ok()) {
    // The message starts with the field it names: "policy: ..." or
    // "ratio: ...".
    const std::string field =
        "kv_compression." +
        valid.message().substr(0, valid.message().find(':'));
    return ApiError::BadRequest("'kv_compression." + valid.message(), field);
  }
  *out = options;
  return std::nullopt;
}

MaybeError ReadRequest(Endpoint endpoint, const json& o,
                       const ParseLimits& limits, CompletionRequest* r) {
  r->endpoint = endpoint;
  if (MaybeError e = ReadString(o, "model", &r->model)) return e;
  if (endpoint == Endpoint::kCompletions) {
    if (MaybeError e = ReadPrompt(o, &r->prompt)) return e;
  } else {
    if (MaybeError e = ReadMessages(o, &r->messages)) return e;
  }
  if (MaybeError e = RejectUnsupported(o, endpoint)) return e;
  if (MaybeError e = ReadChoices(o, endpoint, limits, r)) return e;

  if (MaybeError e = ReadMaxTokens(o, "max_tokens", limits.max_tokens, r->echo,
                                   &r->max_tokens)) {
    return e;
  }
  if (endpoint == Endpoint::kChatCompletions) {
    std::optional<int> completion_tokens;
    if (MaybeError e =
            ReadMaxTokens(o, "max_completion_tokens", limits.max_tokens,
                          /*zero_ok=*/false, &completion_tokens)) {
      return e;
    }
    if (completion_tokens) r->max_tokens = completion_tokens;
  }

  if (MaybeError e = ReadSampling(o, r)) return e;
  if (MaybeError e = ReadStreaming(o, r)) return e;
  if (r->stream && r->best_of > r->n) {
    return ApiError::BadRequest("'best_of' greater than 'n' cannot be streamed",
                                "best_of");
  }

  if (MaybeError e = ReadString(o, "cache_salt", &r->cache_salt)) return e;
  if (r->cache_salt &&
      (r->cache_salt->empty() || r->cache_salt->size() > 256)) {
    return ApiError::BadRequest("'cache_salt' must be 1 to 256 bytes long",
                                "cache_salt");
  }
  return ReadKvCompression(o, &r->kv_compression);
}

const char* ObjectName(Endpoint endpoint, bool chunk) {
  if (endpoint == Endpoint::kCompletions) return "text_completion";
  return chunk ? "chat.completion.chunk" : "chat.completion";
}

ordered_json UsageJson(const Usage& u) {
  ordered_json j;
  j["prompt_tokens"] = u.prompt_tokens;
  j["completion_tokens"] = u.completion_tokens;
  j["total_tokens"] = u.prompt_tokens + u.completion_tokens;
  ordered_json by_tier;
  int64_t below_dram = 0;
  for (const auto& [tier, tokens] : u.tier_cached_tokens) below_dram += tokens;
  by_tier["dram"] = u.cached_tokens - below_dram;
  for (const auto& [tier, tokens] : u.tier_cached_tokens)
    by_tier[tier] = tokens;
  j["prompt_tokens_details"] = {{"cached_tokens", u.cached_tokens},
                                {"kvstash_cached_tokens_by_tier", by_tier}};
  if (!u.kv_policy.empty()) {
    j["kvstash_kv_compression"] = {
        {"policy", u.kv_policy},
        {"compressed_tokens", u.kv_compressed_tokens},
        {"kept_tokens", u.kv_kept_tokens},
        {"blocks_before", u.kv_blocks_before},
        {"blocks_after", u.kv_blocks_after},
        {"cache", u.kv_cache},
        {"recompressions", u.kv_recompressions}};
  }
  return j;
}

// {"id","object","created","model"} of a response or chunk.
ordered_json Envelope(const ResponseMeta& meta, bool chunk) {
  ordered_json j;
  j["id"] = meta.id;
  j["object"] = ObjectName(meta.endpoint, chunk);
  j["created"] = meta.created;
  j["model"] = meta.model;
  return j;
}

// One streamed choice: `delta` for chat, `text` for completions.
ordered_json Bytes(std::string_view text) {
  ordered_json bytes = ordered_json::array();
  for (char c : text) bytes.push_back(int(static_cast<unsigned char>(c)));
  return bytes;
}

// The "logprobs" of a choice (see CompletionResponse), or null.
ordered_json LogprobsJson(Endpoint endpoint, const Choice& choice) {
  if (!choice.has_logprobs) return nullptr;
  if (endpoint == Endpoint::kCompletions) {
    ordered_json tokens = ordered_json::array(), lps = ordered_json::array(),
                 tops = ordered_json::array(), offsets = ordered_json::array();
    for (const LogprobEntry& e : choice.logprobs) {
      tokens.push_back(e.text);
      offsets.push_back(e.offset);
      if (!e.logprob) {
        lps.push_back(nullptr);
        tops.push_back(nullptr);
        continue;
      }
      lps.push_back(*e.logprob);
      ordered_json top = ordered_json::object();
      for (const auto& [text, lp] : e.top) {
        if (!top.contains(text)) top[text] = lp;
      }
      tops.push_back(std::move(top));
    }
    ordered_json j;
    j["tokens"] = std::move(tokens);
    j["token_logprobs"] = std::move(lps);
    j["top_logprobs"] = std::move(tops);
    j["text_offset"] = std::move(offsets);
    return j;
  }
  ordered_json content = ordered_json::array();
  for (const LogprobEntry& e : choice.logprobs) {
    ordered_json token;
    token["token"] = e.text;
    token["logprob"] = e.logprob.value_or(0.0f);
    token["bytes"] = Bytes(e.text);
    ordered_json top = ordered_json::array();
    for (const auto& [text, lp] : e.top) {
      top.push_back({{"token", text}, {"logprob", lp}, {"bytes", Bytes(text)}});
    }
    token["top_logprobs"] = std::move(top);
    content.push_back(std::move(token));
  }
  ordered_json j;
  j["content"] = std::move(content);
  j["refusal"] = nullptr;
  return j;
}

// A choice of a response (`stream` false) or of a chunk.
ordered_json ChoiceJson(const ResponseMeta& meta, const Choice& choice,
                        bool stream, bool first) {
  ordered_json j;
  if (meta.endpoint == Endpoint::kCompletions) {
    j["text"] = choice.text;
    j["index"] = choice.index;
  } else if (!stream) {
    j["index"] = choice.index;
    j["message"] = {{"role", "assistant"}, {"content", choice.text}};
  } else {
    j["index"] = choice.index;
    ordered_json delta = ordered_json::object();
    if (first) delta["role"] = "assistant";
    if (!choice.finish || !choice.text.empty()) delta["content"] = choice.text;
    j["delta"] = std::move(delta);
  }
  j["logprobs"] = LogprobsJson(meta.endpoint, choice);
  if (choice.finish) {
    j["finish_reason"] = FinishReasonName(*choice.finish);
  } else {
    j["finish_reason"] = nullptr;
  }
  return j;
}

std::string Chunk(const ResponseMeta& meta, ordered_json choices) {
  ordered_json j = Envelope(meta, /*chunk=*/true);
  j["choices"] = std::move(choices);
  if (meta.include_usage) j["usage"] = nullptr;
  return DumpJson(j);
}

}  // namespace

std::string ApiError::ToJson() const {
  ordered_json e;
  e["message"] = message;
  e["type"] = type;
  if (param.empty()) {
    e["param"] = nullptr;
  } else {
    e["param"] = param;
  }
  e["code"] = nullptr;
  ordered_json j;
  j["error"] = std::move(e);
  return DumpJson(j);
}

ApiError ApiError::BadRequest(std::string message, std::string param) {
  return MakeError(400, "invalid_request_error", std::move(message),
                   std::move(param));
}
ApiError ApiError::Unauthorized(std::string message) {
  return MakeError(401, "authentication_error", std::move(message), {});
}
ApiError ApiError::Forbidden(std::string message) {
  return MakeError(403, "permission_error", std::move(message), {});
}
ApiError ApiError::UnsupportedMediaType(std::string message) {
  return MakeError(415, "invalid_request_error", std::move(message), {});
}
ApiError ApiError::NotFound(std::string message, std::string param) {
  return MakeError(404, "not_found_error", std::move(message),
                   std::move(param));
}
ApiError ApiError::PayloadTooLarge(std::string message) {
  return MakeError(413, "invalid_request_error", std::move(message), {});
}
ApiError ApiError::TooManyRequests(std::string message) {
  return MakeError(429, "rate_limit_error", std::move(message), {});
}
ApiError ApiError::Internal(std::string message) {
  return MakeError(500, "server_error", std::move(message), {});
}
ApiError ApiError::Unavailable(std::string message) {
  return MakeError(503, "unavailable_error", std::move(message), {});
}

namespace {

// `endpoint` null: chat when the body holds "messages".
std::variant<CompletionRequest, ApiError> ParseBody(
    std::optional<Endpoint> endpoint, std::string_view body,
    const ParseLimits& limits) {
  auto parsed = ParseJsonObject(body, limits);
  if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
  const json& o = std::get<json>(parsed);
  try {
    CompletionRequest request;
    const Endpoint resolved =
        endpoint.value_or(o.contains("messages") ? Endpoint::kChatCompletions
                                                 : Endpoint::kCompletions);
    if (MaybeError e = ReadRequest(resolved, o, limits, &request)) return *e;
    return request;
  } catch (const json::exception& e) {
    return ApiError::BadRequest("invalid request: " + JsonErrorText(e));
  }
}

}  // namespace

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(
    Endpoint endpoint, std::string_view body, const ParseLimits& limits) {
  return ParseBody(endpoint, body, limits);
}

std::variant<CompletionRequest, ApiError> ParseLookupRequest(
    std::string_view body, const ParseLimits& limits) {
  return ParseBody(std::nullopt, body, limits);
}

std::string_view FinishReasonName(FinishReason reason) {
  return reason == FinishReason::kStop ? "stop" : "length";
}

std::string NewResponseId(Endpoint endpoint) {
  thread_local std::mt19937_64 rng = [] {
    std::random_device device;
    std::seed_seq seq{device(), device(), device(), device()};
    return std::mt19937_64(seq);
  }();
  char hex[33];
  std::snprintf(hex, sizeof(hex), "%016llx%016llx",
                static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return std::string(endpoint == Endpoint::kCompletions ? "cmpl-"
                                                        : "chatcmpl-") +
         hex;
}

std::string CompletionResponse(const ResponseMeta& meta,
                               const std::vector<Choice>& choices,
                               const Usage& usage) {
  ordered_json list = ordered_json::array();
  for (const Choice& c : choices) {
    list.push_back(ChoiceJson(meta, c, /*stream=*/false, /*first=*/false));
  }
  ordered_json j = Envelope(meta, /*chunk=*/false);
  j["choices"] = std::move(list);
  j["usage"] = UsageJson(usage);
  return DumpJson(j);
}

std::string StreamChunk(const ResponseMeta& meta, const Choice& choice,
                        bool first) {
  return Chunk(meta, ordered_json::array(
                         {ChoiceJson(meta, choice, /*stream=*/true, first)}));
}

std::string StreamUsageChunk(const ResponseMeta& meta, const Usage& usage) {
  ordered_json j = Envelope(meta, /*chunk=*/true);
  j["choices"] = ordered_json::array();
  j["usage"] = UsageJson(usage);
  return DumpJson(j);
}

std::string SseEvent(std::string_view json_text) {
  std::string out;
  out.reserve(json_text.size() + 8);
  out += "data: ";
  out += json_text;
  out += "\n\n";
  return out;
}

std::string ModelsResponse(const ModelInfo& model) {
  ordered_json m;
  m["id"] = model.id;
  m["object"] = "model";
  m["created"] = model.created;
  m["owned_by"] = "kvstash";
  m["max_model_len"] = model.max_model_len;
  m["kvstash"] = {{"kv_type_k", model.kv_type_k},
                  {"kv_type_v", model.kv_type_v},
                  {"block_tokens", model.block_tokens},
                  {"capacity_tokens", model.capacity_tokens},
                  {"tier_codec", model.tier_codec},
                  {"tiers", model.tiers}};
  ordered_json j;
  j["object"] = "list";
  j["data"] = ordered_json::array({std::move(m)});
  return DumpJson(j);
}

}  // namespace kvstash
