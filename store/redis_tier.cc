#include "store/redis_tier.h"

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
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include "base/check.h"
#include "store/crc16.h"
#include "store/object_format.h"
#include "store/redis_reply.h"
#include "store/redis_url.h"

namespace kvstash::store {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Redis refuses bulk strings above proto-max-bulk-len (512 MiB by default).
constexpr uint64_t kMaxValueBytes = uint64_t{512} << 20;
// One batch of the writer: at most this many objects, or bytes (but at
// least one object).
constexpr size_t kWriteBatchObjects = 4 * kRedisPipelineDepth;
constexpr uint64_t kWriteBatchBytes = uint64_t{64} << 20;
// Redirections followed per command before it fails.
constexpr int kMaxHops = 4;
constexpr size_t kReadChunk = size_t{64} << 10;
// The parser's buffer, once empty, is kept up to this size (not freed and
// grown again for the next large reply).
constexpr size_t kKeptParseBuffer = size_t{4} << 20;
constexpr uint16_t kNoMaster = UINT16_MAX;
constexpr char kHowToLogIn[] =
    "give credentials as redis://user:password@host:port, "
    "redis://:password@host:port or --redis-password-file PATH";

using Reply = RedisReply;

int64_t MillisUntil(Clock::time_point t) {
  return std::chrono::ceil<milliseconds>(t - Clock::now()).count();
}

// One command in the Redis protocol's wire form.
class Command {
 public:
  // `verb`, then `key` unless empty, then `extra`.
  Command(std::string_view verb, std::string_view key,
          std::initializer_list<std::string_view> extra = {}) {
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
    // (<= kMaxValueBytes) never reach.
    KV_CHECK(n >= 0);
    bytes_.reset(out);
    size_ = size_t(n);
  }

  std::span<const char> bytes() const { return {bytes_.get(), size_}; }

