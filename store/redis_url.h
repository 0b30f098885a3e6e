// Where a Redis tier lives and how to log in: the endpoints and credentials
// of a "redis://[CREDENTIALS@]HOST:PORT[,HOST:PORT...]" URL (one standalone
// server, or seed nodes of a Redis Cluster), and the "HOST:PORT" text of an
// endpoint as Redis Cluster writes it in its -MOVED and -ASK redirections.
// HOST is a name, an IPv4 address or an IPv6 address (bracketed in a URL:
// "[::1]:6379"); PORT is 1..65535. CREDENTIALS are "USER:PASSWORD" (an ACL
// user, Redis >= 6), ":PASSWORD" (the default user's password) or "USER"
// (the password given elsewhere); they end at the last '@', the first ':'
// ends USER, and both are percent-decoded ("%40" is '@', "%3A" ':'), so a
// USER holding ':' or any byte must be written "%XX". Database numbers and
// options are not part of the grammar and are refused, and so is TLS
// ("rediss://"). Errors never show a password: they quote the URL as
// RedactRedisUrl writes it. Pure functions; thread-safe.
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

struct RedisUrl {
  std::vector<RedisEndpoint> endpoints;  // in order, duplicates kept
  std::string user;                      // decoded; empty: the default user
  std::string password;                  // decoded; empty: none given
};

// The parts of `url`. InvalidArgument naming the (redacted) URL, what is
// wrong and the expected form otherwise; also for "@" with empty
// credentials and for a bad percent-escape.
Result<RedisUrl> ParseRedisUrl(std::string_view url);

// `url` with its credentials (what precedes its last '@', after any
// "SCHEME://"), if any, replaced by "***", for messages.
std::string RedactRedisUrl(std::string_view url);

// One "HOST:PORT" or "[HOST]:PORT"; the last ':' outside brackets separates
// the port, so "::1:6379" is host "::1". InvalidArgument otherwise.
Result<RedisEndpoint> ParseRedisEndpoint(std::string_view text);

}  // namespace kvstash::store
