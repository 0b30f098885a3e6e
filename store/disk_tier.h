// DiskTier: a persistent, crash-safe Tier over one local directory.
//
// Layout: one file per object, `<dir>/<hh>/<32 hex digits of the key>.kvo`,
// where <hh> is the key's first two hex digits (Hash128::Hex order; the
// fan-out directory is made on its first write), `<dir>/LOCK`, which holds
// the owner's pid, and `<dir>/TIER_KEY` when the tier makes its own key. An
// object file holds the encoded object followed by zero bytes up to the next
// multiple of 4096 (the header gives the object's length), whatever the I/O
// mode, so that O_DIRECT reads and writes whole files. Open may write and
// remove `<dir>/DIRECT_IO_PROBE` (see I/O below). Other files in the directory
// are left alone.
//
// What survives what:
//   - kill -9 at any moment: an object is written to `<file>.tmp` beside its
//     final name, fdatasync'ed, then renamed into place (one atomic step),
//     so a visible object is always complete; temporary files left behind
//     are removed at the next Open. Objects still in the write-behind queue
//     are lost (it is a cache).
//   - restart: Open rebuilds the index by reading the 128-byte header of
//     every object file (recency order from file mtimes); a file whose header
//     does not parse, names another key or gives a length that does not fill
//     the file is deleted and counted (corrupt_dropped). MACs are
//     verified lazily, when an object is read.
//   - damage: Get reads the whole file and checks framing, padding, the
//     MAC and that the header key matches the file's key; a bad object is a
//     miss, is deleted and counted (corrupt_dropped when damaged,
//     forged_dropped when intact but not sealed with the tier's key).
//     VerifyGathered checks the same of an object read in ranges (but the
//     padding, which ranges do not read) and deletes the object indexed
//     under its key when it fails; ReadRanges refuses a range past the
//     object's end (the index keeps each object's length) without I/O, and
//     deletes a file that ends before the index says it should.
//   - power loss: the writer fsyncs the directories it renamed into after
//     every kDirSyncBatch objects, and whenever the queue runs empty, so a
//     power cut loses at most the objects of the last batch (never a torn
//     one).
//
// Trust: every object is sealed with a key (store/object_mac.h) and
// verified on every read, so that bytes written by anyone without the key
// are never loaded. The key is options.authenticator or, without one, the
// directory's own (`<dir>/TIER_KEY`, made on first Open). The directory and
// its fan-out directories are 0700 (an existing cache directory is made so
// at Open), every file 0600, and a file is created with O_EXCL | O_NOFOLLOW,
// never through a link planted in its place.
//
// Capacity: the bytes of object files (padding included) stay <=
// capacity_bytes. Eviction is leaf-first LRU along hash chains
// (store/leaf_lru.h): the tier knows each object's parent key (from its
// header), and an object is a leaf while no stored or queued object names it
// as parent. Before a write, the
// least recently used leaf is evicted until the object fits; evicting a leaf
// may make its parent a leaf, which then competes by its own recency. So a
// chain loses its tail before its head, and a head shared by many chains
// stays while any of them does. Only when no stored object is a leaf (every
// one is the parent of a stored or queued object, or parents form a cycle,
// which no real chain does) does the least recently used object go. Recency
// lives in memory: Get refreshes it (a chain's head last, see tier.h), Put
// of a stored key refreshes it, Open seeds it from mtimes.
//
// One process per directory: Open takes an exclusive, non-blocking flock on
// `<dir>/LOCK`, held until the tier is destroyed. A second Open of the same
// directory, from this process or another, fails with Unavailable naming the
// directory and the holder's pid; give each process its own directory (share
// between servers through the Redis tier). The kernel drops the lock when the
// holder dies, kill -9 included. The tools of store/disk_cache_admin.h take
// the same lock.
//
// I/O: with DiskIo::kDirectUring (or kAuto where the directory allows it),
// files are read and written with O_DIRECT from 4096-aligned buffers, so
// cached KV bytes do not also fill the page cache, and the reads of one Visit
// are submitted together on an io_uring ring, 64 at a time. kAuto decides at
// Open by writing a scratch file with O_DIRECT and reading it back through a
// ring (ProbeDirectUring in store/disk_io.h). A ring is not thread-safe: the
// tier keeps a pool of readers (a ring and its read buffers); each Visit or
// ReadRanges takes one (creating one when all are taken) and gives it back,
// so concurrent calls never wait for each other's I/O, and the pool holds at
// most as many readers as there were concurrent calls. Visit hands out the
// objects where the reads put them: a reader keeps its buffers (up to 8 MiB),
// so a steady load allocates, faults in and copies nothing but what the
// caller decodes (a fresh 512 KiB buffer per object cost 6-7x the CPU of the
// load: page faults and zeroing). ReadRanges reads the whole aligned blocks
// around each range (those of a layer-ordered load are not aligned; ranges
// of a file whose blocks meet, a header and the range after it say, in one
// read) into the reader's buffers and copies the ranges out, with up to 64
// reads and 8 MiB in flight; a file is open only while its reads run
// (figures in disk_files.cc). The writer thread writes each file with
// pwrite (one write and one fdatasync per object, which a ring would not
// speed up). DiskIo::kBuffered is ordinary buffered pread/pwrite (ReadRanges
// preads each range straight into its buffer), the run-time fallback of
// kAuto where the kernel refuses io_uring (a seccomp filter, an old kernel)
// or the file system refuses O_DIRECT.
//
// Threads: see tier.h. One background thread drains the write-behind queue
// (store/write_behind.h, one object at a time, bounded by max_queue_bytes); it
// alone creates, renames and evicts files, all outside the tier's mutex, so Put
// never waits for disk I/O. Get reads outside the mutex too. Only Erase and the
// deletion of a corrupt object unlink a file under the mutex (rare, and keeps
// the index and the directory in step).
#pragma once

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

