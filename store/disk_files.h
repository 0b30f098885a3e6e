// The files of a disk cache directory (layout in store/disk_tier.h), shared
// by DiskTier and the offline tools of store/disk_cache_admin.h so that both
// name, lock, list, read and write them the same way.
//
// An object file holds the encoded object (store/object_format.h) followed
// by zero bytes up to the next multiple of kDirectIoAlign, in every I/O mode,
// so that O_DIRECT can read and write whole files and a directory written in
// one mode reads in the other. The header gives the object's length.
//
// Internal to store/. ObjectFileIo is thread-safe; the rest are functions
// and move-only values.
#pragma once

#include <bitset>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/disk_io.h"
#include "store/disk_tier.h"
#include "store/object_format.h"
#include "store/object_mac.h"
#include "store/tier.h"

namespace kvstash::store {

inline constexpr std::string_view kObjectFileSuffix = ".kvo";
inline constexpr std::string_view kTempFileSuffix = ".tmp";

// Bytes of the file that holds an object of `object_bytes`.
constexpr uint64_t ObjectFileBytes(uint64_t object_bytes) {
  return AlignUp(object_bytes);
}

// `<dir>/<hh>/<32 hex digits of key>.kvo`.
std::string ObjectFilePath(const std::string& dir, const BlockKey& key);

// Modes of what a cache directory holds: only its owner may read or write
// (other local users would read every tenant's KV, or plant objects).
inline constexpr mode_t kCacheDirMode = 0700;
inline constexpr mode_t kCacheFileMode = 0600;

// `<dir>/TIER_KEY`: the secret a disk tier without a fleet key seals its
// objects with.
std::string DirKeyPath(const std::string& dir);

// The key of ReadSecretFile(DirKeyPath(dir)). When the file is missing:
// with `create`, a fresh secret (ObjectAuthenticator::NewSecret) is
// written there first (mode 0600, O_EXCL | O_NOFOLLOW, synced with its
// directory); without, NotFound. The errors of ReadSecretFile and
// ObjectAuthenticator::FromSecret otherwise. REQUIRES: the caller holds the
// directory's lock.
Result<ObjectAuthenticator> DirKey(const std::string& dir, bool create);

// Makes `path` a directory only its owner can use: creates it (and its
// parents) with mode 0700 when missing, and takes group and other access
// away from an existing one. IOError naming the path.
Status MakePrivateDir(const std::string& path);

// fsyncs directory `path`, so that the renames and creations in it survive
// a power cut. IOError naming the path.
Status SyncDir(const std::string& path);

// The exclusive, non-blocking flock on `<dir>/LOCK` that makes one process
// the owner of a cache directory; released when destroyed (or when the
// process dies). Move-only.
class DirLock {
 public:
  // Creates `<dir>/LOCK` when missing, locks it and writes this process's
  // pid into it. Unavailable naming the directory and the holder's pid when
  // another open file holds the lock (one of this process included);
  // IOError naming the path otherwise.
  static Result<DirLock> Acquire(const std::string& dir);

