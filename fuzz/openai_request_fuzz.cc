// Request bodies of the HTTP API (serve/openai_api.h, serve/tokenize_api.h):
// the same bytes parsed as a completion, a chat completion, a /kv/lookup, a
// /tokenize and a /detokenize body, under small limits
// so that the size and depth refusals are reached too. Whatever is accepted
// must hold the parser's promises (ranges of the validated fields).
#include <cstdint>
#include <string_view>
#include <variant>

#include "fuzz/fuzz_support.h"
#include "serve/openai_api.h"
#include "serve/tokenize_api.h"

namespace {

void CheckAccepted(
    const std::variant<kvstash::CompletionRequest, kvstash::ApiError>& parsed,
    const kvstash::ParseLimits& limits) {
  const auto* r = std::get_if<kvstash::CompletionRequest>(&parsed);
  if (r == nullptr) {
    const auto& e = std::get<kvstash::ApiError>(parsed);
    FUZZ_CHECK(e.http_status >= 400 && e.http_status < 500);
    FUZZ_CHECK(!e.message.empty());
    return;
  }
  if (r->max_tokens) {
    // 0 only to score an echoed prompt.
    FUZZ_CHECK(*r->max_tokens >= (r->echo ? 0 : 1) &&
               *r->max_tokens <= limits.max_tokens);
  }
  FUZZ_CHECK(!r->echo || r->endpoint == kvstash::Endpoint::kCompletions);
  FUZZ_CHECK(r->n >= 1 && r->best_of >= r->n &&
             r->best_of <= limits.max_choices);
  FUZZ_CHECK(!r->stream || r->best_of == r->n);
  FUZZ_CHECK(r->logprobs >= -1 && r->logprobs <= kvstash::kMaxTopLogprobs);
  FUZZ_CHECK(r->presence_penalty >= -2.0f && r->presence_penalty <= 2.0f);
  FUZZ_CHECK(r->frequency_penalty >= -2.0f && r->frequency_penalty <= 2.0f);
  FUZZ_CHECK(r->logit_bias.size() <= 300);
  for (const auto& [id, bias] : r->logit_bias) {
    FUZZ_CHECK(id >= 0 && bias >= -100.0f && bias <= 100.0f);
  }
  FUZZ_CHECK(r->stop_token_ids.size() <= 64);
  for (int32_t id : r->stop_token_ids) FUZZ_CHECK(id >= 0);
  FUZZ_CHECK(r->temperature >= 0.0f && r->temperature <= 2.0f);
  FUZZ_CHECK(r->top_p > 0.0f && r->top_p <= 1.0f);
  FUZZ_CHECK(r->min_p >= 0.0f && r->min_p <= 1.0f);
  FUZZ_CHECK(r->repetition_penalty > 0.0f);
  FUZZ_CHECK(r->stop.size() <= 4);
  for (const auto& s : r->stop) FUZZ_CHECK(!s.empty());
  if (r->cache_salt) {
    FUZZ_CHECK(!r->cache_salt->empty() && r->cache_salt->size() <= 256);
  }
  FUZZ_CHECK(!r->include_usage || r->stream);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvstash;
  const std::string_view body = fuzz::AsText({data, size});
  ParseLimits limits;
  limits.max_body_bytes = 4096;
  limits.max_depth = 8;
  limits.max_tokens = 512;
  limits.max_choices = 16;
  CheckAccepted(ParseCompletionRequest(Endpoint::kCompletions, body, limits),
                limits);
  CheckAccepted(
      ParseCompletionRequest(Endpoint::kChatCompletions, body, limits), limits);
  CheckAccepted(ParseLookupRequest(body, limits), limits);
  const auto tokenize = ParseTokenizeRequest(body, limits);
  if (const auto* e = std::get_if<ApiError>(&tokenize)) {
    FUZZ_CHECK(e->http_status >= 400 && e->http_status < 500);
  }
  constexpr int kVocab = 512;
  const auto ids = ParseDetokenizeRequest(body, limits, kVocab);
  if (const auto* accepted = std::get_if<std::vector<int32_t>>(&ids)) {
    for (int32_t id : *accepted) FUZZ_CHECK(id >= 0 && id < kVocab);
  }
  return 0;
}
