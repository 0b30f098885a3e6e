#include "store/redis_tier.h"

#include <hiredis/read.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "base/check.h"
#include "store/object_format.h"
#include "store/redis_cluster.h"
#include "store/redis_connection.h"
#include "store/redis_reply.h"
#include "store/redis_url.h"
#include "store/write_behind.h"

namespace kvstash::store {
namespace {

// Redis refuses bulk strings above proto-max-bulk-len (512 MiB by default).
constexpr uint64_t kMaxValueBytes = uint64_t{512} << 20;
// One batch of the writer: at most this many objects, or bytes (but at
// least one object).
constexpr size_t kWriteBatchObjects = 4 * kRedisPipelineDepth;
constexpr uint64_t kWriteBatchBytes = uint64_t{64} << 20;
constexpr char kHowToLogIn[] =
    "give credentials as redis://user:password@host:port, "
    "redis://:password@host:port or --redis-password-file PATH";

// OK when `header`, of an object that verified, is keyed `key`.
Status CheckKey(const ObjectHeader& header, const BlockKey& key) {
  if (header.key == key) return Status::OK();
  return Status::Corruption("holds the object of key " + header.key.Hex());
}

// OK when `reply` holds an object of `key` that `authenticator` verifies;
// Corruption or PermissionDenied (forged) otherwise.
Status Verify(const RedisValue& reply, const BlockKey& key,
              const ObjectAuthenticator& authenticator) {
  if (!reply.is_string()) {
    return Status::Corruption("not a string");
  }
  Result<ObjectView> view = authenticator.Verify(reply.bytes);
  if (!view.ok()) return view.status();
  return CheckKey(view->header, key);
}

}  // namespace

struct RedisTier::State {
  State(const RedisTierOptions& o, std::vector<RedisEndpoint> seeds,
        std::optional<RedisCommand> auth)
      : options(o),
        cluster(std::move(seeds),
                {.pool_size = o.pool_size,
                 .connect_timeout = o.connect_timeout,
                 .command_timeout = o.command_timeout,
                 .min_backoff = o.min_backoff,
                 .max_backoff = o.max_backoff},
                std::move(auth)),
        ttl_text(o.ttl_seconds > 0 ? std::to_string(o.ttl_seconds) : ""),
        writes(mu,
               {.max_bytes = o.max_queue_bytes,
                .batch_objects = kWriteBatchObjects,
                .batch_bytes = kWriteBatchBytes},
               [this](std::unique_lock<std::mutex>& lock,
                      std::span<const WriteBehindQueue::Write> batch) {
                 Store(lock, batch);
               }) {}

  const RedisTierOptions options;
  RedisCluster cluster;
  const std::string ttl_text;  // "" when no TTL

  mutable std::mutex mu;
  TierStats stats;  // guarded by mu
  // Last, so that it stops before the state it stores into goes.
  WriteBehindQueue writes;

  std::string Key(const BlockKey& key) const {
    return options.key_prefix + key.Hex();
  }

  // REQUIRES: mu held.
  void Fail(const Status& s) {
    ++stats.errors;
    stats.last_error = s.ToString();
  }

  // A value that did not verify: its Redis key, and why (Corruption, or
  // PermissionDenied when it is intact but forged).
  struct Refusal {
    std::string redis_key;
    Status why;
  };
  // DELetes the values of `refused` and counts each in corrupt_dropped or
  // forged_dropped (a failed DEL in errors). REQUIRES: mu not held.
  void Drop(std::span<const Refusal> refused) {
    if (refused.empty()) return;
    std::vector<RedisKeyCommand> dels;
    for (const Refusal& r : refused) {
      dels.push_back(RedisKeyCommand("DEL", r.redis_key));
    }
    cluster.Dispatch(dels);
    const std::lock_guard<std::mutex> lock(mu);
    for (const Refusal& r : refused) {
      ++(r.why.code() == StatusCode::kPermissionDenied ? stats.forged_dropped
                                                       : stats.corrupt_dropped);
      stats.last_error = r.why.ToString();
    }
    for (const RedisKeyCommand& d : dels) {
      if (!d.error.ok()) Fail(d.error);
    }
  }

