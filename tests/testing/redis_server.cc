#include "tests/testing/redis_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace kvstash::testing {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kFirstPort = 15000;
constexpr int kPortCount = 7000;
constexpr int kBusPortOffset = 10000;
constexpr int kStartTries = 5;

bool PortFree(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// A random port whose cluster bus port is free too.
int PickPort() {
  static std::mt19937 rng(std::random_device{}());
  for (;;) {
    const int port = kFirstPort + int(rng() % kPortCount);
    if (PortFree(port) && PortFree(port + kBusPortOffset)) return port;
  }
}

// Runs `argv` with stdout and stderr appended to `log`; the child dies with
// the calling thread. Returns the child's pid, or -1.
pid_t Spawn(const std::vector<std::string>& argv, const std::string& log) {
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int out =
      ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {  // only async-signal-safe calls until exec
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out);
  return pid;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  const std::string all = s.str();
  return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
}

// Waits up to `timeout` for `pid` to exit; its exit status, or -1 when it
// is still running (then it is killed).
int WaitExit(pid_t pid, milliseconds timeout) {
  const Clock::time_point give_up = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    }
    if (Clock::now() > give_up) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
}

// Polls `done` every 20 ms until it holds or `timeout` passes.
template <typename F>
bool WaitFor(milliseconds timeout, F done) {
  const Clock::time_point give_up = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > give_up) return false;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return true;
}

}  // namespace

bool HaveRedisServer() {
  return ::access(kRedisServerBinary, X_OK) == 0 &&
         ::access(kRedisCliBinary, X_OK) == 0;
}

bool HaveTlsTools() {
  return ::access(kOpensslBinary, X_OK) == 0 &&
         ::access(kStunnelBinary, X_OK) == 0;
}

Status MakeSelfSignedCertificate(const std::string& dir) {
  const std::string log = dir + "/openssl.log";
  const pid_t pid = Spawn(
      {kOpensslBinary, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
       "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem", "-days", "2",
       "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"},
      log);
  if (pid < 0 || WaitExit(pid, milliseconds(30000)) != 0) {
    return Status::Unavailable("openssl could not make a certificate:\n" +
                               Tail(log));
  }
  return Status::OK();
}

namespace {

// Whether a TLS server on `port` answers PING (through redis-cli --tls,
// verifying it with `ca_file`).
bool TlsPing(int port, const std::string& ca_file, const std::string& password,
             const std::string& log) {
  std::vector<std::string> argv = {
      kRedisCliBinary, "--tls", "--cacert",
      ca_file,         "-p",    std::to_string(port)};
  if (!password.empty()) {
    argv.insert(argv.end(), {"-a", password, "--no-auth-warning"});
  }
  argv.push_back("PING");
  const pid_t pid = Spawn(argv, log);
  return pid > 0 && WaitExit(pid, milliseconds(2000)) == 0 &&
         Tail(log).find("PONG") != std::string::npos;
}

}  // namespace

Result<std::unique_ptr<RedisServer>> RedisServer::Start(
    const RedisServerOptions& options) {
  Status why;
  for (int attempt = 0; attempt < kStartTries; ++attempt) {
    std::string dir =
        (std::filesystem::temp_directory_path() / "kvstash_redis_XXXXXX")
            .string();
    if (::mkdtemp(dir.data()) == nullptr) {
      return Status::IOError("cannot create a directory for redis-server");
    }
    const int port = options.port != 0 ? options.port : PickPort();
    const std::string log = dir + "/redis.log";
    if (options.tls) KV_RETURN_IF_ERROR(MakeSelfSignedCertificate(dir));
    std::vector<std::string> argv = {kRedisServerBinary,
                                     "--port",
                                     options.tls ? "0" : std::to_string(port),
                                     "--bind",
                                     "127.0.0.1",
                                     "--save",
                                     "",
                                     "--appendonly",
                                     "no",
                                     "--dir",
                                     dir,
                                     "--logfile",
                                     log,
                                     "--daemonize",
                                     "no"};
    if (options.maxmemory_bytes > 0) {
      argv.insert(argv.end(),
                  {"--maxmemory", std::to_string(options.maxmemory_bytes),
                   "--maxmemory-policy", "noeviction"});
    }
    if (options.cluster) {
      argv.insert(argv.end(),
                  {"--cluster-enabled", "yes", "--cluster-config-file",
                   dir + "/nodes.conf", "--cluster-node-timeout", "2000",
                   "--cluster-require-full-coverage", "no"});
    }
    if (!options.password.empty()) {
      argv.insert(argv.end(), {"--requirepass", options.password,
                               "--masterauth", options.password});
    }
    if (options.tls) {
      argv.insert(argv.end(),
                  {"--tls-port", std::to_string(port), "--tls-cert-file",
                   dir + "/cert.pem", "--tls-key-file", dir + "/key.pem",
                   "--tls-ca-cert-file", dir + "/cert.pem",
                   "--tls-auth-clients", "no"});
    }
    const pid_t pid = Spawn(argv, log);
    if (pid < 0) return Status::IOError("cannot start redis-server");
    std::unique_ptr<RedisServer> server(new RedisServer(port, dir, pid));
    const bool up = WaitFor(milliseconds(10000), [&] {
      int status;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        server->pid_ = -1;
        return true;
      }
      if (options.tls) {
        return TlsPing(port, dir + "/cert.pem", options.password,
                       dir + "/ping.log");
      }
      Result<std::unique_ptr<RedisClient>> c =
          RedisClient::Connect(port, options.password);
      return c.ok() && (*c)->Text({"PING"}) == "PONG";
    });
    if (up && server->alive()) return server;
    why = Status::Unavailable("redis-server on port " + std::to_string(port) +
                              " did not come up; its log:\n" + Tail(log));
    if (options.port != 0) break;  // a fixed port: trying again won't help
  }
  return why;
}

