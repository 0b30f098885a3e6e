#include "store/redis_connection.h"

#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "base/check.h"

namespace kvstash::store {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

RedisCommand::RedisCommand(std::string_view verb, std::string_view key,
                           std::initializer_list<std::string_view> extra) {
  std::vector<const char*> argv = {verb.data()};
  std::vector<size_t> lengths = {verb.size()};
  if (!key.empty()) {
    argv.push_back(key.data());
    lengths.push_back(key.size());
  }
  for (std::string_view a : extra) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  char* out = nullptr;
  const int n = redisFormatCommandArgv(&out, int(argv.size()), argv.data(),
                                       lengths.data());
  // Fails only when out of memory or beyond INT_MAX bytes, which values
  // (at most 512 MiB, see redis_tier.cc) never reach.
  KV_CHECK(n >= 0);
  bytes_.reset(out);
  size_ = size_t(n);
}

void RedisCommand::Free::operator()(char* p) const { redisFreeCommand(p); }

namespace {

// The parser's buffer, once empty, is kept up to this size (not freed and
// grown again for the next large reply).
constexpr size_t kKeptParseBuffer = size_t{4} << 20;

int64_t MillisUntil(Clock::time_point t) {
  return std::chrono::ceil<milliseconds>(t - Clock::now()).count();
}

}  // namespace

// One TCP connection to a node, non-blocking, with the parser of its
// replies. Thread-compatible.
class RedisConnection {
 public:
  // Connects to `endpoint` within `timeout`; IOError naming `name`.
  static Result<std::unique_ptr<RedisConnection>> Open(
      const RedisEndpoint& endpoint, const std::string& name,
      milliseconds timeout, uint64_t generation) {
    const auto fail = [&](std::string_view what, std::string_view why) {
      return Status::IOError("redis " + name + ": " + std::string(what) + ": " +
                             std::string(why));
    };
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int gai =
        ::getaddrinfo(endpoint.host.c_str(),
                      std::to_string(endpoint.port).c_str(), &hints, &found);
    if (gai != 0) return fail("cannot resolve", ::gai_strerror(gai));
    const std::unique_ptr<addrinfo, void (*)(addrinfo*)> free_found(
        found, ::freeaddrinfo);
    const Clock::time_point deadline = Clock::now() + timeout;
    std::string why = "no address";
    for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
      const int fd = ::socket(ai->ai_family,
                              SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        why = std::strerror(errno);
        continue;
      }
      std::unique_ptr<RedisConnection> c(new RedisConnection(fd, generation));
      int err = 0;
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
          pollfd p{fd, POLLOUT, 0};
          int n;
          do {
            n = ::poll(&p, 1, int(std::max<int64_t>(0, MillisUntil(deadline))));
          } while (n < 0 && errno == EINTR);
          socklen_t len = sizeof(err);
          if (n == 0) {
            err = ETIMEDOUT;
          } else if (n < 0 ||
                     ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
          }
        }
      }
      if (err == 0) {
        const int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
        return c;
      }
      why = std::strerror(err);
    }
    return fail("cannot connect", why);
  }

  ~RedisConnection() { ::close(fd_); }
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  int fd() const { return fd_; }
  uint64_t generation() const { return generation_; }

  // Sends a prefix of `chunks`; returns its length in bytes (0 when the
  // socket takes nothing now), or the reason the connection broke.
  Result<size_t> Send(std::span<const iovec> chunks) {
    msghdr m{};
    m.msg_iov = const_cast<iovec*>(chunks.data());
    m.msg_iovlen = std::min<size_t>(chunks.size(), IOV_MAX);
    for (;;) {
      const ssize_t n = ::sendmsg(fd_, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return size_t(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t{0};
      return Status::IOError(std::string("send failed: ") +
                             std::strerror(errno));
    }
  }

  // Reads what the socket holds, up to what the parser has room for, where
  // the parser wants it (a large string's own buffer while one arrives);
  // returns whether any byte came, or the reason the connection broke
  // (closed by the peer included). Callers take the replies after each
  // receive, so that completed replies do not pile up.
  Result<bool> Receive() {
    for (;;) {
      const std::span<char> space = reader_.Space();
      const ssize_t n = ::recv(fd_, space.data(), space.size(), 0);
      if (n > 0) {
        reader_.Commit(size_t(n));
        return true;
      }
      if (n == 0) return Status::IOError("connection closed by the server");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      return Status::IOError(std::string("receive failed: ") +
                             std::strerror(errno));
    }
  }

  // The next complete reply (null when none is complete yet), or the reason
  // the byte stream is not the Redis protocol.
  Result<RedisReply> TakeReply() { return reader_.Take(); }

 private:
  RedisConnection(int fd, uint64_t generation)
      : fd_(fd), generation_(generation), reader_(kKeptParseBuffer) {}

  const int fd_;
  const uint64_t generation_;
  RedisReplyReader reader_;
};

namespace {

// Commands in flight on one connection: sent in order, at most
// kRedisPipelineDepth ahead of the replies read.
struct Pipeline {
  RedisConnection* conn = nullptr;
  std::vector<std::span<const char>> commands;
  std::vector<RedisReply> replies;  // replies[i] answers commands[i]
  size_t sent = 0;                  // commands fully sent
  size_t offset = 0;                // bytes of commands[sent] sent
  Clock::time_point last_progress;
  Status status;  // not OK: the connection broke; replies are incomplete

  bool Done() const {
    return !status.ok() || replies.size() == commands.size();
  }
  bool WantsWrite() const {
    return status.ok() && sent < commands.size() &&
           (offset > 0 || sent - replies.size() < size_t(kRedisPipelineDepth));
  }

  // Moves bytes as the socket allows, refilling the window as replies come.
  // REQUIRES: !Done().
  void Step(short revents) {
    if (revents & POLLOUT) SendWindow();
    if (!(revents & (POLLIN | POLLERR | POLLHUP))) return;
    while (status.ok() && !Done()) {
      Result<bool> got = conn->Receive();
      if (!got.ok()) {
        status = got.status();
      } else if (*got) {
        last_progress = Clock::now();
        TakeReplies();
        SendWindow();
        continue;
      }
      return;
    }
  }

  void TakeReplies() {
    for (;;) {
      Result<RedisReply> r = conn->TakeReply();
      if (!r.ok()) {
        status = r.status();
        return;
      }
      if (*r == nullptr) return;
      if (replies.size() == sent) {
        status = Status::IOError("reply to a command not sent");
        return;
      }
      replies.push_back(std::move(r).value());
    }
  }

  void SendWindow() {
    while (WantsWrite()) {
      std::vector<iovec> chunks;
      const size_t end = std::min(commands.size(),
                                  replies.size() + size_t(kRedisPipelineDepth));
      for (size_t i = sent; i < end; ++i) {
        const size_t skip = i == sent ? offset : 0;
        chunks.push_back({const_cast<char*>(commands[i].data() + skip),
                          commands[i].size() - skip});
      }
      Result<size_t> n = conn->Send(chunks);
      if (!n.ok()) {
        status = n.status();
        return;
      }
      if (*n == 0) return;
      last_progress = Clock::now();
      size_t left = *n;
      while (left > 0) {
        const size_t rest = commands[sent].size() - offset;
        if (left < rest) {
          offset += left;
          break;
        }
        left -= rest;
        offset = 0;
        ++sent;
      }
    }
  }
};

// Runs `pipelines` on their connections at once until each has every reply
// or has failed; one whose connection accepts and delivers nothing for
// `idle_timeout` fails.
void RunPipelines(std::span<Pipeline> pipelines, milliseconds idle_timeout) {
  for (Pipeline& p : pipelines) p.last_progress = Clock::now();
  std::vector<pollfd> fds;
  std::vector<Pipeline*> active;
  for (;;) {
    fds.clear();
    active.clear();
    int64_t wait_ms = INT_MAX;
    for (Pipeline& p : pipelines) {
      if (p.Done()) continue;
      const int64_t left = MillisUntil(p.last_progress + idle_timeout);
      if (left <= 0) {
        p.status =
            Status::IOError("no progress within " +
                            std::to_string(idle_timeout.count()) + " ms");
        continue;
      }
      wait_ms = std::min(wait_ms, left);
      fds.push_back(
          {p.conn->fd(), short(POLLIN | (p.WantsWrite() ? POLLOUT : 0)), 0});
      active.push_back(&p);
    }
    if (active.empty()) return;
    if (::poll(fds.data(), fds.size(), int(wait_ms)) < 0 && errno != EINTR) {
      const Status s =
          Status::IOError(std::string("poll failed: ") + std::strerror(errno));
      for (Pipeline* p : active) p->status = s;
      return;
    }
    for (size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents != 0) active[i]->Step(fds[i].revents);
    }
  }
}

// Sends `auth` (an AUTH command) on the new connection `c` to the node
// `name`, and reads its reply within `timeout`: OK when accepted, else
// AccessRefused, or why the connection failed.
Status LogIn(RedisConnection& c, const RedisCommand& auth,
             const std::string& name, milliseconds timeout) {
  Pipeline p;
  p.conn = &c;
  p.commands = {auth.bytes()};
  RunPipelines({&p, 1}, timeout);
  if (!p.status.ok()) return p.status.WithPrefix("redis " + name + ": AUTH");
  const RedisValue& reply = *p.replies.front();
  if (reply.is_error()) return RedisAccessRefused(name, reply.text());
  return Status::OK();
}

}  // namespace

