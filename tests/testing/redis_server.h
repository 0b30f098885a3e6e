// Real Redis servers for tests: RedisServer runs one /usr/bin/redis-server on
// a free loopback port, in a temporary directory of its own, without
// persistence; RedisCluster runs N of them as the masters of a Redis Cluster
// (created with redis-cli --cluster create, no replicas) and waits until the
// cluster is ok. Either may require a password (requirepass). RedisClient is
// a plain hiredis connection for checking what the servers hold.
//
// Servers are killed (SIGKILL) and their directories removed when their
// owner is destroyed; they are also killed when the thread that started them
// exits, so a crashed test leaves no server behind (start them from the test
// body's thread). Ports are drawn at random from 15000..21999, so that
// cluster bus ports (port + 10000) stay below the usual ephemeral range and
// tests running in parallel rarely collide (a collision is retried).
//
// Tests that need Redis call KVSTASH_REQUIRE_REDIS_SERVER() first: it skips
// the test, with the reason, when redis-server or redis-cli is missing (CI
// installs both, so there the tests run).
//
// TLS: a server started with `tls` speaks TLS only (a self-signed
// certificate for 127.0.0.1, made with the openssl command in its
// directory), and TlsTunnel runs stunnel in client mode in front of it, as
// the README tells users to reach a TLS Redis (hiredis on Debian 12 has no
// TLS). Tests that need them call KVSTASH_REQUIRE_TLS_TOOLS(). Not
// thread-safe.
#pragma once

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <sys/types.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace kvstash::testing {

inline constexpr char kRedisServerBinary[] = "/usr/bin/redis-server";
inline constexpr char kRedisCliBinary[] = "/usr/bin/redis-cli";

// Whether kRedisServerBinary and kRedisCliBinary can be run.
bool HaveRedisServer();

#define KVSTASH_REQUIRE_REDIS_SERVER()                                   \
  do {                                                                   \
    if (!::kvstash::testing::HaveRedisServer()) {                        \
      GTEST_SKIP() << "needs " << ::kvstash::testing::kRedisServerBinary \
                   << " and " << ::kvstash::testing::kRedisCliBinary     \
                   << " (apt-get install redis-server)";                 \
    }                                                                    \
  } while (0)

inline constexpr char kOpensslBinary[] = "/usr/bin/openssl";
inline constexpr char kStunnelBinary[] = "/usr/bin/stunnel4";

// Whether kOpensslBinary and kStunnelBinary can be run.
bool HaveTlsTools();

#define KVSTASH_REQUIRE_TLS_TOOLS()                                  \
  do {                                                               \
    if (!::kvstash::testing::HaveTlsTools()) {                       \
      GTEST_SKIP() << "needs " << ::kvstash::testing::kOpensslBinary \
                   << " and " << ::kvstash::testing::kStunnelBinary  \
                   << " (apt-get install openssl stunnel4)";         \
    }                                                                \
  } while (0)

// Makes a self-signed certificate for 127.0.0.1 (cert.pem, key.pem) in
// `dir`. Unavailable with openssl's output when it fails.
Status MakeSelfSignedCertificate(const std::string& dir);

struct RedisServerOptions {
  // 0: a free port; otherwise this one (to restart a killed server in place).
  int port = 0;
  // > 0: maxmemory in bytes, with maxmemory-policy noeviction (writes beyond
  // it get OOM errors).
  uint64_t maxmemory_bytes = 0;
  // Run as a cluster node (cluster-enabled, node timeout 2 s, slots of a dead
  // master fail alone: cluster-require-full-coverage no).
  bool cluster = false;
  // Non-empty: clients must AUTH with it (requirepass; masterauth too).
  std::string password{};
  // TLS only: port() is the TLS port (no plain one); the certificate is
  // cert_path(). Not with `cluster`.
  bool tls = false;
};

class RedisServer {
 public:
  // Starts the server and returns once it answers PING (within 10 s).
  // Unavailable with the server's log when it does not come up.
  static Result<std::unique_ptr<RedisServer>> Start(
      const RedisServerOptions& options = {});

  // Kills the server and removes its directory.
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string endpoint() const;  // "127.0.0.1:PORT"
  std::string url() const;       // "redis://127.0.0.1:PORT"
  const std::string& dir() const { return dir_; }
  // The server's certificate (self-signed: also the CA to verify it with),
  // for a `tls` server.
  std::string cert_path() const { return dir_ + "/cert.pem"; }

  // SIGKILLs the server and reaps it; a no-op once done.
  void Kill();
  // SIGSTOP / SIGCONT: a paused server accepts connections (the kernel
  // does) but answers nothing, like a hung one.
  void Pause();
  void Resume();
  bool alive() const { return pid_ > 0; }

 private:
  RedisServer(int port, std::string dir, pid_t pid)
      : port_(port), dir_(std::move(dir)), pid_(pid) {}

  int port_;
  std::string dir_;
  pid_t pid_;
};

class RedisCluster {
 public:
  // Starts `masters` (>= 3) nodes, each requiring `password` when not
  // empty, creates the cluster (slots spread evenly) and waits until every
  // node reports cluster_state:ok (within 30 s).
  static Result<std::unique_ptr<RedisCluster>> Start(
      int masters, const std::string& password = "");

  int size() const { return int(nodes_.size()); }
  RedisServer& node(int i) { return *nodes_[size_t(i)]; }
  // "redis://127.0.0.1:P1,127.0.0.1:P2,..." (every node is a seed).
  std::string url() const;
  // Kills node i (its slots then fail; the others keep serving theirs).
  void Kill(int i) { nodes_[size_t(i)]->Kill(); }

 private:
  std::vector<std::unique_ptr<RedisServer>> nodes_;
};

// stunnel in client mode: accepts plain TCP on a loopback port and forwards
// it over TLS to 127.0.0.1:`tls_port`, verifying the server's certificate
// against `ca_file` (and that it names 127.0.0.1). Killed on destruction.
class TlsTunnel {
 public:
  // Returns once the tunnel accepts connections (within 10 s); Unavailable
  // with stunnel's log otherwise.
  static Result<std::unique_ptr<TlsTunnel>> Start(int tls_port,
                                                  const std::string& ca_file);
  ~TlsTunnel();
  TlsTunnel(const TlsTunnel&) = delete;
  TlsTunnel& operator=(const TlsTunnel&) = delete;

  int port() const { return port_; }
  // "redis://[:PASSWORD@]127.0.0.1:PORT".
  std::string url(const std::string& password = "") const;
  // stunnel's log so far.
  std::string log() const;

 private:
  TlsTunnel(int port, std::string dir, pid_t pid)
      : port_(port), dir_(std::move(dir)), pid_(pid) {}
  int port_;
  std::string dir_;
  pid_t pid_;
};

struct RedisReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;

// A blocking hiredis connection to one server on 127.0.0.1.
class RedisClient {
 public:
  // Unavailable when the server does not accept the connection within 1 s,
  // or (with a `password`: AUTH password) refuses the password.
  static Result<std::unique_ptr<RedisClient>> Connect(
      int port, std::string_view password = "");
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // The reply to the command `args` (binary-safe), or null when the
  // connection failed.
  RedisReply Run(std::initializer_list<std::string_view> args);
  // The reply's text (string, status or error reply), or "" for other
  // replies and failures.
  std::string Text(std::initializer_list<std::string_view> args);
  // The reply's integer, or -1 for other replies and failures.
  long long Integer(std::initializer_list<std::string_view> args);

 private:
  explicit RedisClient(redisContext* c) : c_(c) {}
  redisContext* c_;
};

}  // namespace kvstash::testing