  // Stores `batch` (the writer thread's StoreFn, store/write_behind.h): the
  // SETs of all its nodes pipelined at once, outside mu.
  void Store(std::unique_lock<std::mutex>& lock,
             std::span<const WriteBehindQueue::Write> batch) {
    lock.unlock();
    std::vector<RedisKeyCommand> sets;
    for (const WriteBehindQueue::Write& w : batch) {
      const std::string_view value(
          reinterpret_cast<const char*>(w.bytes->data()), w.bytes->size());
      if (ttl_text.empty()) {
        sets.push_back(RedisKeyCommand("SET", Key(w.key), {value}));
      } else {
        sets.push_back(
            RedisKeyCommand("SET", Key(w.key), {value, "EX", ttl_text}));
      }
    }
    cluster.Dispatch(sets);
    lock.lock();

    // Erase marked the writes it cancelled before they were stored; its own
    // DEL may have run first, so they are deleted again below.
    std::vector<RedisKeyCommand> dels;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (sets[i].error.ok()) {
        ++stats.writes;
        stats.bytes_written += batch[i].bytes->size();
        if (batch[i].cancelled) {
          dels.push_back(RedisKeyCommand("DEL", sets[i].key));
        }
      } else {
        Fail(sets[i].error);
      }
    }
    if (dels.empty()) return;
    lock.unlock();
    cluster.Dispatch(dels);
    lock.lock();
    for (const RedisKeyCommand& d : dels) {
      if (!d.error.ok()) Fail(d.error);
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
  std::optional<RedisCommand> auth;
  if (!password.empty()) {
    // AUTH password, or AUTH user password (the user in the key's place).
    auth.emplace("AUTH", user,
                 std::initializer_list<std::string_view>{password});
  }
  auto state = std::make_unique<State>(options, std::move(url->endpoints),
                                       std::move(auth));
  // Other failures are kept for Describe.
  const Status learned = state->cluster.Discover();
  if (learned.code() == StatusCode::kPermissionDenied) {
    return Status::PermissionDenied(learned.message() + "; " + kHowToLogIn);
  }
  state->writes.Start();
  return std::unique_ptr<RedisTier>(new RedisTier(std::move(state)));
}

RedisTier::RedisTier(std::unique_ptr<State> state) : state_(std::move(state)) {}

RedisTier::~RedisTier() { state_->writes.Stop(); }

std::string RedisTier::RedisKey(const BlockKey& key) const {
  return state_->Key(key);
}

uint64_t RedisTier::connect_attempts() const {
  return state_->cluster.connect_attempts();
}

std::string RedisTier::Describe() const { return state_->cluster.Describe(); }

Status RedisTier::Put(const BlockKey& key, std::vector<uint8_t> object) {
  State& s = *state_;
  KV_ASSIGN_OR_RETURN(const ObjectHeader header,
                      ParseObjectForPut("redis cache", key, object));
  s.options.authenticator.Seal(object);
  const uint64_t size = object.size();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (s.writes.Find(key) != nullptr) return Status::OK();
  const bool too_large = size > kMaxValueBytes;
  if (too_large) ++s.stats.dropped_writes;
  if (too_large || !s.writes.Push(key, header.parent, std::move(object))) {
    return Status::ResourceExhausted(
        "redis cache: object of " + std::to_string(size) + " bytes refused (" +
        std::to_string(s.writes.bytes()) +
        " bytes queued; limits: " + std::to_string(s.options.max_queue_bytes) +
        " queued, " + std::to_string(kMaxValueBytes) + " per object)");
  }
  return Status::OK();
}

std::vector<bool> RedisTier::Visit(std::span<const BlockKey> keys,
                                   const ObjectVisitor& visit) {
  State& s = *state_;
  std::vector<bool> out(keys.size(), false);
  std::vector<size_t> remote;  // last key first: see Tier::Visit
  std::vector<std::pair<size_t, std::shared_ptr<const std::vector<uint8_t>>>>
      pending;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = keys.size(); i-- > 0;) {
      if (auto bytes = s.writes.Find(keys[i])) {
        pending.emplace_back(i, std::move(bytes));
      } else {
        remote.push_back(i);
      }
    }
    s.stats.hits += pending.size();
  }
  for (auto& [i, bytes] : pending) {
    visit(i, *bytes);
    out[i] = true;
  }

  std::vector<RedisKeyCommand> gets;
  for (const size_t i : remote) {
    if (s.ttl_text.empty()) {
      gets.push_back(RedisKeyCommand("GET", s.Key(keys[i])));
    } else {
      gets.push_back(
          RedisKeyCommand("GETEX", s.Key(keys[i]), {"EX", s.ttl_text}));
    }
  }
  s.cluster.Dispatch(gets);

  std::vector<State::Refusal> refused;
  uint64_t hits = 0, bytes_read = 0;
  std::vector<Status> errors;
  for (size_t j = 0; j < remote.size(); ++j) {
    RedisKeyCommand& g = gets[j];
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
      visit(remote[j], g.reply->bytes);
      out[remote[j]] = true;
    } else {
      refused.push_back(
          {g.key, verified.WithPrefix("redis value '" + g.key + "'")});
    }
  }
  s.Drop(refused);

  const std::lock_guard<std::mutex> lock(s.mu);
  s.stats.hits += hits;
  s.stats.misses += remote.size() - hits;
  s.stats.bytes_read += bytes_read;
  for (const Status& e : errors) s.Fail(e);
  return out;
}

