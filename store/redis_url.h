// Where a Redis tier lives: the endpoints of a "redis://HOST:PORT[,HOST:PORT]"
// URL (one standalone server, or seed nodes of a Redis Cluster), and the
// "HOST:PORT" text of an endpoint as Redis Cluster writes it in its -MOVED
// and -ASK redirections. HOST is a name, an IPv4 address or an IPv6 address
// (bracketed in a URL: "[::1]:6379"); PORT is 1..65535. Credentials, database
// numbers and options are not part of the grammar and are refused. Pure
// functions; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace kvstash::store {

struct RedisEndpoint {
  std::string host;
  int port = 0;

  // "HOST:PORT" ("[HOST]:PORT" when HOST holds a ':').
  std::string ToString() const;
  friend bool operator==(const RedisEndpoint&, const RedisEndpoint&) = default;
};

// The endpoints of `url`, in order, duplicates kept. InvalidArgument naming
// the URL, what is wrong and the expected form otherwise.
Result<std::vector<RedisEndpoint>> ParseRedisUrl(std::string_view url);

// One "HOST:PORT" or "[HOST]:PORT"; the last ':' outside brackets separates
// the port, so "::1:6379" is host "::1". InvalidArgument otherwise.
Result<RedisEndpoint> ParseRedisEndpoint(std::string_view text);

}  // namespace kvstash::store
