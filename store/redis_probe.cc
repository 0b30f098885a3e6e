#include "store/redis_probe.h"

#include <hiredis/hiredis.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "store/redis_connection.h"
#include "store/redis_url.h"

namespace kvstash::store {
namespace {

using Clock = std::chrono::steady_clock;

constexpr timeval kConnectTimeout = {1, 0};
constexpr timeval kCommandTimeout = {10, 0};
constexpr int kMaxRedirects = 3;
// The bytes of values the timed GETs await at once. A local redis-server
// copies each GET's value into reply buffers before it writes them, and
// the more replies are queued the colder that memory: 512 KiB values came
// at 3.6-5.8 GB/s with one awaited, 2.9-4.0 with 1 MiB, 2.5-3.1 with 2 MiB,
// 1.5-2.1 with 8 MiB and 0.6 with 32 MiB (64 values, the tier's command
// depth; AMD EPYC VM, 2026-12-04). 1 MiB keeps a value's transfer
// overlapping the next request's round trip on a network.
constexpr size_t kProbeBytesInFlight = size_t{1} << 20;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;
struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// A connected probe client.
struct Client {
  RedisEndpoint endpoint;
  Context c;

  Status Error(std::string_view what) const {
    return Status::IOError("redis probe " + endpoint.ToString() + ": " +
                           std::string(what));
  }
};

// Appends one command given as argv.
void Append(Client& client, std::initializer_list<std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  redisAppendCommandArgv(client.c.get(), int(argv.size()), argv.data(),
                         lengths.data());
}

Result<Reply> NextReply(Client& client) {
  void* r = nullptr;
  if (redisGetReply(client.c.get(), &r) != REDIS_OK) {
    return client.Error(client.c->errstr);
  }
  Reply reply(static_cast<redisReply*>(r));
  if (reply->type == REDIS_REPLY_ERROR) {
    return client.Error(std::string_view(reply->str, reply->len));
  }
  return reply;
}

// A client of `endpoint`, logged in with the credentials of `url`, if any.
Result<Client> Connect(const RedisEndpoint& endpoint, const RedisUrl& url) {
  Client client{endpoint,
                Context(redisConnectWithTimeout(
                    endpoint.host.c_str(), endpoint.port, kConnectTimeout))};
  if (client.c == nullptr) return client.Error("out of memory");
  if (client.c->err != 0) return client.Error(client.c->errstr);
  if (redisSetTimeout(client.c.get(), kCommandTimeout) != REDIS_OK) {
    return client.Error("cannot set the timeout");
  }
  if (url.password.empty()) return client;
  if (url.user.empty()) {
    Append(client, {"AUTH", url.password});
  } else {
    Append(client, {"AUTH", url.user, url.password});
  }
  KV_RETURN_IF_ERROR(NextReply(client).status());
  return client;
}

// Runs commands 0..count-1 (appended by `append`) with at most
// kRedisPipelineDepth awaiting replies; `check` judges each reply.
Status Pipelined(Client& client, int count,
                 const std::function<void(int)>& append,
                 const std::function<Status(int, const redisReply&)>& check) {
  Status first_error;
  for (int i = 0; i < count && i < kRedisPipelineDepth; ++i) append(i);
  for (int i = 0; i < count; ++i) {
    Result<Reply> r = NextReply(client);
    if (!r.ok() && client.c->err != 0) return r.status();  // connection lost
    const Status s = r.ok() ? check(i, **r) : r.status();
    if (first_error.ok()) first_error = s;
    if (i + kRedisPipelineDepth < count) append(i + kRedisPipelineDepth);
  }
  return first_error;
}

// Sends what `client` has appended (hiredis's output buffer).
Status Flush(Client& client) {
  int done = 0;
  while (done == 0) {
    if (redisBufferWrite(client.c.get(), &done) != REDIS_OK) {
      return client.Error(client.c->errstr);
    }
  }
  return Status::OK();
}

// The timed phase: `count` GETs of values of `value_bytes` bytes, the
// values of at most kProbeBytesInFlight awaiting, whose replies are received
// from the socket into one scratch buffer and skipped, not parsed into objects:
// the client's only work per byte is the kernel's copy, so the probe measures
// what the server and the network deliver (hiredis's reader copies every
// value twice more and held the probe to a third of the server's rate).
// Every reply must be a string of value_bytes bytes, else the first one
// that is not is described (an error reply by its text); all replies are
// read either way, so the connection stays usable, unless one is of a type
// GET never returns. REQUIRES: hiredis's reader holds no unread bytes.
Status TimedGets(Client& client, const std::vector<std::string>& keys,
                 size_t value_bytes) {
  constexpr size_t kScratchBytes = size_t{1} << 20;
  constexpr size_t kMaxLineBytes = size_t{64} << 10;
  std::vector<char> scratch(kScratchBytes);
  const int count = int(keys.size());
  // GETs awaiting replies: kRedisPipelineDepth, and values of at most
  // kProbeBytesInFlight (at least one).
  const int awaited = int(std::clamp<size_t>(kProbeBytesInFlight / value_bytes,
                                             1, kRedisPipelineDepth));
  int sent = 0, received = 0;
  std::string line;  // the reply's first line, until its '\n'
  size_t skip = 0;   // bytes of the current value and its CRLF still to come
  Status first_error;
  while (received < count) {
    const int sent_before = sent;
    for (; sent < count && sent - received < awaited; ++sent) {
      Append(client, {"GET", keys[size_t(sent)]});
    }
    if (sent != sent_before) KV_RETURN_IF_ERROR(Flush(client));
    const ssize_t n = ::recv(client.c->fd, scratch.data(), scratch.size(), 0);
    if (n == 0) return client.Error("connection closed");
    if (n < 0) {
      if (errno == EINTR) continue;
      return client.Error(errno == EAGAIN || errno == EWOULDBLOCK
                              ? "timed out"
                              : std::strerror(errno));
    }
    std::string_view in(scratch.data(), size_t(n));
    while (!in.empty() && received < count) {
      if (skip > 0) {
        const size_t take = std::min(skip, in.size());
        in.remove_prefix(take);
        if ((skip -= take) == 0) ++received;
        continue;
      }
      const size_t eol = in.find('\n');
      line.append(in.substr(0, eol));
      if (line.size() > kMaxLineBytes) {
        return client.Error("a reply line of over 64 KiB");
      }
      if (eol == std::string_view::npos) break;
      in.remove_prefix(eol + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const std::string& key = keys[size_t(received)];
      size_t length = 0;
      const char* end = line.data() + line.size();
      if (line.starts_with('$') &&
          std::from_chars(line.data() + 1, end, length).ptr == end) {
        skip = length + 2;  // the value and its CRLF
        if (length != value_bytes && first_error.ok()) {
          first_error = client.Error("GET " + key + " returned " +
                                     std::to_string(length) + " bytes, not " +
                                     std::to_string(value_bytes));
        }
      } else if (line == "$-1" || line.starts_with('-') ||
                 line.starts_with('+') || line.starts_with(':')) {
        ++received;  // a one-line reply: nil, an error, a status, an integer
        if (first_error.ok()) {
          first_error = client.Error(line.starts_with('-')
                                         ? line.substr(1)
                                         : "GET " + key + " returned '" + line +
                                               "', not the value written");
        }
      } else {
        // Nothing GET returns: the replies after it cannot be told apart.
        return client.Error("GET " + key + " returned '" + line.substr(0, 64) +
                            "'");
      }
      line.clear();
    }
  }
  return first_error;
}

// The first seed of `url` that answers, redirected to the master of `key`'s
// slot.
Result<Client> ConnectToOwner(const RedisUrl& url, const std::string& key) {
  Status why;
  for (const RedisEndpoint& seed : url.endpoints) {
    Result<Client> client = Connect(seed, url);
    for (int hop = 0; client.ok() && hop < kMaxRedirects; ++hop) {
      Append(*client, {"EXISTS", key});
      Result<Reply> r = NextReply(*client);
      if (r.ok()) return client;
      const std::string& text = r.status().message();
      const size_t moved = text.find("MOVED ");
      const size_t space = text.find(' ', moved + 6);
      if (moved == std::string::npos || space == std::string::npos) {
        return r.status();
      }
      std::string where = text.substr(space + 1);
      if (where.starts_with(':')) where = client->endpoint.host + where;
      Result<RedisEndpoint> to = ParseRedisEndpoint(where);
      if (!to.ok()) return client->Error("bad redirection '" + text + "'");
      client = Connect(*to, url);
    }
    why =
        client.ok() ? client->Error("too many redirections") : client.status();
  }
  return why;
}

}  // namespace

Result<double> PipelinedGetProbe(const std::string& url, size_t value_bytes,
                                 int count) {
  if (value_bytes == 0 || count <= 0) {
    return Status::InvalidArgument(
        "redis probe: value size and count must be > 0");
  }
  KV_ASSIGN_OR_RETURN(const RedisUrl parsed, ParseRedisUrl(url));
  const std::string prefix =
      "kvstash:probe:{" + std::to_string(::getpid()) + "-" +
      std::to_string(Clock::now().time_since_epoch().count()) + "}:";
  std::vector<std::string> keys(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) keys[size_t(i)] = prefix + std::to_string(i);
  KV_ASSIGN_OR_RETURN(Client client, ConnectToOwner(parsed, keys[0]));

  std::string value(value_bytes, '\0');
  for (size_t i = 0; i < value_bytes; ++i) value[i] = char(i * 131 + 7);
  Status status = Pipelined(
      client, count,
      [&](int i) {
        Append(client, {"SET", keys[size_t(i)], value});
      },
      [](int, const redisReply&) { return Status::OK(); });
  const Clock::time_point start = Clock::now();
  if (status.ok()) status = TimedGets(client, keys, value_bytes);
  const double seconds =
      std::chrono::duration<double>(Clock::now() - start).count();
  const Status cleanup = Pipelined(
      client, count,
      [&](int i) {
        Append(client, {"DEL", keys[size_t(i)]});
      },
      [](int, const redisReply&) { return Status::OK(); });
  KV_RETURN_IF_ERROR(status);
  KV_RETURN_IF_ERROR(cleanup);
  return double(value_bytes) * double(count) / seconds;
}

}  // namespace kvstash::store
