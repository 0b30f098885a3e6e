// Tier: one storage level of the KV cache below DRAM (local disk, Redis),
// holding objects (store/object_format.h) by BlockKey.
//
// A tier knows nothing about sequences, models or attention: it stores and
// returns encoded objects. What it guarantees is integrity and, with a key,
// authenticity: Put seals each object with the tier's key, and Get returns
// only complete objects that verify (store/object_mac.h: the MAC under the
// tier's key, or the checksum alone for a tier run without a key) and whose
// header key is the key asked for; anything else is a miss (and is dropped
// and counted, as damaged or as forged, where the tier can delete it). Meaning
// is the reader's job: DecodeObject with the expected namespace fingerprint and
// layout refuses objects of another model.
//
// Threading contract: every method is thread-safe and may be called from any
// thread, concurrently. Visit, Get and Exists are synchronous and do their
// I/O on the calling thread (to overlap a load with compute, call them from
// a pool thread). Put is write-behind: it validates, enqueues and returns
// without waiting for I/O or for a lock held across I/O; an accepted object is
// visible to Exists and Get at once (served from the queue) and stored
// later. Put never blocks: when the queue is full the write is dropped and
// counted. Flush waits until every Put accepted before it is stored or has
// failed.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/hash.h"
#include "base/status.h"

namespace kvstash::store {

// h_i of a block: the key of the object that ends with that block.
using BlockKey = Hash128;

// Counters since the tier was opened, and current occupancy.
struct TierStats {
  uint64_t hits = 0;             // Get keys returned
  uint64_t misses = 0;           // Get keys not returned (absent, bad, error)
  uint64_t bytes_read = 0;       // object bytes read from the medium
  uint64_t bytes_written = 0;    // object bytes stored
  uint64_t writes = 0;           // objects stored
  uint64_t dropped_writes = 0;   // Puts refused: queue full or over capacity
  uint64_t errors = 0;           // failed I/O (read, write, sync, rename...)
  uint64_t evictions = 0;        // objects removed to stay within capacity
  uint64_t corrupt_dropped = 0;  // objects found damaged, deleted
  uint64_t forged_dropped = 0;   // intact objects whose MAC failed, deleted
  uint64_t objects = 0;          // objects stored now
  uint64_t bytes_used = 0;       // their bytes
  uint64_t queue_objects = 0;    // accepted Puts not yet stored or failed
  uint64_t queue_bytes = 0;      // their bytes
  std::string last_error;        // the latest error or corruption, or ""
};

class Tier {
 public:
  virtual ~Tier() = default;

  // Short name for metrics and messages ("disk", "redis").
  virtual std::string_view name() const = 0;

  // Queues `object` (an encoded object whose header key is `key`) for
  // storage. OK when queued or already stored; InvalidArgument when `object`
  // is not a well-framed object for `key`; ResourceExhausted when dropped
  // (queue full, or larger than the tier can hold), counted in
  // dropped_writes. Storing is best effort: a failed write is counted.
  virtual Status Put(const BlockKey& key, std::vector<uint8_t> object) = 0;

  // A verified object: its index in the keys asked for and its bytes, which
  // stay valid only until the call returns.
  using ObjectVisitor =
      std::function<void(size_t i, std::span<const uint8_t> object)>;

  // Reads the objects of `keys` and calls visit(i, object) once per key i
  // whose verified object the tier returns, on the calling thread, one call
  // at a time, in no particular order. The bytes may be the tier's own read
  // buffer (no copy, no allocation per object: the disk tier reuses its
  // buffers), so a loader decodes them where they lie. Returns per key
  // whether it was visited. A hit refreshes the key's recency; keys are
  // refreshed from last to first, so that when `keys` is a hash chain in
  // order, its head ends up the most recently used.
  virtual std::vector<bool> Visit(std::span<const BlockKey> keys,
                                  const ObjectVisitor& visit) = 0;

  // Visit, each object copied out: per key, the verified object or nullopt.
  std::vector<std::optional<std::vector<uint8_t>>> Get(
      std::span<const BlockKey> keys);

  // Layer-ordered loading (kvcache/kv_manager.h, "Layered loads") reads an
  // object in ranges, straight into the blocks they belong in, and verifies
  // it once all of it has arrived: ReadRanges, then VerifyGathered.
  struct RangeRead {
    size_t key = 0;           // index into the keys asked for
    uint64_t offset = 0;      // into the object, its header included
    std::span<uint8_t> into;  // receives bytes [offset, offset + into.size())
  };
  // Whether this tier serves ReadRanges and VerifyGathered (else a loader
  // reads whole objects with Visit).
  virtual bool reads_ranges() const { return false; }
  // Reads every range of `ranges` into its buffer, as the medium holds it
  // now (an accepted Put not yet stored is served from the queue), without
  // verifying anything: no byte read this way may be used before
  // VerifyGathered accepted its whole object. Per key, whether all of its
  // ranges were read whole (false: absent, shorter than a range, failed
  // I/O; counted in errors only for I/O failures). Counts bytes_read; no
  // hits, misses or recency. Ranges of one call may be read in any order
  // and at once. REQUIRES: reads_ranges().
  virtual std::vector<bool> ReadRanges(std::span<const BlockKey> keys,
                                       std::span<const RangeRead> ranges);
  // Visit's verdict on the object of `key` gathered from its first
  // kObjectHeaderBytes `header` and the rest, `payload`, in parts: OK (a
  // hit: counted, its recency refreshed) when it is intact, keyed `key`
  // and verifies as Visit requires (the tier's MAC, or its checksum when
  // the tier has no key); otherwise a miss, and an object found damaged or
  // forged is dropped and counted as Visit does (the error says why).
  // REQUIRES: reads_ranges().
  virtual Status VerifyGathered(
      const BlockKey& key, std::span<const uint8_t> header,
      std::span<const std::span<const uint8_t>> payload);

  // Per key, whether the tier holds (or has queued) it. Not verified: a
  // later Get may still miss. Does not refresh recency or count hits.
  virtual std::vector<bool> Exists(std::span<const BlockKey> keys) = 0;

  // Removes `key` (stored or queued); OK when it was absent. IOError naming
  // the file when the medium refuses.
  virtual Status Erase(const BlockKey& key) = 0;

  // Returns once every Put accepted before the call is stored or has failed.
  virtual void Flush() = 0;

  virtual TierStats Stats() const = 0;
};

}  // namespace kvstash::store
