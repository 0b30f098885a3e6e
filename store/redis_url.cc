#include "store/redis_url.h"

#include <charconv>

namespace kvstash::store {
namespace {

constexpr std::string_view kScheme = "redis://";
constexpr std::string_view kExpected =
    "expected redis://HOST:PORT[,HOST:PORT...]";

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

Result<std::vector<RedisEndpoint>> ParseRedisUrl(std::string_view url) {
  const auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("redis URL '" + std::string(url) +
                                   "': " + std::string(why) + "; " +
                                   std::string(kExpected));
  };
  if (!url.starts_with(kScheme)) return bad("no redis:// scheme");
  std::string_view rest = url.substr(kScheme.size());
  if (rest.find('@') != std::string_view::npos) {
    return bad("credentials are not supported");
  }
  if (rest.find('/') != std::string_view::npos ||
      rest.find('?') != std::string_view::npos) {
    return bad("database numbers and options are not supported");
  }
  std::vector<RedisEndpoint> endpoints;
  for (;;) {
    const size_t comma = rest.find(',');
    Result<RedisEndpoint> endpoint = ParseRedisEndpoint(rest.substr(0, comma));
    if (!endpoint.ok()) return bad(endpoint.status().message());
    endpoints.push_back(std::move(endpoint).value());
    if (comma == std::string_view::npos) return endpoints;
    rest = rest.substr(comma + 1);
  }
}

}  // namespace kvstash::store
