#include "store/redis_probe.h"

#include <hiredis/hiredis.h>
#include <unistd.h>

#include <chrono>
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
  if (status.ok()) {
    status = Pipelined(
        client, count,
        [&](int i) {
          Append(client, {"GET", keys[size_t(i)]});
        },
        [&](int i, const redisReply& r) {
          return r.type == REDIS_REPLY_STRING && r.len == value_bytes
                     ? Status::OK()
                     : client.Error("GET " + keys[size_t(i)] +
                                    " did not return the value written");
        });
  }
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