 private:
  explicit DirLock(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

// A file named like an object: `<dir>/<hh>/<key hex>.kvo`, a regular file.
struct ObjectFile {
  BlockKey key;
  std::string path;
  uint64_t bytes = 0;
  int64_t mtime_ns = 0;
};

// A temporary file a writer left in a fan-out directory (`*.tmp`).
struct TempFile {
  std::string path;
  uint64_t bytes = 0;
};

struct CacheDirListing {
  std::vector<ObjectFile> objects;
  std::vector<TempFile> temps;
  std::bitset<256> fanout_dirs;  // the `<hh>` directories that exist
};

// Lists the object and temporary files of the fan-out directories of `dir`,
// in directory order; other entries are left out. IOError naming the path
// when a directory cannot be read.
Result<CacheDirListing> ListCacheDir(const std::string& dir);

// Reads and writes the object files of one directory, with O_DIRECT through
// io_uring or with buffered pread/pwrite (chosen by Open). Reads of many
// files (or of ranges of them) are submitted together, up to kReadBatch at a
// time, by a reader taken from a pool: a reader (a ring and the O_DIRECT
// buffers of its reads) is used by one call at a time, a call that finds none
// free creates one, and readers return to the pool after each call (so the pool
// holds as many as there were concurrent calls at most). A reader keeps its
// buffers, up to kKeptReadBytes, so steady loads neither fault pages in nor
// zero them; likewise each writing thread keeps the buffer its files are
// written from, up to kKeptWriteBytes.
class ObjectFileIo {
 public:
  static constexpr unsigned kReadBatch = 64;
  static constexpr size_t kKeptReadBytes = size_t{8} << 20;   // per reader
  static constexpr size_t kKeptWriteBytes = size_t{8} << 20;  // per thread
  // Most bytes of one O_DIRECT read of ReadRanges that serves several
  // ranges.
  static constexpr uint64_t kMaxMergedRead = uint64_t{1} << 20;

  // kAuto: O_DIRECT through io_uring when ProbeDirectUring(dir) passes,
  // buffered otherwise; kDirectUring: the probe's NotSupported or IOError,
  // prefixed with the directory, when it fails; kBuffered: no probe.
  // Objects read are verified with `authenticator`.
  // REQUIRES: `dir` exists and the caller holds its lock.
  static Result<std::unique_ptr<ObjectFileIo>> Open(
      const std::string& dir, DiskTierOptions::DiskIo mode,
      const ObjectAuthenticator& authenticator);
  ~ObjectFileIo();

  // "direct+io_uring" or "buffered".
  std::string_view mode() const;

  // Per file, its header when the file is the object its name says: the
  // header parses, names the file's key, and gives a length that fills
  // exactly `bytes` of file. Corruption (naming the path) otherwise;
  // NotFound when the file is gone; IOError when it cannot be read.
  // Reads the first block of each file only.
  std::vector<Result<ObjectHeader>> ReadHeaders(
      std::span<const ObjectFile> files);

  // Reads the object of each key's file and verifies it: as ReadHeaders, the
  // padding is zero and ObjectAuthenticator::Verify passes (so
  // PermissionDenied for a forged object); Corruption also for a file that
  // is not regular or is larger than `max_file_bytes`. Calls visit(i,
  // object) for each key i whose object verifies, with the bytes in the
  // reader's buffer (valid until visit returns), and returns per key the
  // object's length or why it was not visited.
  using ObjectVisitor = Tier::ObjectVisitor;
  std::vector<Result<size_t>> ReadObjects(std::span<const BlockKey> keys,
                                          uint64_t max_file_bytes,
                                          const ObjectVisitor& visit);

  // Bytes [offset, offset + into.size()) of the file of keys[file].
  struct FileRange {
    size_t file = 0;
    uint64_t offset = 0;
    std::span<uint8_t> into;
  };
  // Reads each of `ranges` into its buffer, unverified, with up to
  // kReadBatch reads (and kKeptReadBytes of bounce buffers) in flight at
  // once: with O_DIRECT, the whole aligned blocks around a range (and
  // around the ranges of its file whose blocks meet them, up to
  // kMaxMergedRead in one read) go into the reader's buffers and the
  // ranges are copied out; buffered, each range is read straight into its
  // buffer. A file is open only while its reads run. Per key, OK when all of
  // its ranges were read whole (a key without ranges is not touched);
  // Corruption when the file ends before a range does, NotFound when the file
  // is gone, IOError when it cannot be read.
  std::vector<Status> ReadRanges(std::span<const BlockKey> keys,
                                 std::span<const FileRange> ranges);

  // What ReadObjects asks of an object, but its padding, for the object of
  // `key` gathered from ranges of its file (ObjectAuthenticator::
  // VerifyGathered): OK when it verifies and is keyed `key`; else
  // Corruption or PermissionDenied naming the file.
  Status VerifyGathered(
      const BlockKey& key, std::span<const uint8_t> header,
      std::span<const std::span<const uint8_t>> payload) const;

  // Writes `object` and its padding to a new file at `path` (mode 0600,
  // created with O_EXCL | O_NOFOLLOW: a file or link planted at `path` is
  // removed first, never written through) and fdatasyncs it. IOError naming
  // the path. REQUIRES: `object` is not empty.
  Status WriteSynced(const std::string& path,
                     std::span<const uint8_t> object) const;

 private:
  struct FileRead;
  struct Reader;
  ObjectFileIo(std::string dir, bool direct,
               const ObjectAuthenticator& authenticator);
  std::unique_ptr<Reader> TakeReader();
  void GiveBack(std::unique_ptr<Reader> reader);
  // The ring `reader` reads through, created when missing; null when
  // buffered, or when the kernel refuses a ring now (it passed the probe):
  // then the same reads go to pread, and the next call tries again.
  IoRing* Ring(Reader& reader) const;
  // Runs the reads of `files` (those whose status is OK) together.
  void Run(Reader& reader, std::span<FileRead> files);
  // Reads n files, kReadBatch at a time: prepare(i, FileRead&) opens file i
  // and aims its read (or sets its status), finish(i, FileRead&, bytes read)
  // turns what was read into result i.
  template <typename T, typename Prepare, typename Finish>
  std::vector<Result<T>> ReadInBatches(size_t n, Prepare prepare,
                                       Finish finish);

  const std::string dir_;
  const bool direct_;
  const ObjectAuthenticator authenticator_;
  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Reader>> free_readers_;  // guarded by readers_mu_
};

}  // namespace kvstash::store
