// RedisCluster: which Redis server each key goes to, for one standalone
// server or a Redis Cluster, and sending key commands there.
//
// The first seed that answers decides the topology. When it answers CLUSTER
// SLOTS, the cluster mode holds: each key goes to the master of its slot
// (store/crc16.h; keys sharing a {hash tag} share a slot), -MOVED updates the
// slot map, retries at the named node and schedules a refresh of the whole
// map (CLUSTER SLOTS, asked of the known masters and then the seeds in turn,
// at most once per min_backoff); -ASK sends ASKING and the command to the
// named node, once; a broken or refused node also schedules a refresh. A
// seed that answers "cluster support disabled" is used as one standalone
// server. Until some seed answers, the topology is unknown and every Dispatch
// tries to learn it first. Redirections are followed only to known nodes:
// the seeds and the nodes named by CLUSTER SLOTS of a known node. One to
// another endpoint is not followed (whoever can answer for a node must not
// get the credentials and values sent to another): the command fails and a
// refresh is scheduled, after which a node that CLUSTER SLOTS names is
// followed. A command is redirected at most 4 times. Nodes are never
// forgotten (a cluster has few); each is a RedisNode (store/redis_connection.h,
// with its pool and backoff), and one round of commands runs on all of its
// nodes at once. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "store/redis_connection.h"
#include "store/redis_reply.h"
#include "store/redis_url.h"

namespace kvstash::store {

// The command `verb key extra...`, and what became of it: a reply that is
// not an error reply, or the error.
struct RedisKeyCommand {
  RedisKeyCommand(std::string_view verb, std::string redis_key,
                  std::initializer_list<std::string_view> extra = {})
      : key(std::move(redis_key)), command(verb, key, extra) {}

  std::string key;
  RedisCommand command;
  RedisReply reply;
  Status error;
};

class RedisCluster {
 public:
  // `auth`: the AUTH command for every new connection, or nullopt. Learns
  // nothing yet (see Discover).
  RedisCluster(std::vector<RedisEndpoint> seeds,
               const RedisNodeOptions& options,
               std::optional<RedisCommand> auth);
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // Asks the known masters, then the seeds, for the topology until one
  // answers, and publishes the answer. Leaves the topology as it was when
  // none answers, and returns why. While the topology is unknown, a node
  // that refuses access answers too: its PermissionDenied
  // (RedisAccessRefused) is returned at once.
  Status Discover();

  // Runs each command at the node of its key, following redirections; on
  // return each has a reply that is not an error, or an error.
  void Dispatch(std::span<RedisKeyCommand> cmds);

  // "standalone HOST:PORT", "cluster, N masters" or "unknown (<why>)".
  std::string Describe() const;

  // Connections opened or tried so far, to every node.
  uint64_t connect_attempts() const;

 private:
  struct Topology;

  std::shared_ptr<RedisNode> NodeAt(const RedisEndpoint& endpoint);
  // The node at `endpoint` when it is known (see nodes_), else null.
  std::shared_ptr<RedisNode> KnownNode(const RedisEndpoint& endpoint) const;
  void ScheduleRefresh();
  // RunRedisBatches, scheduling a refresh when a node failed.
  void Run(std::span<RedisNodeBatch> batches);
  // Publishes what `reply` (to CLUSTER SLOTS, asked of `asked`) says.
  Status Learn(const RedisValue& reply,
               const std::shared_ptr<RedisNode>& asked);
  // The topology to route by: learned now when unknown; refreshed first
  // when a refresh is due and no other thread is refreshing.
  Result<std::shared_ptr<const Topology>> Routing();
  // After -MOVED: `slot` is served by `node` from now on.
  void Moved(int slot, const std::shared_ptr<RedisNode>& node);

  const std::vector<RedisEndpoint> seeds_;
  const RedisNodeOptions options_;
  // AUTH [user] password; none without a password. Nodes point at it.
  const std::optional<RedisCommand> auth_;

  mutable std::mutex topo_mu_;
  // Guarded by topo_mu_. The seeds and the nodes CLUSTER SLOTS named: the
  // only ones redirections go to.
  std::map<std::string, std::shared_ptr<RedisNode>> nodes_;
  std::shared_ptr<const Topology> topology_;  // null until learned
  Status topology_error_ = Status::Unavailable("no seed tried yet");
  bool refresh_wanted_ = false;
  std::chrono::steady_clock::time_point next_refresh_;
  std::mutex discover_mu_;  // one discovery at a time
};

}  // namespace kvstash::store
