// RedisTier: a Tier shared by many kvstash servers, over one Redis server or
// a Redis Cluster.
//
// Data: one Redis string per object, key = key_prefix + the 32 hex digits of
// the BlockKey (Hash128::Hex), value = the encoded object's bytes, written
// with SET (binary-safe), with EX ttl_seconds when a TTL is set; Put seals
// each object with the fleet's key. Get verifies every value (framing, MAC,
// header key == the key asked for); a bad value is a miss, is DELeted and
// counted in corrupt_dropped (damaged) or forged_dropped (intact, but not
// sealed with this key). A hit refreshes
// the key in Redis's LRU clock and, with a TTL, restarts the TTL (GETEX,
// Redis >= 6.2). What Redis evicts or expires is Redis's business (configure
// maxmemory-policy); a Redis that is full (an OOM reply to SET) costs a
// counted error and the write, never a failure of the caller.
//
// Ranges (Tier::ReadRanges): one GETRANGE per range, pipelined and routed
// like the GETs of a Visit; a reply shorter than its range (an absent key
// answers an empty string) fails its key. GETRANGE refreshes the key in
// Redis's LRU clock before the object is verified; with a TTL,
// VerifyGathered restarts it with an EXPIRE (one round trip per accepted
// object), and DELetes a value that fails, as Visit does.
//
// Topology: store/redis_cluster.h (standalone or Cluster, decided by the
// first seed of the URL that answers; slots, -MOVED/-ASK followed only to
// known nodes of the cluster).
//
// Access control: with credentials (in the URL, or in the options), every
// new connection to every node sends AUTH [user] password before anything
// else, and a connection whose AUTH is refused is a failed connect. The
// password is never logged, nor put in a Status, Describe() or last_error.
//
// Failure: Open succeeds whatever the state of Redis, with one exception: it
// fails (PermissionDenied naming the node, Redis's reply and how to give
// credentials) when the first seed that answers refuses access (a wrong
// password or user: WRONGPASS, ERR invalid password; no password given to a
// Redis that needs one: NOAUTH; a user without the rights: NOPERM). Later
// refusals (a node learned afterwards, a password changed) are node
// failures, as follows. Each node has a state of its own: after a failed
// connect (AUTH refused included) or a broken connection, the node is in
// backoff for min_backoff, doubling with each further failure up to
// max_backoff, and calls that need it fail at once, without touching the
// network: a Get misses, an Exists answers false, a queued write is dropped;
// all are counted in errors (last_error says why). The first call after the
// backoff reconnects. A dead cluster master costs the keys of its slots; the
// others keep working.
// No wait of a call lasts longer than connect_timeout for a connect, or
// command_timeout for a node that sends or accepts nothing (or for a free
// pooled connection); a call waits more than once only to learn or refresh
// the topology (one seed after another) or to follow a redirection.
//
// Wire: store/redis_connection.h (non-blocking sockets driven by poll, a
// pool of pool_size connections and a backoff per node, batches split by node
// and pipelined on all nodes at once, values parsed straight into the buffers
// Get returns).
//
// Threads: see tier.h. One background writer thread drains the write-behind
// queue (store/write_behind.h, bounded by max_queue_bytes) in batches of up to
// 256 objects or 64 MiB, pipelining the SETs of a batch to all its nodes at
// once. Objects larger than 512 MiB (Redis's largest value by default) are
// refused. Get and Exists serve queued and in-flight objects from memory.
//
// Stats: objects and bytes_used stay 0 (Redis is shared by every server; ask
// Redis with INFO / DBSIZE). errors counts failed key commands (one per key
// of a batch whose node is unreachable).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/object_mac.h"
#include "store/tier.h"

namespace kvstash::store {

struct RedisTierOptions {
  // "redis://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]" (store/redis_url.h):
  // a standalone server, or seed nodes of a cluster (any reachable one is
  // enough).
  std::string url;
  // Credentials for every node; each overrides the URL's when non-empty
  // (a password read from a file need not be in the URL). A user needs a
  // password; no password: no AUTH. ({}: designated initializers may leave
  // them out without -Wmissing-field-initializers.)
  std::string user{};
  std::string password{};
  // Prepended to the hex digits of every key; lets servers of different
  // deployments share one Redis.
  std::string key_prefix = "kvstash:";
  // 0 = objects never expire; otherwise their TTL in seconds, restarted on
  // every write and hit. Must be >= 0.
  int ttl_seconds = 0;
  // Most connections per node; must be > 0.
  int pool_size = 4;
  // Limits of one connect, and of one wait for a node to accept or send a
  // byte (or to free a pooled connection); must be > 0.
  std::chrono::milliseconds connect_timeout{200};
  std::chrono::milliseconds command_timeout{500};
  // Most bytes of objects accepted by Put and not yet stored; must be > 0.
  uint64_t max_queue_bytes = uint64_t{256} << 20;
  // Backoff of an unreachable node: 0 < min_backoff <= max_backoff.
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
  // Seals what is stored and verifies what is read (store/object_mac.h);
  // every server of a fleet needs the same key. Unkeyed, a value is trusted
  // on its checksum alone, so anyone who can write to Redis can make every
  // server attend to keys and values of their choosing: Open refuses that
  // unless `insecure`.
  ObjectAuthenticator authenticator{};
  bool insecure = false;
};

class RedisTier final : public Tier {
 public:
  // Validates options, starts the writer thread and tries (once, within the
  // timeouts) to learn the topology. InvalidArgument for a bad URL or bad
  // options; PermissionDenied when the first seed that answers refuses
  // access; never fails because Redis is unreachable.
  static Result<std::unique_ptr<RedisTier>> Open(
      const RedisTierOptions& options);

  // Tries to store everything still queued (dropping what a dead Redis
  // refuses), stops the writer, closes the connections.
  ~RedisTier() override;
  RedisTier(const RedisTier&) = delete;
  RedisTier& operator=(const RedisTier&) = delete;

  std::string_view name() const override { return "redis"; }
  Status Put(const BlockKey& key, std::vector<uint8_t> object) override;
  std::vector<bool> Visit(std::span<const BlockKey> keys,
                          const ObjectVisitor& visit) override;
  bool reads_ranges() const override { return true; }
  std::vector<bool> ReadRanges(std::span<const BlockKey> keys,
                               std::span<const RangeRead> ranges) override;
  Status VerifyGathered(
      const BlockKey& key, std::span<const uint8_t> header,
      std::span<const std::span<const uint8_t>> payload) override;
  std::vector<bool> Exists(std::span<const BlockKey> keys) override;
  // Unavailable when the key's node is in backoff, IOError naming the node
  // when the DEL failed.
  Status Erase(const BlockKey& key) override;
  void Flush() override;
  TierStats Stats() const override;

  // The topology as known now: "standalone HOST:PORT", "cluster, N masters"
  // or "unknown (<why>)".
  std::string Describe() const;

  // Connections opened or tried so far, to every node: a node that fails
  // is not tried again before its backoff ends (min_backoff, doubling up to
  // max_backoff), so a dead Redis costs commands no connect timeouts.
  uint64_t connect_attempts() const;

  // The Redis key of `key`.
  std::string RedisKey(const BlockKey& key) const;

 private:
  struct State;
  explicit RedisTier(std::unique_ptr<State> state);

  std::unique_ptr<State> state_;
};

}  // namespace kvstash::store