Status RedisAccessRefused(const std::string& name, std::string_view reply) {
  return Status::PermissionDenied("redis " + name +
                                  " refused access: " + std::string(reply));
}

bool RedisRefusesAccess(std::string_view text) {
  return text.starts_with("NOAUTH") || text.starts_with("WRONGPASS") ||
         text.starts_with("NOPERM") || text.starts_with("ERR invalid password");
}

RedisNode::RedisNode(RedisEndpoint endpoint, const RedisNodeOptions& options,
                     const RedisCommand* auth)
    : endpoint_(std::move(endpoint)),
      name_(endpoint_.ToString()),
      options_(options),
      auth_(auth) {}

RedisNode::~RedisNode() = default;

uint64_t RedisNode::connect_attempts() const {
  const std::lock_guard<std::mutex> lock(mu_);
  return connect_attempts_;
}

Result<std::unique_ptr<RedisConnection>> RedisNode::Acquire() {
  std::unique_lock<std::mutex> lock(mu_);
  const Clock::time_point give_up = Clock::now() + options_.command_timeout;
  for (;;) {
    if (Clock::now() < retry_at_) {
      return Status::Unavailable(
          last_failure_.message() + " (backing off, next try in " +
          std::to_string(MillisUntil(retry_at_)) + " ms)");
    }
    if (!idle_.empty()) {
      std::unique_ptr<RedisConnection> c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
    if (open_ < options_.pool_size) {
      ++open_;
      ++connect_attempts_;
      const uint64_t generation = generation_;
      lock.unlock();
      Result<std::unique_ptr<RedisConnection>> c = Connect(generation);
      lock.lock();
      if (c.ok()) {
        failures_ = 0;
      } else {
        --open_;
        FailLocked(c.status());
        cv_.notify_all();
      }
      return c;
    }
    if (cv_.wait_until(lock, give_up) == std::cv_status::timeout) {
      return Status::Unavailable(
          "redis " + name_ + ": all " + std::to_string(options_.pool_size) +
          " connections busy for " +
          std::to_string(options_.command_timeout.count()) + " ms");
    }
  }
}

void RedisNode::Release(std::unique_ptr<RedisConnection> c) {
  const std::lock_guard<std::mutex> lock(mu_);
  if (c->generation() == generation_) {
    idle_.push_back(std::move(c));
  } else {
    --open_;  // opened before a failure of the node
  }
  cv_.notify_one();
}

void RedisNode::Discard(std::unique_ptr<RedisConnection> c, const Status& why) {
  c.reset();
  const std::lock_guard<std::mutex> lock(mu_);
  --open_;
  FailLocked(why);
  cv_.notify_all();
}

Result<std::unique_ptr<RedisConnection>> RedisNode::Connect(
    uint64_t generation) {
  KV_ASSIGN_OR_RETURN(
      std::unique_ptr<RedisConnection> c,
      RedisConnection::Open(endpoint_, name_, options_.connect_timeout,
                            generation));
  if (auth_ != nullptr) {
    KV_RETURN_IF_ERROR(LogIn(*c, *auth_, name_, options_.command_timeout));
  }
  return c;
}

void RedisNode::FailLocked(const Status& why) {
  last_failure_ = why;
  ++generation_;
  open_ -= int(idle_.size());
  idle_.clear();
  const Clock::time_point now = Clock::now();
  if (now < retry_at_) return;
  ++failures_;
  milliseconds backoff = options_.min_backoff;
  for (int i = 1; i < failures_ && backoff < options_.max_backoff; ++i) {
    backoff *= 2;
  }
  retry_at_ = now + std::min(backoff, options_.max_backoff);
}

bool RunRedisBatches(std::span<RedisNodeBatch> batches,
                     milliseconds idle_timeout) {
  // A fixed order of acquisition, so that callers waiting for connections
  // of several nodes never wait for each other in a cycle.
  std::vector<RedisNodeBatch*> order;
  for (RedisNodeBatch& b : batches) order.push_back(&b);
  std::sort(order.begin(), order.end(),
            [](RedisNodeBatch* x, RedisNodeBatch* y) {
              return x->node->name() < y->node->name();
            });
  std::vector<std::unique_ptr<RedisConnection>> conns;
  std::vector<RedisNodeBatch*> running;
  bool failed = false;
  for (RedisNodeBatch* b : order) {
    Result<std::unique_ptr<RedisConnection>> c = b->node->Acquire();
    if (!c.ok()) {
      b->status = c.status();
      failed = true;
      continue;
    }
    conns.push_back(std::move(c).value());
    running.push_back(b);
  }
  std::vector<Pipeline> pipelines(running.size());
  for (size_t i = 0; i < running.size(); ++i) {
    pipelines[i].conn = conns[i].get();
    pipelines[i].commands = std::move(running[i]->commands);
  }
  RunPipelines(pipelines, idle_timeout);
  for (size_t i = 0; i < running.size(); ++i) {
    RedisNodeBatch& b = *running[i];
    b.commands = std::move(pipelines[i].commands);
    b.replies = std::move(pipelines[i].replies);
    if (pipelines[i].status.ok()) {
      b.node->Release(std::move(conns[i]));
    } else {
      b.status = pipelines[i].status.WithPrefix("redis " + b.node->name());
      b.node->Discard(std::move(conns[i]), b.status);
      failed = true;
    }
  }
  return failed;
}

}  // namespace kvstash::store
