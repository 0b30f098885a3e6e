// WriteBehindQueue: the write-behind half of a Tier (store/tier.h), shared by
// DiskTier and RedisTier: a bounded FIFO of accepted Puts, the batch a writer
// thread is storing now, and that thread.
//
// A write is accepted (Push) when its bytes fit under max_bytes (queued and
// in flight together), and is then pending: Find serves its bytes until it is
// stored, so that Get and Exists see it at once, and a second Push of the same
// key is the caller's to refuse (a key is queued or in flight at most once).
// One writer thread takes the oldest writes, up to batch_objects of them and
// batch_bytes (at least one), and hands them to the tier's StoreFn; when that
// returns they are done: their bytes leave the accounting and Flush wakes.
// Cancel takes a queued write out of the queue, or marks an in-flight one
// cancelled (Find stops serving it; the StoreFn must not keep it). Flush
// waits until every write accepted before it is done. Stop lets the writer
// store everything still queued (even while paused), then joins it.
//
// Locking: the queue is guarded by the tier's mutex `mu`, which it is given
// and which also guards the tier's own state, so that a tier can check its
// index and the queue in one step. Every method below requires `mu` held
// except Start, Stop, Flush and SetPaused, which take it. The StoreFn runs on
// the writer thread with `mu` held through `lock`; it may release it around
// I/O and must return with it held again. While the writer holds a batch, the
// span it was given stays valid (only `cancelled` may change, under `mu`).
// Counters: dropped() counts Pushes refused for lack of room; AddStats fills
// a TierStats' queue_objects, queue_bytes and adds dropped() to its
// dropped_writes.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "store/tier.h"

namespace kvstash::store {

class WriteBehindQueue {
 public:
  struct Write {
    BlockKey key;
    BlockKey parent;  // the object's header's: for tiers that follow chains
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    uint64_t ticket = 0;     // order of acceptance, for Flush
    bool cancelled = false;  // in flight only: erased while being stored
  };

  struct Options {
    // Most bytes queued and in flight; must be > 0.
    uint64_t max_bytes = 0;
    // Most writes, and bytes, of one batch (a batch holds at least one).
    size_t batch_objects = 1;
    uint64_t batch_bytes = UINT64_MAX;
  };

  using StoreFn = std::function<void(std::unique_lock<std::mutex>& lock,
                                     std::span<const Write> batch)>;

  // `mu` and whatever `store` uses must outlive the queue (or its Stop).
  WriteBehindQueue(std::mutex& mu, Options options, StoreFn store);
  // Stop().
  ~WriteBehindQueue();
  WriteBehindQueue(const WriteBehindQueue&) = delete;
  WriteBehindQueue& operator=(const WriteBehindQueue&) = delete;

  // Starts the writer thread. At most once.
  void Start();
  // Stores what is queued, then stops and joins the writer (if started).
  // Idempotent. REQUIRES: `mu` not held.
  void Stop();

  // The bytes of `key` while queued or in flight (not cancelled), else null.
  std::shared_ptr<const std::vector<uint8_t>> Find(const BlockKey& key) const;

  // Queues `object` and returns true when it fits; else counts a drop and
  // returns false. REQUIRES: Find(key) is null.
  bool Push(const BlockKey& key, const BlockKey& parent,
            std::vector<uint8_t> object);

  // Removes `key` from the queue and returns its write, if queued; marks it
  // cancelled if in flight. Either way Find(key) is null afterwards.
  std::optional<Write> Cancel(const BlockKey& key);

  // Whether no write waits behind the batch in flight.
  bool queue_empty() const { return queue_.empty(); }
  uint64_t bytes() const { return bytes_; }
  uint64_t dropped() const { return dropped_; }
  void AddStats(TierStats& stats) const;

  // Returns once every write accepted before the call is done.
  // REQUIRES: `mu` not held.
  void Flush();

  // While paused, the writer takes nothing (unless stopping).
  void SetPaused(bool paused);

 private:
  void Loop();

  std::mutex& mu_;
  const Options options_;
  const StoreFn store_;
  std::thread writer_;
  std::condition_variable work_cv_;  // queue non-empty, or stop, or resumed
  std::condition_variable done_cv_;  // a write finished or went away
  // Guarded by mu_. A key is in at most one of queue_ and in_flight_ (not
  // cancelled).
  std::list<Write> queue_;  // FIFO, tickets ascending
  std::unordered_map<BlockKey, std::list<Write>::iterator, Hash128Hasher>
      queued_;
  std::vector<Write> in_flight_;  // the writer's batch, tickets ascending
  std::unordered_map<BlockKey, size_t, Hash128Hasher> in_flight_at_;
  uint64_t bytes_ = 0;  // queue_ and in_flight_
  uint64_t last_ticket_ = 0;
  uint64_t dropped_ = 0;
  bool stop_ = false;
  bool paused_ = false;
};

}  // namespace kvstash::store