std::vector<bool> RedisTier::ReadRanges(std::span<const BlockKey> keys,
                                        std::span<const RangeRead> ranges) {
  State& s = *state_;
  std::vector<bool> out(keys.size(), true);
  std::vector<std::shared_ptr<const std::vector<uint8_t>>> queued(keys.size());
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = 0; i < keys.size(); ++i) queued[i] = s.writes.Find(keys[i]);
  }
  std::vector<RedisKeyCommand> gets;
  std::vector<const RangeRead*> asked;  // the range of each of gets
  for (const RangeRead& r : ranges) {
    KV_CHECK(r.key < keys.size());
    if (const auto& object = queued[r.key]) {
      if (r.offset > object->size() ||
          r.into.size() > object->size() - r.offset) {
        out[r.key] = false;  // past the object's end
      } else {
        const uint8_t* from = object->data() + r.offset;
        std::copy(from, from + r.into.size(), r.into.begin());
      }
    } else if (!r.into.empty()) {
      // GETRANGE's end is inclusive.
      gets.push_back(
          RedisKeyCommand("GETRANGE", s.Key(keys[r.key]),
                          {std::to_string(r.offset),
                           std::to_string(r.offset + r.into.size() - 1)}));
      asked.push_back(&r);
    }
  }
  s.cluster.Dispatch(gets);

  uint64_t bytes_read = 0;
  std::vector<Status> errors;
  for (size_t j = 0; j < gets.size(); ++j) {
    const RangeRead& r = *asked[j];
    const RedisKeyCommand& g = gets[j];
    if (!g.error.ok()) errors.push_back(g.error);
    // Absent, or shorter than the range: Redis answers what it has.
    if (!g.error.ok() || !g.reply->is_string() ||
        g.reply->bytes.size() != r.into.size()) {
      out[r.key] = false;
      continue;
    }
    std::copy(g.reply->bytes.begin(), g.reply->bytes.end(), r.into.begin());
    bytes_read += r.into.size();
  }
  const std::lock_guard<std::mutex> lock(s.mu);
  s.stats.bytes_read += bytes_read;
  for (const Status& e : errors) s.Fail(e);
  return out;
}

Status RedisTier::VerifyGathered(
    const BlockKey& key, std::span<const uint8_t> header,
    std::span<const std::span<const uint8_t>> payload) {
  State& s = *state_;
  const Result<ObjectHeader> verified =
      s.options.authenticator.VerifyGathered(header, payload);
  Status verdict = verified.ok() ? CheckKey(*verified, key) : verified.status();
  const std::string redis_key = s.Key(key);
  if (!verdict.ok()) {
    verdict = verdict.WithPrefix("redis value '" + redis_key + "'");
    {
      const std::lock_guard<std::mutex> lock(s.mu);
      ++s.stats.misses;
    }
    const State::Refusal refusal{redis_key, verdict};
    s.Drop({&refusal, 1});
    return verdict;
  }
  bool stored;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    ++s.stats.hits;
    stored = s.writes.Find(key) == nullptr;
  }
  // GETRANGE refreshed the key in Redis's LRU clock; a TTL restarts here,
  // as GETEX restarts it for Visit.
  if (stored && !s.ttl_text.empty()) {
    RedisKeyCommand expire("EXPIRE", redis_key, {s.ttl_text});
    s.cluster.Dispatch({&expire, 1});
    if (!expire.error.ok()) {
      const std::lock_guard<std::mutex> lock(s.mu);
      s.Fail(expire.error);
    }
  }
  return verdict;
}

std::vector<bool> RedisTier::Exists(std::span<const BlockKey> keys) {
  State& s = *state_;
  std::vector<bool> out(keys.size());
  std::vector<size_t> remote;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = 0; i < keys.size(); ++i) {
      out[i] = s.writes.Find(keys[i]) != nullptr;
      if (!out[i]) remote.push_back(i);
    }
  }
  std::vector<RedisKeyCommand> checks;
  for (const size_t i : remote) {
    checks.push_back(RedisKeyCommand("EXISTS", s.Key(keys[i])));
  }
  s.cluster.Dispatch(checks);
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
    s.writes.Cancel(key);
  }
  RedisKeyCommand del("DEL", s.Key(key));
  s.cluster.Dispatch({&del, 1});
  if (!del.error.ok()) {
    const std::lock_guard<std::mutex> lock(s.mu);
    s.Fail(del.error);
  }
  return del.error;
}

void RedisTier::Flush() { state_->writes.Flush(); }

TierStats RedisTier::Stats() const {
  const State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.mu);
  TierStats out = s.stats;
  s.writes.AddStats(out);
  return out;
}

}  // namespace kvstash::store
