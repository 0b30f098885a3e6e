#include "store/redis_cluster.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "store/crc16.h"

namespace kvstash::store {
namespace {

using Clock = std::chrono::steady_clock;

// Redirections followed per command before it fails.
constexpr int kMaxHops = 4;
constexpr uint16_t kNoMaster = UINT16_MAX;

const RedisCommand& AskingCommand() {
  static const RedisCommand* const kAsking = new RedisCommand("ASKING", "");
  return *kAsking;
}

const RedisCommand& ClusterSlotsCommand() {
  static const RedisCommand* const kSlots =
      new RedisCommand("CLUSTER", "", {"SLOTS"});
  return *kSlots;
}

}  // namespace

// Where keys go: one standalone server, or a cluster's slot map. Immutable
// once published.
struct RedisCluster::Topology {
  bool cluster = false;
  // Standalone: the server. Cluster: the masters named by slot_master.
  std::vector<std::shared_ptr<RedisNode>> masters;
  // Cluster: [kRedisClusterSlots] index into masters, or kNoMaster.
  std::vector<uint16_t> slot_master;

  // The node serving `redis_key`, or null when its slot has no master.
  const std::shared_ptr<RedisNode>* NodeFor(std::string_view redis_key) const {
    if (!cluster) return &masters.front();
    const uint16_t m = slot_master[size_t(RedisClusterSlot(redis_key))];
    return m == kNoMaster ? nullptr : &masters[m];
  }