// Objects renamed into place between two fsyncs of their directories.
inline constexpr int kDirSyncBatch = 64;

struct DiskTierOptions {
  // How object files are read and written (see the I/O paragraph above).
  enum class DiskIo {
    kAuto,         // kDirectUring where it works, else kBuffered
    kDirectUring,  // O_DIRECT through io_uring; Open fails without it
    kBuffered,     // buffered pread/pwrite
  };

  // The cache directory; created (with its parents) when missing.
  std::string dir;
  // Most bytes of object files (headers and padding included); must be > 0.
  uint64_t capacity_bytes = uint64_t{16} << 30;
  // Most bytes of objects accepted by Put and not yet stored; must be > 0.
  uint64_t max_queue_bytes = uint64_t{256} << 20;
  DiskIo io = DiskIo::kAuto;
  // The key objects are sealed and verified with; it must be keyed. Unset:
  // the key of `<dir>/TIER_KEY`, made when missing (store/disk_files.h),
  // so the directory's objects stay readable across restarts.
  std::optional<ObjectAuthenticator> authenticator = std::nullopt;
};

class DiskTier final : public Tier {
 public:
  // Makes options.dir private, locks and indexes it, removes stale temporary
  // files and files with bad headers, evicts down to capacity, starts the
  // writer thread. InvalidArgument for bad options (an unkeyed
  // authenticator included), Unavailable when another holder has the
  // directory locked, NotSupported (or IOError) when options.io is
  // kDirectUring and the kernel or the file system refuses it, IOError
  // (naming the path) when the directory cannot be created, locked or read.
  static Result<std::unique_ptr<DiskTier>> Open(const DiskTierOptions& options);

  // Stores everything still queued, stops the writer, releases the lock.
  ~DiskTier() override;
  DiskTier(const DiskTier&) = delete;
  DiskTier& operator=(const DiskTier&) = delete;

  std::string_view name() const override { return "disk"; }
  // The I/O mode in use: "direct+io_uring" or "buffered" (for logs and
  // metrics; kAuto resolves to one of them at Open).
  std::string_view io_mode() const;
  // The MAC it seals objects with (its key's: ObjectAuthenticator).
  MacAlgorithm seal_with() const;
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
  Status Erase(const BlockKey& key) override;
  void Flush() override;
  TierStats Stats() const override;

  // For tests that need a full queue: while paused, the writer takes
  // nothing from the queue (a Flush then waits until it is resumed; the
  // destructor stores the queue anyway).
  void PauseWriterForTesting(bool paused);

  // The file that holds (or would hold) `key`; its temporary twin while being
  // written is this path + ".tmp".
  std::string ObjectPath(const BlockKey& key) const;

 private:
  struct State;
  explicit DiskTier(std::unique_ptr<State> state);

  std::unique_ptr<State> state_;
};

}  // namespace kvstash::store
