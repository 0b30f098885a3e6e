#include "serve/json_body.h"

#include <algorithm>
#include <string>

namespace kvstash {
namespace {

using json = nlohmann::json;

// The deepest array/object nesting in `text`, counting no further than
// `limit + 1`. Brackets inside strings do not count. Malformed JSON is left
// to the parser.
int NestingDepth(std::string_view text, int limit) {
  int depth = 0;
  int max_depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > limit) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

}  // namespace

std::variant<json, ApiError> ParseJsonObject(std::string_view body,
                                             const ParseLimits& limits) {
  if (body.size() > limits.max_body_bytes) {
    return ApiError::PayloadTooLarge("request body of " +
                                     std::to_string(body.size()) +
                                     " bytes is larger than the limit of " +
                                     std::to_string(limits.max_body_bytes));
  }
  if (NestingDepth(body, limits.max_depth) > limits.max_depth) {
    return ApiError::BadRequest("request body is nested deeper than " +
                                std::to_string(limits.max_depth) + " levels");
  }
  try {
    json o = json::parse(body);
    if (!o.is_object()) {
      return ApiError::BadRequest("request body must be a JSON object");
    }
    return o;
  } catch (const json::parse_error& e) {
    return ApiError::BadRequest("request body is not valid JSON: " +
                                JsonErrorText(e));
  } catch (const json::out_of_range& e) {
    // The parser's number overflow, e.g. 1e999.
    return ApiError::BadRequest("request body holds a number out of range: " +
                                JsonErrorText(e));
  } catch (const json::exception& e) {
    return ApiError::BadRequest("invalid request: " + JsonErrorText(e));
  }
}

const json* JsonField(const json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || it->is_null()) return nullptr;
  return &*it;
}

ApiError WrongType(const std::string& param, std::string_view expected) {
  return ApiError::BadRequest(
      "'" + param + "' must be " + std::string(expected), param);
}

std::optional<ApiError> ReadBool(const json& o, const char* key, bool* out) {
  const json* v = JsonField(o, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return WrongType(key, "a boolean");
  *out = v->get<bool>();
  return std::nullopt;
}

std::string JsonErrorText(const json::exception& e) {
  std::string_view what = e.what();
  const size_t end = what.find("] ");
  if (!what.empty() && what[0] == '[' && end != std::string_view::npos) {
    what.remove_prefix(end + 2);
  }
  return std::string(what);
}

std::string DumpJson(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false,
                nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace kvstash