  // Makes `node` the master of `slot`.
  void Assign(int slot, const std::shared_ptr<RedisNode>& node) {
    auto it = std::find(masters.begin(), masters.end(), node);
    if (it == masters.end()) it = masters.insert(masters.end(), node);
    slot_master[size_t(slot)] = uint16_t(it - masters.begin());
  }
};

RedisCluster::RedisCluster(std::vector<RedisEndpoint> seeds,
                           const RedisNodeOptions& options,
                           std::optional<RedisCommand> auth)
    : seeds_(std::move(seeds)), options_(options), auth_(std::move(auth)) {}

RedisCluster::~RedisCluster() = default;

std::shared_ptr<RedisNode> RedisCluster::NodeAt(const RedisEndpoint& endpoint) {
  const std::lock_guard<std::mutex> lock(topo_mu_);
  std::shared_ptr<RedisNode>& node = nodes_[endpoint.ToString()];
  if (node == nullptr) {
    node = std::make_shared<RedisNode>(endpoint, options_,
                                       auth_.has_value() ? &*auth_ : nullptr);
  }
  return node;
}

std::shared_ptr<RedisNode> RedisCluster::KnownNode(
    const RedisEndpoint& endpoint) const {
  const std::lock_guard<std::mutex> lock(topo_mu_);
  const auto it = nodes_.find(endpoint.ToString());
  return it == nodes_.end() ? nullptr : it->second;
}

void RedisCluster::ScheduleRefresh() {
  const std::lock_guard<std::mutex> lock(topo_mu_);
  refresh_wanted_ = true;
}

void RedisCluster::Run(std::span<RedisNodeBatch> batches) {
  if (RunRedisBatches(batches, options_.command_timeout)) ScheduleRefresh();
}

Status RedisCluster::Learn(const RedisValue& reply,
                           const std::shared_ptr<RedisNode>& asked) {
  auto t = std::make_shared<Topology>();
  if (reply.is_error()) {
    if (RedisRefusesAccess(reply.text())) {
      return RedisAccessRefused(asked->name(), reply.text());
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
      const std::shared_ptr<RedisNode> node = NodeAt(endpoint);
      for (int s = range.first; s <= range.last; ++s) t->Assign(s, node);
    }
  }
  const std::lock_guard<std::mutex> lock(topo_mu_);
  topology_ = std::move(t);
  return Status::OK();
}

Status RedisCluster::Discover() {
  std::vector<std::shared_ptr<RedisNode>> candidates;
  bool learning;
  {
    const std::lock_guard<std::mutex> lock(topo_mu_);
    learning = topology_ == nullptr;
    if (!learning) candidates = topology_->masters;
  }
  for (const RedisEndpoint& seed : seeds_) {
    std::shared_ptr<RedisNode> node = NodeAt(seed);
    if (std::find(candidates.begin(), candidates.end(), node) ==
        candidates.end()) {
      candidates.push_back(std::move(node));
    }
  }
  Status why;
  for (const std::shared_ptr<RedisNode>& node : candidates) {
    RedisNodeBatch b{node, {ClusterSlotsCommand().bytes()}, {}, Status::OK()};
    Run({&b, 1});
    why = b.status.ok() ? Learn(*b.replies.front(), node) : b.status;
    if (why.ok()) return why;
    if (learning && why.code() == StatusCode::kPermissionDenied) break;
  }
  const std::lock_guard<std::mutex> lock(topo_mu_);
  if (topology_ == nullptr) topology_error_ = why;
  return why;
}

Result<std::shared_ptr<const RedisCluster::Topology>> RedisCluster::Routing() {
  bool refresh = false;
  {
    const std::lock_guard<std::mutex> lock(topo_mu_);
    if (topology_ != nullptr) {
      refresh = refresh_wanted_ && Clock::now() >= next_refresh_;
      if (!refresh) return topology_;
    }
  }
  if (refresh) {
    const std::unique_lock<std::mutex> one(discover_mu_, std::try_to_lock);
    if (one.owns_lock()) {
      {
        const std::lock_guard<std::mutex> lock(topo_mu_);
        refresh_wanted_ = false;
        next_refresh_ = Clock::now() + options_.min_backoff;
      }
      (void)Discover();  // on failure the old map stays in use
    }
  } else {
    const std::lock_guard<std::mutex> one(discover_mu_);
    bool known;
    {
      const std::lock_guard<std::mutex> lock(topo_mu_);
      known = topology_ != nullptr;
    }
    if (!known) {
      const Status s = Discover();
      if (!s.ok()) return s.WithPrefix("redis topology unknown");
    }
  }
  const std::lock_guard<std::mutex> lock(topo_mu_);
  return topology_;
}

void RedisCluster::Moved(int slot, const std::shared_ptr<RedisNode>& node) {
  const std::lock_guard<std::mutex> lock(topo_mu_);
  refresh_wanted_ = true;
  if (topology_ == nullptr || !topology_->cluster) return;
  auto t = std::make_shared<Topology>(*topology_);
  t->Assign(slot, node);
  topology_ = std::move(t);
}

void RedisCluster::Dispatch(std::span<RedisKeyCommand> cmds) {
  struct Hop {
    size_t i;
    std::shared_ptr<RedisNode> node;
    bool asking;
  };
  std::vector<Hop> hops;
  Result<std::shared_ptr<const Topology>> topo = Routing();
  for (size_t i = 0; i < cmds.size(); ++i) {
    if (!topo.ok()) {
      cmds[i].error = topo.status();
    } else if (const std::shared_ptr<RedisNode>* node =
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
        cmds[h.i].error = Status::IOError("redis: " + cmds[h.i].key +
                                          " still redirected after " +
                                          std::to_string(kMaxHops) + " tries");
      }
      break;
    }
    std::vector<RedisNodeBatch> batches;
    std::vector<std::vector<const Hop*>> owners;  // null: an ASKING
    std::map<const RedisNode*, size_t> batch_of;
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
      RedisNodeBatch& batch = batches[b];
      for (size_t k = 0; k < owners[b].size(); ++k) {
        const Hop* h = owners[b][k];
        if (h == nullptr) continue;
        RedisKeyCommand& cmd = cmds[h->i];
        if (k >= batch.replies.size()) {
          cmd.error = batch.status;
          continue;
        }
        RedisReply& reply = batch.replies[k];
        if (std::optional<RedisRedirect> r =
                ParseRedirect(*reply, batch.node->endpoint().host)) {
          std::shared_ptr<RedisNode> to = KnownNode(r->to);
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

uint64_t RedisCluster::connect_attempts() const {
  const std::lock_guard<std::mutex> lock(topo_mu_);
  uint64_t n = 0;
  for (const auto& [name, node] : nodes_) n += node->connect_attempts();
  return n;
}

std::string RedisCluster::Describe() const {
  const std::lock_guard<std::mutex> lock(topo_mu_);
  if (topology_ == nullptr) {
    return "unknown (" + topology_error_.message() + ")";
  }
  if (!topology_->cluster) {
    return "standalone " + topology_->masters.front()->name();
  }
  std::vector<bool> serving(topology_->masters.size());
  for (const uint16_t m : topology_->slot_master) {
    if (m != kNoMaster) serving[m] = true;
  }
  return "cluster, " +
         std::to_string(std::count(serving.begin(), serving.end(), true)) +
         " masters";
}

}  // namespace kvstash::store
