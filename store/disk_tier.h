// DiskTier: a persistent, crash-safe Tier over one local directory.
//
// Layout: one file per object, `<dir>/<hh>/<32 hex digits of the key>.kvo`,
// where <hh> is the key's first two hex digits (Hash128::Hex order; the
// fan-out directory is made on its first write), and `<dir>/LOCK`, which
// holds the owner's pid. Other files in the directory are left alone.
//
// What survives what:
//   - kill -9 at any moment: an object is written to `<file>.tmp` beside its
//     final name, fdatasync'ed, then renamed into place (one atomic step),
//     so a visible object is always complete; temporary files left behind
//     are removed at the next Open. Objects still in the write-behind queue
//     are lost (it is a cache).
//   - restart: Open rebuilds the index by scanning the directory (recency
//     order from file mtimes); objects are verified lazily, when read.
//   - power loss: the directory is not fsync'ed after a rename, so a recently
//     published object may vanish, but it is never torn.
//   - damage: Get reads the whole file and checks framing, checksum and that
//     the header key matches the file's key; a bad object is a miss, is
//     deleted and counted (corrupt_dropped).
//
// Capacity: the bytes of stored objects stay <= capacity_bytes. Before a
// write, least recently used objects are evicted (recency in memory; Get
// refreshes it, Open seeds it from mtimes). Leaf-first order along hash
// chains is the caller's to impose (the tier does not know chains).
//
// One process per directory: Open takes an exclusive, non-blocking flock on
// `<dir>/LOCK`, held until the tier is destroyed. A second Open of the same
// directory, from this process or another, fails with Unavailable naming the
// directory and the holder's pid; give each process its own directory (share
// between servers through the Redis tier). The kernel drops the lock when the
// holder dies, kill -9 included.
//
// Threads: see tier.h. One background thread drains the write-behind queue
// (bounded by max_queue_bytes); it alone creates, renames and evicts files,
// all outside the tier's mutex, so Put never waits for disk I/O. Get reads
// outside the mutex too. Only Erase and the deletion of a corrupt object
// unlink a file under the mutex (rare, and keeps the index and the directory
// in step).
//
// I/O is ordinary buffered pread/pwrite for now; O_DIRECT through io_uring
// (with this path as the run-time fallback) is a later step.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/tier.h"

namespace kvstash::store {

struct DiskTierOptions {
  // The cache directory; created (with its parents) when missing.
  std::string dir;
  // Most bytes of stored objects (headers included); must be > 0.
  uint64_t capacity_bytes = uint64_t{16} << 30;
  // Most bytes of objects accepted by Put and not yet stored; must be > 0.
  uint64_t max_queue_bytes = uint64_t{256} << 20;
};

class DiskTier final : public Tier {
 public:
  // Locks and indexes options.dir, removes stale temporary files, evicts down
  // to capacity, starts the writer thread. InvalidArgument for bad options,
  // Unavailable when another holder has the directory locked, IOError
  // (naming the path) when the directory cannot be created, locked or read.
  static Result<std::unique_ptr<DiskTier>> Open(const DiskTierOptions& options);

  // Stores everything still queued, stops the writer, releases the lock.
  ~DiskTier() override;
  DiskTier(const DiskTier&) = delete;
  DiskTier& operator=(const DiskTier&) = delete;

  std::string_view name() const override { return "disk"; }
  Status Put(const BlockKey& key, std::vector<uint8_t> object) override;
  std::vector<std::optional<std::vector<uint8_t>>> Get(
      std::span<const BlockKey> keys) override;
  std::vector<bool> Exists(std::span<const BlockKey> keys) override;
  Status Erase(const BlockKey& key) override;
  void Flush() override;
  TierStats Stats() const override;

  // The file that holds (or would hold) `key`; its temporary twin while being
  // written is this path + ".tmp".
  std::string ObjectPath(const BlockKey& key) const;

 private:
  struct State;
  explicit DiskTier(std::unique_ptr<State> state);
  void WriterLoop();

  std::unique_ptr<State> state_;
};

}  // namespace kvstash::store