RedisServer::~RedisServer() {
  Kill();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string RedisServer::endpoint() const {
  return "127.0.0.1:" + std::to_string(port_);
}

std::string RedisServer::url() const { return "redis://" + endpoint(); }

void RedisServer::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

void RedisServer::Pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void RedisServer::Resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

Result<std::unique_ptr<TlsTunnel>> TlsTunnel::Start(
    int tls_port, const std::string& ca_file) {
  std::string dir =
      (std::filesystem::temp_directory_path() / "kvstash_stunnel_XXXXXX")
          .string();
  if (::mkdtemp(dir.data()) == nullptr) {
    return Status::IOError("cannot create a directory for stunnel");
  }
  const int port = PickPort();
  {
    std::ofstream conf(dir + "/stunnel.conf");
    conf << "foreground = yes\npid =\n[redis]\nclient = yes\n"
         << "accept = 127.0.0.1:" << port << "\n"
         << "connect = 127.0.0.1:" << tls_port << "\n"
         << "verifyChain = yes\nCAfile = " << ca_file << "\n"
         << "checkIP = 127.0.0.1\n";
  }
  const std::string log = dir + "/stunnel.log";
  const pid_t pid = Spawn({kStunnelBinary, dir + "/stunnel.conf"}, log);
  if (pid < 0) return Status::IOError("cannot start stunnel");
  std::unique_ptr<TlsTunnel> tunnel(new TlsTunnel(port, dir, pid));
  const bool up = WaitFor(milliseconds(10000), [&] {
    int status;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      tunnel->pid_ = -1;
      return true;
    }
    return !PortFree(port);  // stunnel listens
  });
  if (up && tunnel->pid_ > 0) return tunnel;
  return Status::Unavailable("stunnel did not come up; its log:\n" + Tail(log));
}

TlsTunnel::~TlsTunnel() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string TlsTunnel::url(const std::string& password) const {
  return "redis://" + (password.empty() ? "" : ":" + password + "@") +
         "127.0.0.1:" + std::to_string(port_);
}

std::string TlsTunnel::log() const { return Tail(dir_ + "/stunnel.log"); }

Result<std::unique_ptr<RedisCluster>> RedisCluster::Start(
    int masters, const std::string& password) {
  if (masters < 3) {
    return Status::InvalidArgument("a Redis Cluster needs >= 3 masters");
  }
  std::unique_ptr<RedisCluster> cluster(new RedisCluster);
  std::vector<std::string> argv = {kRedisCliBinary, "--cluster", "create"};
  for (int i = 0; i < masters; ++i) {
    KV_ASSIGN_OR_RETURN(
        std::unique_ptr<RedisServer> node,
        RedisServer::Start({.cluster = true, .password = password}));
    argv.push_back(node->endpoint());
    cluster->nodes_.push_back(std::move(node));
  }
  argv.insert(argv.end(), {"--cluster-replicas", "0", "--cluster-yes"});
  if (!password.empty()) argv.insert(argv.end(), {"-a", password});
  const std::string log = cluster->nodes_[0]->dir() + "/cluster-create.log";
  const pid_t pid = Spawn(argv, log);
  if (pid < 0) return Status::IOError("cannot start redis-cli");
  if (WaitExit(pid, milliseconds(30000)) != 0) {
    return Status::Unavailable("redis-cli --cluster create failed:\n" +
                               Tail(log));
  }
  for (const auto& node : cluster->nodes_) {
    Result<std::unique_ptr<RedisClient>> c =
        RedisClient::Connect(node->port(), password);
    if (!c.ok()) return c.status();
    if (!WaitFor(milliseconds(30000), [&] {
          return (*c)->Text({"CLUSTER", "INFO"}).find("cluster_state:ok") !=
                 std::string::npos;
        })) {
      return Status::Unavailable("cluster node " + node->endpoint() +
                                 " never reported cluster_state:ok");
    }
  }
  return cluster;
}

std::string RedisCluster::url() const {
  std::string url = "redis://";
  for (size_t i = 0; i < nodes_.size(); ++i) {
    url.append(i > 0 ? "," : "").append(nodes_[i]->endpoint());
  }
  return url;
}

Result<std::unique_ptr<RedisClient>> RedisClient::Connect(
    int port, std::string_view password) {
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, {1, 0});
  if (c == nullptr || c->err != 0) {
    const std::string why = c != nullptr ? c->errstr : "out of memory";
    redisFree(c);
    return Status::Unavailable(
        "cannot connect to 127.0.0.1:" + std::to_string(port) + ": " + why);
  }
  redisSetTimeout(c, {5, 0});
  std::unique_ptr<RedisClient> client(new RedisClient(c));
  if (!password.empty() && client->Text({"AUTH", password}) != "OK") {
    return Status::Unavailable("127.0.0.1:" + std::to_string(port) +
                               " refused the password");
  }
  return client;
}

RedisClient::~RedisClient() { redisFree(c_); }

RedisReply RedisClient::Run(std::initializer_list<std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  return RedisReply(static_cast<redisReply*>(
      redisCommandArgv(c_, int(argv.size()), argv.data(), lengths.data())));
}

std::string RedisClient::Text(std::initializer_list<std::string_view> args) {
  const RedisReply r = Run(args);
  if (r == nullptr ||
      (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS &&
       r->type != REDIS_REPLY_ERROR)) {
    return "";
  }
  return std::string(r->str, r->len);
}

long long RedisClient::Integer(std::initializer_list<std::string_view> args) {
  const RedisReply r = Run(args);
  return r != nullptr && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
}

}  // namespace kvstash::testing
