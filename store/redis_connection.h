// Talking to one Redis server: commands in the wire form, connections, and a
// server's pool of them (RedisNode), and running pipelined batches of
// commands on several servers at once.
//
// A connection is a plain non-blocking TCP socket (TCP_NODELAY, keep-alive)
// driven by poll, with hiredis formatting commands (RedisCommand) and the
// reply reader of store/redis_reply.h parsing what comes back. A RedisNode
// keeps up to pool_size connections, shared by every thread; each new one
// sends AUTH [user] password before anything else when given one, and a
// connection whose AUTH is refused is a failed connect. After a failed
// connect or a broken connection the node is in backoff for min_backoff,
// doubling with each further failure up to max_backoff, and it closes its
// idle connections (they are suspect); while in backoff, using the node
// fails at once with Unavailable, without touching the network; the first
// use after it reconnects. RunRedisBatches sends each batch's commands to its
// node on one pooled connection, all nodes at once, with at most
// kRedisPipelineDepth commands awaiting their replies per connection (a
// sliding window, so that neither side buffers a whole batch); string
// replies are parsed straight into the buffers handed back. No wait lasts
// longer than connect_timeout for a connect, or command_timeout for a node
// that sends or accepts nothing (or for a free pooled connection). Errors
// name the node ("redis HOST:PORT: ..."), never a password. RedisCommand is
// thread-compatible; RedisNode and RunRedisBatches are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/redis_reply.h"
#include "store/redis_url.h"

namespace kvstash::store {

// Commands sent on one connection before their replies are read.
inline constexpr int kRedisPipelineDepth = 64;

// One command in the Redis protocol's wire form.
class RedisCommand {
 public:
  // `verb`, then `key` unless empty, then `extra`.
  RedisCommand(std::string_view verb, std::string_view key,
               std::initializer_list<std::string_view> extra = {});

  std::span<const char> bytes() const { return {bytes_.get(), size_}; }

 private:
  struct Free {
    void operator()(char* p) const;
  };
  std::unique_ptr<char, Free> bytes_;
  size_t size_ = 0;
};

// Whether the error reply `text` refuses access: credentials missing or
// wrong (NOAUTH, WRONGPASS, ERR invalid password), or a user without the
// right to the command (NOPERM).
bool RedisRefusesAccess(std::string_view text);

// PermissionDenied: the node `name` refused access with the error reply
// `reply` (Redis never echoes a password in it).
Status RedisAccessRefused(const std::string& name, std::string_view reply);

struct RedisNodeOptions {
  int pool_size = 4;  // > 0
  std::chrono::milliseconds connect_timeout{200};
  std::chrono::milliseconds command_timeout{500};
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
};

class RedisConnection;
struct RedisNodeBatch;

// One Redis server (a cluster node or the standalone server): its pool of
// connections and its backoff. Thread-safe.
class RedisNode {
 public:
  // `auth`: an AUTH command sent on each new connection, or null for none;
  // it must outlive the node.
  RedisNode(RedisEndpoint endpoint, const RedisNodeOptions& options,
            const RedisCommand* auth);
  ~RedisNode();
  RedisNode(const RedisNode&) = delete;
  RedisNode& operator=(const RedisNode&) = delete;

  const RedisEndpoint& endpoint() const { return endpoint_; }
  const std::string& name() const { return name_; }
  // Connections opened or tried so far.
  uint64_t connect_attempts() const;

 private:
  friend bool RunRedisBatches(std::span<RedisNodeBatch> batches,
                              std::chrono::milliseconds idle_timeout);

  // An idle pooled connection, else a new one while the pool has room, else
  // the first one released within command_timeout. Unavailable at once
  // while in backoff; the connect (or AUTH) error when connecting fails.
  Result<std::unique_ptr<RedisConnection>> Acquire();
  // Returns a connection whose pipeline completed.
  void Release(std::unique_ptr<RedisConnection> c);
  // Closes a connection that broke, for `why`, and backs off.
  void Discard(std::unique_ptr<RedisConnection> c, const Status& why);

  // A new connection, logged in when the node has credentials.
  Result<std::unique_ptr<RedisConnection>> Connect(uint64_t generation);
  // Starts (or, when already backing off, keeps) the backoff, and closes the
  // idle connections: after one broke, the others are suspect.
  void FailLocked(const Status& why);

  const RedisEndpoint endpoint_;
  const std::string name_;
  const RedisNodeOptions options_;
  const RedisCommand* const auth_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // a connection was released or closed
  // Guarded by mu_. open_ counts idle, lent and connecting connections.
  std::vector<std::unique_ptr<RedisConnection>> idle_;
  int open_ = 0;
  uint64_t connect_attempts_ = 0;  // connections opened or tried
  uint64_t generation_ = 0;        // bumped by each failure
  int failures_ = 0;               // since the last successful connect
  std::chrono::steady_clock::time_point retry_at_;
  Status last_failure_;
};

// Commands of one round for one node, and what came back.
struct RedisNodeBatch {
  std::shared_ptr<RedisNode> node;
  std::vector<std::span<const char>> commands;
  std::vector<RedisReply> replies;  // a prefix of the answers when !status.ok()
  Status status;
};

// Sends each batch's commands to its node, pipelined, all nodes at once, and
// reads the replies. A node that cannot be reached (in backoff, connect or
// AUTH failed, no free connection), or whose connection breaks or moves
// nothing for `idle_timeout`, fails its batch (status, naming the node; the
// connection is closed and the node backs off). Returns whether any batch
// failed. Batches must name distinct nodes.
bool RunRedisBatches(std::span<RedisNodeBatch> batches,
                     std::chrono::milliseconds idle_timeout);

}  // namespace kvstash::store
