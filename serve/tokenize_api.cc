#include "serve/tokenize_api.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "serve/json_body.h"

namespace kvstash {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// Whether `s` is valid UTF-8: shortest forms of code points up to U+10FFFF,
// no surrogates (what the JSON writer accepts as text).
bool IsUtf8(std::string_view s) {
  static constexpr uint32_t kLeast[] = {0, 0x80, 0x800, 0x10000};
  for (size_t i = 0; i < s.size();) {
    const auto lead = static_cast<unsigned char>(s[i]);
    size_t more;
    uint32_t cp;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if ((lead & 0xE0) == 0xC0) {
      more = 1, cp = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      more = 2, cp = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      more = 3, cp = lead & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= more) return false;
    for (size_t k = 1; k <= more; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = cp << 6 | (c & 0x3F);
    }
    if (cp < kLeast[more] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += more + 1;
  }
  return true;
}

}  // namespace

std::variant<TokenizeRequest, ApiError> ParseTokenizeRequest(
    std::string_view body, const ParseLimits& limits) {
  auto parsed = ParseJsonObject(body, limits);
  if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
  const json& o = std::get<json>(parsed);
  TokenizeRequest r;
  const json* content = JsonField(o, "content");
  if (content == nullptr) {
    return ApiError::BadRequest("'content' is required", "content");
  }
  if (!content->is_string()) return WrongType("content", "a string");
  r.content = content->get<std::string>();
  for (auto [key, field] : {std::pair{"add_special", &r.add_special},
                            std::pair{"parse_special", &r.parse_special},
                            std::pair{"with_pieces", &r.with_pieces}}) {
    if (std::optional<ApiError> e = ReadBool(o, key, field)) return *e;
  }
  return r;
}

std::variant<std::vector<int32_t>, ApiError> ParseDetokenizeRequest(
    std::string_view body, const ParseLimits& limits, int vocab_size) {
  auto parsed = ParseJsonObject(body, limits);
  if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
  const json* tokens = JsonField(std::get<json>(parsed), "tokens");
  if (tokens == nullptr) {
    return ApiError::BadRequest("'tokens' is required", "tokens");
  }
  if (!tokens->is_array()) return WrongType("tokens", "an array of token ids");
  std::vector<int32_t> ids;
  ids.reserve(tokens->size());
  for (size_t i = 0; i < tokens->size(); ++i) {
    const json& t = (*tokens)[i];
    const std::string param = "tokens[" + std::to_string(i) + "]";
    if (!t.is_number_integer()) {
      return WrongType(param, "a token id (an integer)");
    }
    // Non-negative integers are stored unsigned, up to 2^64 - 1.
    const bool in_vocabulary =
        t.is_number_unsigned()
            ? t.get<uint64_t>() < uint64_t(vocab_size)
            : t.get<int64_t>() >= 0 && t.get<int64_t>() < int64_t(vocab_size);
    if (!in_vocabulary) {
      return ApiError::BadRequest("'" + param + "' is " + t.dump() +
                                      ", outside the vocabulary of " +
                                      std::to_string(vocab_size) + " tokens",
                                  param);
    }
    ids.push_back(t.get<int32_t>());
  }
  return ids;
}

std::string TokenizeResponse(const Tokenizer& tokenizer,
                             const TokenizeRequest& request) {
  const std::vector<int32_t> ids =
      request.parse_special
          ? tokenizer.EncodeWithSpecialTokens(request.content,
                                              request.add_special)
          : tokenizer.Encode(request.content, request.add_special);
  ordered_json tokens = ordered_json::array();
  for (int32_t id : ids) {
    if (!request.with_pieces) {
      tokens.push_back(id);
      continue;
    }
    const std::string text = tokenizer.TokenText(id);
    ordered_json token;
    token["id"] = id;
    if (IsUtf8(text)) {
      token["piece"] = text;
    } else {
      token["piece"] = ordered_json::array();
      for (char c : text) token["piece"].push_back(static_cast<uint8_t>(c));
    }
    tokens.push_back(std::move(token));
  }
  ordered_json j;
  j["tokens"] = std::move(tokens);
  return DumpJson(j);
}

std::string DetokenizeResponse(const Tokenizer& tokenizer,
                               std::span<const int32_t> tokens) {
  ordered_json j;
  j["content"] = tokenizer.Decode(tokens);
  return DumpJson(j);
}

}  // namespace kvstash