 private:
  struct Free {
    void operator()(char* p) const { redisFreeCommand(p); }
  };
  std::unique_ptr<char, Free> bytes_;
  size_t size_ = 0;
};

const Command& AskingCommand() {
  static const Command* const kAsking = new Command("ASKING", "");
  return *kAsking;
}

const Command& ClusterSlotsCommand() {
  static const Command* const kSlots = new Command("CLUSTER", "", {"SLOTS"});
  return *kSlots;
}

// One TCP connection to a node, non-blocking, with the parser of its
// replies. Thread-compatible.
class Connection {
 public:
  // Connects to `endpoint` within `timeout`; IOError naming `name`.
  static Result<std::unique_ptr<Connection>> Open(const RedisEndpoint& endpoint,
                                                  const std::string& name,
                                                  milliseconds timeout,
                                                  uint64_t generation) {
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
      std::unique_ptr<Connection> c(new Connection(fd, generation));
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

  ~Connection() { ::close(fd_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

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

  // Reads one chunk (at most kReadChunk bytes) into the parser; returns
  // whether any byte came, or the reason the connection broke (closed by the
  // peer included). Callers take the replies after each chunk: hiredis moves
  // the unparsed rest of its buffer each time a reply is taken, so a buffer
  // of many replies would be moved over and over.
  Result<bool> Receive() {
    for (;;) {
      const ssize_t n = ::recv(fd_, buffer_.data(), buffer_.size(), 0);
      if (n > 0) {
        KV_RETURN_IF_ERROR(reader_.Feed({buffer_.data(), size_t(n)}));
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
  Result<Reply> TakeReply() { return reader_.Take(); }

 private:
  Connection(int fd, uint64_t generation)
      : fd_(fd),
        generation_(generation),
        reader_(kKeptParseBuffer),
        buffer_(kReadChunk) {}

  const int fd_;
  const uint64_t generation_;
  RedisReplyReader reader_;
  std::vector<char> buffer_;
};

// Commands in flight on one connection: sent in order, at most
// kRedisPipelineDepth ahead of the replies read.
struct Pipeline {
  Connection* conn = nullptr;
  std::vector<std::span<const char>> commands;
  std::vector<Reply> replies;  // replies[i] answers commands[i]
  size_t sent = 0;             // commands fully sent
  size_t offset = 0;           // bytes of commands[sent] sent
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
      Result<Reply> r = conn->TakeReply();
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

// Why the node `name` refused access, with Redis's error reply `reply`
// (Redis never echoes a password in it).
Status AccessRefused(const std::string& name, std::string_view reply) {
  return Status::PermissionDenied("redis " + name +
                                  " refused access: " + std::string(reply));
}

// Whether the error reply `text` refuses access: credentials missing or
// wrong, or a user without the right to the command.
bool RefusesAccess(std::string_view text) {
  return text.starts_with("NOAUTH") || text.starts_with("WRONGPASS") ||
         text.starts_with("NOPERM") || text.starts_with("ERR invalid password");
}

// Sends `auth` (an AUTH command) on the new connection `c` to the node
// `name`, and reads its reply within `timeout`: OK when accepted, else
// AccessRefused, or why the connection failed.
Status LogIn(Connection& c, const Command& auth, const std::string& name,
             milliseconds timeout) {
  Pipeline p;
  p.conn = &c;
  p.commands = {auth.bytes()};
  RunPipelines({&p, 1}, timeout);
  if (!p.status.ok()) return p.status.WithPrefix("redis " + name + ": AUTH");
  const RedisValue& reply = *p.replies.front();
  if (reply.is_error()) return AccessRefused(name, reply.text());
  return Status::OK();
}

// One Redis server (a cluster node or the standalone server): its pool of
// connections and its backoff. Thread-safe.
class Node {
 public:
  // `auth`: sent on each new connection; null for none.
  Node(RedisEndpoint endpoint, const RedisTierOptions& options,
       const Command* auth)
      : endpoint_(std::move(endpoint)),
        name_(endpoint_.ToString()),
        options_(options),
        auth_(auth) {}

  const RedisEndpoint& endpoint() const { return endpoint_; }
  const std::string& name() const { return name_; }
  uint64_t connect_attempts() const {
    const std::lock_guard<std::mutex> lock(mu_);
    return connect_attempts_;
  }

  // An idle pooled connection, else a new one while the pool has room, else
  // the first one released within command_timeout. Unavailable at once
  // while in backoff; the connect (or AUTH) error when connecting fails.
  Result<std::unique_ptr<Connection>> Acquire() {
    std::unique_lock<std::mutex> lock(mu_);
    const Clock::time_point give_up = Clock::now() + options_.command_timeout;
    for (;;) {
      if (Clock::now() < retry_at_) {
        return Status::Unavailable(
            last_failure_.message() + " (backing off, next try in " +
            std::to_string(MillisUntil(retry_at_)) + " ms)");
      }
      if (!idle_.empty()) {
        std::unique_ptr<Connection> c = std::move(idle_.back());
        idle_.pop_back();
        return c;
      }
      if (open_ < options_.pool_size) {
        ++open_;
        ++connect_attempts_;
        const uint64_t generation = generation_;
        lock.unlock();
        Result<std::unique_ptr<Connection>> c = Connect(generation);
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

  // Returns a connection whose pipeline completed.
  void Release(std::unique_ptr<Connection> c) {
    const std::lock_guard<std::mutex> lock(mu_);
    if (c->generation() == generation_) {
      idle_.push_back(std::move(c));
    } else {
      --open_;  // opened before a failure of the node
    }
    cv_.notify_one();
  }

  // Closes a connection that broke, for `why`, and backs off.
  void Discard(std::unique_ptr<Connection> c, const Status& why) {
    c.reset();
    const std::lock_guard<std::mutex> lock(mu_);
    --open_;
    FailLocked(why);
    cv_.notify_all();
  }

 private:
  // A new connection, logged in when the tier has credentials.
  Result<std::unique_ptr<Connection>> Connect(uint64_t generation) {
    KV_ASSIGN_OR_RETURN(std::unique_ptr<Connection> c,
                        Connection::Open(endpoint_, name_,
                                         options_.connect_timeout, generation));
    if (auth_ != nullptr) {
      KV_RETURN_IF_ERROR(LogIn(*c, *auth_, name_, options_.command_timeout));
    }
    return c;
  }

  // Starts (or, when already backing off, keeps) the backoff, and closes the
  // idle connections: after one broke, the others are suspect.
  void FailLocked(const Status& why) {
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

  const RedisEndpoint endpoint_;
  const std::string name_;
  const RedisTierOptions& options_;  // owned by the tier, outlives the node
  const Command* const auth_;        // likewise

  mutable std::mutex mu_;
  std::condition_variable cv_;  // a connection was released or closed
  // Guarded by mu_. open_ counts idle, lent and connecting connections.
  std::vector<std::unique_ptr<Connection>> idle_;
  int open_ = 0;
  uint64_t connect_attempts_ = 0;  // connections opened or tried
  uint64_t generation_ = 0;  // bumped by each failure
  int failures_ = 0;         // since the last successful connect
  Clock::time_point retry_at_;
  Status last_failure_;
};

// Where keys go: one standalone server, or a cluster's slot map. Immutable
// once published.
struct Topology {
  bool cluster = false;
  // Standalone: the server. Cluster: the masters named by slot_master.
  std::vector<std::shared_ptr<Node>> masters;
  // Cluster: [kRedisClusterSlots] index into masters, or kNoMaster.
  std::vector<uint16_t> slot_master;

  // The node serving `redis_key`, or null when its slot has no master.
  const std::shared_ptr<Node>* NodeFor(std::string_view redis_key) const {
    if (!cluster) return &masters.front();
    const uint16_t m = slot_master[size_t(RedisClusterSlot(redis_key))];
    return m == kNoMaster ? nullptr : &masters[m];
  }

  // Makes `node` the master of `slot`.
  void Assign(int slot, const std::shared_ptr<Node>& node) {
    auto it = std::find(masters.begin(), masters.end(), node);
    if (it == masters.end()) it = masters.insert(masters.end(), node);
    slot_master[size_t(slot)] = uint16_t(it - masters.begin());
  }
};

// The command `verb key extra...`, and what became of it: a reply that is
// not an error reply, or the error.
struct KeyCommand {
  KeyCommand(std::string_view verb, std::string redis_key,
             std::initializer_list<std::string_view> extra = {})
      : key(std::move(redis_key)), command(verb, key, extra) {}

  std::string key;
  Command command;
  Reply reply;
  Status error;
};

// OK when `reply` holds an object of `key` that `authenticator` verifies;
// Corruption or PermissionDenied (forged) otherwise.
Status Verify(const RedisValue& reply, const BlockKey& key,
              const ObjectAuthenticator& authenticator) {
  if (!reply.is_string()) {
    return Status::Corruption("not a string");
  }
  Result<ObjectView> view = authenticator.Verify(reply.bytes);
  if (!view.ok()) return view.status();
  if (view->header.key != key) {
    return Status::Corruption("holds the object of key " +
                              view->header.key.Hex());
  }
  return Status::OK();
}

}  // namespace

struct RedisTier::State {
  struct Write {
    BlockKey key;
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    uint64_t ticket = 0;  // order of acceptance, for Flush
  };
  struct InFlight {
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    bool cancelled = false;  // erased while being written
  };
  // Commands of one round for one node.
  struct NodeBatch {
    std::shared_ptr<Node> node;
    std::vector<std::span<const char>> commands;
    std::vector<Reply> replies;  // a prefix of the answers when !status.ok()
    Status status;
  };

  RedisTierOptions options;
  std::vector<RedisEndpoint> seeds;
  // AUTH [user] password; none without a password.
  std::optional<Command> auth;
  std::string ttl_text;  // "" when no TTL
  std::thread writer;

  mutable std::mutex topo_mu;
  // Guarded by topo_mu. Nodes are never forgotten (a cluster has few). The
  // seeds and the nodes CLUSTER SLOTS named: the only ones redirections go to.
  std::map<std::string, std::shared_ptr<Node>> nodes;
  std::shared_ptr<const Topology> topology;  // null until learned
  Status topology_error = Status::Unavailable("no seed tried yet");
  bool refresh_wanted = false;
  Clock::time_point next_refresh;
  std::mutex discover_mu;  // one discovery at a time

  mutable std::mutex mu;
  std::condition_variable work_cv;  // queue non-empty, or stop
  std::condition_variable done_cv;  // a write finished or went away
  // Guarded by mu. A key is in at most one of queue and in_flight (not
  // cancelled).
  std::list<Write> queue;  // FIFO, tickets ascending
  std::unordered_map<BlockKey, std::list<Write>::iterator, Hash128Hasher>
      queued;
  std::unordered_map<BlockKey, InFlight, Hash128Hasher> in_flight;
  uint64_t in_flight_first_ticket = 0;
  uint64_t queue_bytes = 0;  // queue and in_flight
  uint64_t last_ticket = 0;
  bool stop = false;
  TierStats stats;

  std::string Key(const BlockKey& key) const {
    return options.key_prefix + key.Hex();
  }

  // The bytes of `key` if queued or being written. REQUIRES: mu held.
  std::shared_ptr<const std::vector<uint8_t>> Pending(
      const BlockKey& key) const {
    if (auto q = queued.find(key); q != queued.end()) return q->second->bytes;
    if (auto f = in_flight.find(key);
        f != in_flight.end() && !f->second.cancelled) {
      return f->second.bytes;
    }
    return nullptr;
  }

  // REQUIRES: mu held.
  void Fail(const Status& s) {
    ++stats.errors;
    stats.last_error = s.ToString();
  }

  std::shared_ptr<Node> NodeAt(const RedisEndpoint& endpoint) {
    const std::lock_guard<std::mutex> lock(topo_mu);
    std::shared_ptr<Node>& node = nodes[endpoint.ToString()];
    if (node == nullptr) {
      node = std::make_shared<Node>(endpoint, options,
                                    auth.has_value() ? &*auth : nullptr);
    }
    return node;
  }

  // The node at `endpoint` when it is known (see nodes), else null.
  std::shared_ptr<Node> KnownNode(const RedisEndpoint& endpoint) const {
    const std::lock_guard<std::mutex> lock(topo_mu);
    const auto it = nodes.find(endpoint.ToString());
    return it == nodes.end() ? nullptr : it->second;
  }

  void ScheduleRefresh() {
    const std::lock_guard<std::mutex> lock(topo_mu);
    refresh_wanted = true;
  }

  // Sends each batch's commands to its node, all nodes at once. A node that
  // cannot be reached, or whose connection breaks, fails its batch and
  // schedules a topology refresh.
  void Run(std::span<NodeBatch> batches) {
    // A fixed order of acquisition, so that callers waiting for connections
    // of several nodes never wait for each other in a cycle.
    std::vector<NodeBatch*> order;
    for (NodeBatch& b : batches) order.push_back(&b);
    std::sort(order.begin(), order.end(), [](NodeBatch* x, NodeBatch* y) {
      return x->node->name() < y->node->name();
    });
    std::vector<std::unique_ptr<Connection>> conns;
    std::vector<NodeBatch*> running;
    bool failed = false;
    for (NodeBatch* b : order) {
      Result<std::unique_ptr<Connection>> c = b->node->Acquire();
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
    RunPipelines(pipelines, options.command_timeout);
    for (size_t i = 0; i < running.size(); ++i) {
      NodeBatch& b = *running[i];
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
    if (failed) ScheduleRefresh();
  }

  // Publishes what `reply` (to CLUSTER SLOTS, asked of `asked`) says.
  Status Learn(const RedisValue& reply, const std::shared_ptr<Node>& asked) {
    auto t = std::make_shared<Topology>();
    if (reply.is_error()) {
      if (RefusesAccess(reply.text())) {
        return AccessRefused(asked->name(), reply.text());
      }
      if (reply.text().find("cluster support disabled") ==
          std::string_view::npos) {
        return Status::IOError("redis " + asked->name() +
                               ": CLUSTER SLOTS: " + std::string(reply.text()));
      }
      t->masters.push_back(asked);
    } else {
      Result<std::vector<RedisSlotRange>> ranges = ParseClusterSlots(reply);
      if (!ranges.ok()) {
        return Status::IOError("redis " + asked->name() + ": " +
                               ranges.status().message());
      }
      t->cluster = true;
      t->slot_master.assign(kRedisClusterSlots, kNoMaster);
      for (RedisSlotRange& range : *ranges) {
        RedisEndpoint& endpoint = range.master;
        if (endpoint.host == "?") continue;  // the master's address is unknown
        if (endpoint.host.empty()) endpoint.host = asked->endpoint().host;
        const std::shared_ptr<Node> node = NodeAt(endpoint);
        for (int s = range.first; s <= range.last; ++s) t->Assign(s, node);
      }
    }
    const std::lock_guard<std::mutex> lock(topo_mu);
    topology = std::move(t);
    return Status::OK();
  }

  // Asks the known masters, then the seeds, for the topology until one
  // answers, and publishes the answer. Leaves the topology as it was when
  // none answers, and returns why. While the topology is unknown, a node
  // that refuses access answers too: its AccessRefused is returned at once.
  Status Discover() {
    std::vector<std::shared_ptr<Node>> candidates;
    bool learning;
    {
      const std::lock_guard<std::mutex> lock(topo_mu);
      learning = topology == nullptr;
      if (!learning) candidates = topology->masters;
    }
    for (const RedisEndpoint& seed : seeds) {
      std::shared_ptr<Node> node = NodeAt(seed);
      if (std::find(candidates.begin(), candidates.end(), node) ==
          candidates.end()) {
        candidates.push_back(std::move(node));
      }
    }
    Status why;
    for (const std::shared_ptr<Node>& node : candidates) {
      NodeBatch b{node, {ClusterSlotsCommand().bytes()}, {}, Status::OK()};
      Run({&b, 1});
      why = b.status.ok() ? Learn(*b.replies.front(), node) : b.status;
      if (why.ok()) return why;
      if (learning && why.code() == StatusCode::kPermissionDenied) break;
    }
    const std::lock_guard<std::mutex> lock(topo_mu);
    if (topology == nullptr) topology_error = why;
    return why;
  }

  // The topology to route by: learned now when unknown; refreshed first
  // when a refresh is due and no other thread is refreshing.
  Result<std::shared_ptr<const Topology>> Routing() {
    bool refresh = false;
    {
      const std::lock_guard<std::mutex> lock(topo_mu);
      if (topology != nullptr) {
        refresh = refresh_wanted && Clock::now() >= next_refresh;
        if (!refresh) return topology;
      }
    }
    if (refresh) {
      const std::unique_lock<std::mutex> one(discover_mu, std::try_to_lock);
      if (one.owns_lock()) {
        {
          const std::lock_guard<std::mutex> lock(topo_mu);
          refresh_wanted = false;
          next_refresh = Clock::now() + options.min_backoff;
        }
        (void)Discover();  // on failure the old map stays in use
      }
    } else {
      const std::lock_guard<std::mutex> one(discover_mu);
      bool known;
      {
        const std::lock_guard<std::mutex> lock(topo_mu);
        known = topology != nullptr;
      }
      if (!known) {
        const Status s = Discover();
        if (!s.ok()) return s.WithPrefix("redis topology unknown");
      }
    }
    const std::lock_guard<std::mutex> lock(topo_mu);
    return topology;
  }

  // After -MOVED: `slot` is served by `node` from now on.
  void Moved(int slot, const std::shared_ptr<Node>& node) {
    const std::lock_guard<std::mutex> lock(topo_mu);
    refresh_wanted = true;
    if (topology == nullptr || !topology->cluster) return;
    auto t = std::make_shared<Topology>(*topology);
    t->Assign(slot, node);
    topology = std::move(t);
  }

  // Runs each command at the node of its key, following redirections; on
  // return each has a reply that is not an error, or an error.
  void Dispatch(std::span<KeyCommand> cmds) {
    struct Hop {
      size_t i;
      std::shared_ptr<Node> node;
      bool asking;
    };
    std::vector<Hop> hops;
    Result<std::shared_ptr<const Topology>> topo = Routing();
    for (size_t i = 0; i < cmds.size(); ++i) {
      if (!topo.ok()) {
        cmds[i].error = topo.status();
      } else if (const std::shared_ptr<Node>* node =
                     (*topo)->NodeFor(cmds[i].key)) {
        hops.push_back({i, *node, false});
      } else {
        cmds[i].error =
            Status::Unavailable("redis: no master serves slot " +
                                std::to_string(RedisClusterSlot(cmds[i].key)));
      }
    }
    for (int round = 0; !hops.empty(); ++round) {
      if (round == kMaxHops) {
        for (const Hop& h : hops) {
          cmds[h.i].error = Status::IOError(
              "redis: " + cmds[h.i].key + " still redirected after " +
              std::to_string(kMaxHops) + " tries");
        }
        break;
      }
      std::vector<NodeBatch> batches;
      std::vector<std::vector<const Hop*>> owners;  // null: an ASKING
      std::map<const Node*, size_t> batch_of;
      for (const Hop& h : hops) {
        auto [it, added] = batch_of.emplace(h.node.get(), batches.size());
        if (added) {
          batches.push_back({h.node, {}, {}, Status::OK()});
          owners.emplace_back();
        }
        if (h.asking) {
          batches[it->second].commands.push_back(AskingCommand().bytes());
          owners[it->second].push_back(nullptr);
        }
        batches[it->second].commands.push_back(cmds[h.i].command.bytes());
        owners[it->second].push_back(&h);
      }
      Run(batches);
      std::vector<Hop> next;
      for (size_t b = 0; b < batches.size(); ++b) {
        NodeBatch& batch = batches[b];
        for (size_t k = 0; k < owners[b].size(); ++k) {
          const Hop* h = owners[b][k];
          if (h == nullptr) continue;
          KeyCommand& cmd = cmds[h->i];
          if (k >= batch.replies.size()) {
            cmd.error = batch.status;
            continue;
          }
          Reply& reply = batch.replies[k];
          if (std::optional<RedisRedirect> r = ParseRedirect(*reply, batch.node->endpoint().host)) {
            std::shared_ptr<Node> to = KnownNode(r->to);
            if (to == nullptr) {
              cmd.error = Status::IOError(
                  "redis " + batch.node->name() + ": " +
                  std::string(reply->text()) +
                  ": not followed, not a known node of the cluster");
              ScheduleRefresh();
              continue;
            }
            if (!r->ask) Moved(r->slot, to);
            next.push_back({h->i, std::move(to), r->ask});
          } else if (reply->is_error()) {
            cmd.error = Status::IOError("redis " + batch.node->name() + ": " +
                                        std::string(reply->text()));
          } else {
            cmd.reply = std::move(reply);
          }
        }
      }
      hops = std::move(next);
    }
  }
};

Result<std::unique_ptr<RedisTier>> RedisTier::Open(
    const RedisTierOptions& options) {
  Result<RedisUrl> url = ParseRedisUrl(options.url);
  if (!url.ok()) return url.status();
  const auto bad = [&](std::string_view what) {
    return Status::InvalidArgument("redis cache '" +
                                   RedactRedisUrl(options.url) +
                                   "': " + std::string(what));
  };
  const std::string& user = options.user.empty() ? url->user : options.user;
  const std::string& password =
      options.password.empty() ? url->password : options.password;
  if (!user.empty() && password.empty()) {
    return bad(std::string("a user needs a password; ") + kHowToLogIn);
  }
  if (options.ttl_seconds < 0) return bad("ttl_seconds must be >= 0");
  if (options.pool_size <= 0) return bad("pool_size must be > 0");
  if (options.connect_timeout.count() <= 0 ||
      options.command_timeout.count() <= 0) {
    return bad("connect and command timeouts must be > 0");
  }
  if (options.max_queue_bytes == 0) return bad("max_queue_bytes must be > 0");
  if (options.min_backoff.count() <= 0 ||
      options.max_backoff < options.min_backoff) {
    return bad("backoff must satisfy 0 < min_backoff <= max_backoff");
  }
  if (!options.authenticator.keyed() && !options.insecure) {
    return bad(
        "objects in a shared Redis must be authenticated: give every server "
        "of the fleet the same tier key (--tier-key-file FILE, or "
        "KVSTASH_TIER_KEY in the environment), or accept that whoever can "
        "write to this Redis controls the KV every server reads "
        "(--redis-insecure)");
  }
  auto state = std::make_unique<State>();
  state->options = options;
  state->seeds = std::move(url->endpoints);
  if (!password.empty()) {
    // AUTH password, or AUTH user password (the user in the key's place).
    state->auth.emplace(Command("AUTH", user, {password}));
  }
  if (options.ttl_seconds > 0) {
    state->ttl_text = std::to_string(options.ttl_seconds);
  }
  std::unique_ptr<RedisTier> tier(new RedisTier(std::move(state)));
  // Other failures are kept for Describe.
  const Status learned = tier->state_->Discover();
  if (learned.code() == StatusCode::kPermissionDenied) {
    return Status::PermissionDenied(learned.message() + "; " + kHowToLogIn);
  }
  tier->state_->writer = std::thread([t = tier.get()] { t->WriterLoop(); });
  return tier;
}

RedisTier::RedisTier(std::unique_ptr<State> state) : state_(std::move(state)) {}

RedisTier::~RedisTier() {
  State& s = *state_;
  if (s.writer.joinable()) {
    {
      const std::lock_guard<std::mutex> lock(s.mu);
      s.stop = true;
    }
    s.work_cv.notify_all();
    s.writer.join();
  }
}

std::string RedisTier::RedisKey(const BlockKey& key) const {
  return state_->Key(key);
}

uint64_t RedisTier::connect_attempts() const {
  const State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.topo_mu);
  uint64_t n = 0;
  for (const auto& [name, node] : s.nodes) n += node->connect_attempts();
  return n;
}

std::string RedisTier::Describe() const {
  const State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.topo_mu);
  if (s.topology == nullptr) {
    return "unknown (" + s.topology_error.message() + ")";
  }
  if (!s.topology->cluster) {
    return "standalone " + s.topology->masters.front()->name();
  }
  std::vector<bool> serving(s.topology->masters.size());
  for (const uint16_t m : s.topology->slot_master) {
    if (m != kNoMaster) serving[m] = true;
  }
  return "cluster, " +
         std::to_string(std::count(serving.begin(), serving.end(), true)) +
         " masters";
}

Status RedisTier::Put(const BlockKey& key, std::vector<uint8_t> object) {
  State& s = *state_;
  KV_RETURN_IF_ERROR(ParseObjectForPut("redis cache", key, object).status());
  s.options.authenticator.Seal(object);
  const uint64_t size = object.size();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (s.Pending(key) != nullptr) return Status::OK();
  if (size > kMaxValueBytes ||
      s.queue_bytes + size > s.options.max_queue_bytes) {
    ++s.stats.dropped_writes;
    return Status::ResourceExhausted(
        "redis cache: object of " + std::to_string(size) + " bytes refused (" +
        std::to_string(s.queue_bytes) +
        " bytes queued; limits: " + std::to_string(s.options.max_queue_bytes) +
        " queued, " + std::to_string(kMaxValueBytes) + " per object)");
  }
  s.queue.push_back(
      {key, std::make_shared<const std::vector<uint8_t>>(std::move(object)),
       ++s.last_ticket});
  s.queued.emplace(key, std::prev(s.queue.end()));
  s.queue_bytes += size;
  s.work_cv.notify_one();
  return Status::OK();
}

std::vector<std::optional<std::vector<uint8_t>>> RedisTier::Get(
    std::span<const BlockKey> keys) {
  State& s = *state_;
  std::vector<std::optional<std::vector<uint8_t>>> out(keys.size());
  std::vector<size_t> remote;  // last key first: see Tier::Get
  std::vector<std::pair<size_t, std::shared_ptr<const std::vector<uint8_t>>>>
      pending;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = keys.size(); i-- > 0;) {
      if (auto bytes = s.Pending(keys[i])) {
        pending.emplace_back(i, std::move(bytes));
      } else {
        remote.push_back(i);
      }
    }
    s.stats.hits += pending.size();
  }
  for (auto& [i, bytes] : pending) out[i] = *bytes;

  std::vector<KeyCommand> gets;
  for (const size_t i : remote) {
    if (s.ttl_text.empty()) {
      gets.push_back(KeyCommand("GET", s.Key(keys[i])));
    } else {
      gets.push_back(KeyCommand("GETEX", s.Key(keys[i]), {"EX", s.ttl_text}));
    }
  }
  s.Dispatch(gets);

  std::vector<KeyCommand> dels;
  std::vector<Status> corrupt;
  uint64_t hits = 0, bytes_read = 0;
  std::vector<Status> errors;
  for (size_t j = 0; j < remote.size(); ++j) {
    KeyCommand& g = gets[j];
    if (!g.error.ok()) {
      errors.push_back(g.error);
      continue;
    }
    if (g.reply->type == REDIS_REPLY_NIL) continue;
    const Status verified =
        Verify(*g.reply, keys[remote[j]], s.options.authenticator);
    if (verified.ok()) {
      ++hits;
      bytes_read += g.reply->bytes.size();
      out[remote[j]] = std::move(g.reply->bytes);
    } else {
      corrupt.push_back(verified.WithPrefix("redis value '" + g.key + "'"));
      dels.push_back(KeyCommand("DEL", g.key));
    }
  }
  if (!dels.empty()) s.Dispatch(dels);

  const std::lock_guard<std::mutex> lock(s.mu);
  s.stats.hits += hits;
  s.stats.misses += remote.size() - hits;
  s.stats.bytes_read += bytes_read;
  for (const Status& e : errors) s.Fail(e);
  for (const Status& c : corrupt) {
    ++(c.code() == StatusCode::kPermissionDenied ? s.stats.forged_dropped
                                                 : s.stats.corrupt_dropped);
    s.stats.last_error = c.ToString();
  }
  for (const KeyCommand& d : dels) {
    if (!d.error.ok()) s.Fail(d.error);
  }
  return out;
}

std::vector<bool> RedisTier::Exists(std::span<const BlockKey> keys) {
  State& s = *state_;
  std::vector<bool> out(keys.size());
  std::vector<size_t> remote;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = 0; i < keys.size(); ++i) {
      out[i] = s.Pending(keys[i]) != nullptr;
      if (!out[i]) remote.push_back(i);
    }
  }
  std::vector<KeyCommand> checks;
  for (const size_t i : remote) {
    checks.push_back(KeyCommand("EXISTS", s.Key(keys[i])));
  }
  s.Dispatch(checks);
  const std::lock_guard<std::mutex> lock(s.mu);
  for (size_t j = 0; j < remote.size(); ++j) {
    if (!checks[j].error.ok()) {
      s.Fail(checks[j].error);
    } else {
      out[remote[j]] = checks[j].reply->type == REDIS_REPLY_INTEGER &&
                       checks[j].reply->integer > 0;
    }
  }
  return out;
}

Status RedisTier::Erase(const BlockKey& key) {
  State& s = *state_;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    if (auto q = s.queued.find(key); q != s.queued.end()) {
      s.queue_bytes -= q->second->bytes->size();
      s.queue.erase(q->second);
      s.queued.erase(q);
      s.done_cv.notify_all();
    }
    if (auto f = s.in_flight.find(key); f != s.in_flight.end()) {
      f->second.cancelled = true;
    }
  }
  KeyCommand del("DEL", s.Key(key));
  s.Dispatch({&del, 1});
  if (!del.error.ok()) {
    const std::lock_guard<std::mutex> lock(s.mu);
    s.Fail(del.error);
  }
  return del.error;
}

void RedisTier::Flush() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  const uint64_t ticket = s.last_ticket;
  s.done_cv.wait(lock, [&] {
    return (s.queue.empty() || s.queue.front().ticket > ticket) &&
           (s.in_flight.empty() || s.in_flight_first_ticket > ticket);
  });
}

TierStats RedisTier::Stats() const {
  const State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.mu);
  TierStats out = s.stats;
  out.queue_objects = s.queue.size() + s.in_flight.size();
  out.queue_bytes = s.queue_bytes;
  return out;
}

void RedisTier::WriterLoop() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  for (;;) {
    s.work_cv.wait(lock, [&] { return s.stop || !s.queue.empty(); });
    if (s.queue.empty()) return;  // stopping, and everything is written
    std::vector<State::Write> batch;
    uint64_t batch_bytes = 0;
    s.in_flight_first_ticket = s.queue.front().ticket;
    while (!s.queue.empty() && batch.size() < kWriteBatchObjects &&
           (batch.empty() ||
            batch_bytes + s.queue.front().bytes->size() <= kWriteBatchBytes)) {
      State::Write& w = s.queue.front();
      batch_bytes += w.bytes->size();
      s.queued.erase(w.key);
      s.in_flight.emplace(w.key, State::InFlight{w.bytes, false});
      batch.push_back(std::move(w));
      s.queue.pop_front();
    }

    lock.unlock();
    std::vector<KeyCommand> sets;
    for (const State::Write& w : batch) {
      const std::string_view value(
          reinterpret_cast<const char*>(w.bytes->data()), w.bytes->size());
      if (s.ttl_text.empty()) {
        sets.push_back(KeyCommand("SET", s.Key(w.key), {value}));
      } else {
        sets.push_back(
            KeyCommand("SET", s.Key(w.key), {value, "EX", s.ttl_text}));
      }
    }
    s.Dispatch(sets);
    lock.lock();

    // Erase marked the writes it cancelled before they were stored; its own
    // DEL may have run first, so they are deleted again below.
    std::vector<KeyCommand> dels;
    for (size_t i = 0; i < batch.size(); ++i) {
      const auto f = s.in_flight.find(batch[i].key);
      if (sets[i].error.ok()) {
        ++s.stats.writes;
        s.stats.bytes_written += batch[i].bytes->size();
        if (f->second.cancelled) {
          dels.push_back(KeyCommand("DEL", sets[i].key));
        }
      } else {
        s.Fail(sets[i].error);
      }
      s.queue_bytes -= batch[i].bytes->size();
      s.in_flight.erase(f);
    }
    s.done_cv.notify_all();
    if (dels.empty()) continue;
    lock.unlock();
    s.Dispatch(dels);
    lock.lock();
    for (const KeyCommand& d : dels) {
      if (!d.error.ok()) s.Fail(d.error);
    }
  }
}

}  // namespace kvstash::store
