#include "store/redis_url.h"

#include <charconv>

namespace kvstash::store {
namespace {

constexpr std::string_view kScheme = "redis://";
constexpr std::string_view kExpected =
    "expected redis://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]";

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `text` with each "%XX" replaced by the byte 0xXX; InvalidArgument for a
// '%' without two hex digits after it.
Result<std::string> PercentDecode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    const int high = i + 2 < text.size() ? HexDigit(text[i + 1]) : -1;
    const int low = high >= 0 ? HexDigit(text[i + 2]) : -1;
    if (low < 0) {
      return Status::InvalidArgument(
          "credentials hold a '%' not followed by two hex digits");
    }
    out.push_back(char(high * 16 + low));
    i += 2;
  }
  return out;
}

}  // namespace

std::string RedisEndpoint::ToString() const {
  const bool bracket = host.find(':') != std::string::npos;
  std::string out = bracket ? "[" : "";
  out.append(host).append(bracket ? "]:" : ":").append(std::to_string(port));
  return out;
}

Result<RedisEndpoint> ParseRedisEndpoint(std::string_view text) {
  const auto bad = [&](std::string_view why) {
    std::string m = "'";
    m.append(text).append("' ").append(why);
    return Status::InvalidArgument(std::move(m));
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad("has no ':PORT'");
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host.find_first_of("[]/@ ") != std::string_view::npos) {
    return bad("has no valid host");
  }
  int port = 0;
  const auto [end, ec] = std::from_chars(
      port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() ||
      port < 1 || port > 65535) {
    return bad("has no port in 1..65535");
  }
  return RedisEndpoint{std::string(host), port};
}

std::string RedactRedisUrl(std::string_view url) {
  const size_t at = url.rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  const size_t scheme = url.find("://");
  const size_t start = scheme < at ? scheme + 3 : 0;
  std::string out(url.substr(0, start));
  out.append("***").append(url.substr(at));
  return out;
}

Result<RedisUrl> ParseRedisUrl(std::string_view url) {
  const auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("redis URL '" + RedactRedisUrl(url) +
                                   "': " + std::string(why) + "; " +
                                   std::string(kExpected));
  };
  if (url.starts_with("rediss://")) {
    return bad("TLS (rediss://) is not supported");
  }
  if (!url.starts_with(kScheme)) return bad("no redis:// scheme");
  std::string_view rest = url.substr(kScheme.size());
  RedisUrl out;
  if (const size_t at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view credentials = rest.substr(0, at);
    const size_t colon = credentials.find(':');
    Result<std::string> user = PercentDecode(credentials.substr(0, colon));
    if (!user.ok()) return bad(user.status().message());
    Result<std::string> password = PercentDecode(
        colon == std::string_view::npos ? std::string_view()
                                        : credentials.substr(colon + 1));
    if (!password.ok()) return bad(password.status().message());
    if (user->empty() && password->empty()) {
      return bad("'@' with no user nor password before it");
    }
    out.user = std::move(user).value();
    out.password = std::move(password).value();
    rest = rest.substr(credentials.size() + 1);
  }
  if (rest.find('/') != std::string_view::npos ||
      rest.find('?') != std::string_view::npos) {
    return bad("database numbers and options are not supported");
  }
  for (;;) {
    const size_t comma = rest.find(',');
    Result<RedisEndpoint> endpoint = ParseRedisEndpoint(rest.substr(0, comma));
    if (!endpoint.ok()) return bad(endpoint.status().message());
    out.endpoints.push_back(std::move(endpoint).value());
    if (comma == std::string_view::npos) return out;
    rest = rest.substr(comma + 1);
  }
}

}  // namespace kvstash::store
