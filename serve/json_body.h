// The JSON side that every request and response body of the HTTP API
// shares.
//
// ParseJsonObject runs the checks every request body passes before its
// fields are read, in the order that does the least work first: at most
// ParseLimits::max_body_bytes (else 413), nested at most ParseLimits::max_depth
// deep (else 400; counted by a scan, before the parser builds anything),
// valid JSON in valid UTF-8 (else 400 quoting the parser), a JSON object
// (else 400). The field readers then follow one rule: a field set to null
// counts as absent, a field of the wrong type is a 400 naming it in `param`.
// DumpJson writes a response body; it never fails: text that is not valid
// UTF-8 is written with U+FFFD in place of the bad bytes.
//
// Pure functions; thread-safe; throw nothing.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "serve/openai_api.h"

namespace kvstash {

std::variant<nlohmann::json, ApiError> ParseJsonObject(
    std::string_view body, const ParseLimits& limits);

// The value of `key` in object `o`, or nullptr when absent or null.
const nlohmann::json* JsonField(const nlohmann::json& o, const char* key);

// 400 "'<param>' must be <expected>".
ApiError WrongType(const std::string& param, std::string_view expected);

// Sets *out to the boolean `key` of `o` when given.
std::optional<ApiError> ReadBool(const nlohmann::json& o, const char* key,
                                 bool* out);

std::string DumpJson(const nlohmann::ordered_json& j);

// The parser's message without its "[json.exception.<kind>.<id>] " prefix.
std::string JsonErrorText(const nlohmann::json::exception& e);

}  // namespace kvstash
