#include "store/disk_tier.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <cerrno>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include "base/check.h"
#include "store/disk_files.h"
#include "store/leaf_lru.h"
#include "store/object_format.h"
#include "store/write_behind.h"

namespace kvstash::store {
namespace {

std::string HexByte(unsigned b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return {kDigits[b >> 4], kDigits[b & 15]};
}

}  // namespace

struct DiskTier::State {
  struct Entry {
    uint64_t object_bytes = 0;  // its file: ObjectFileBytes(object_bytes)
    uint64_t seq = 0;  // distinguishes a re-stored key from the one read
    BlockKey parent;
  };

  explicit State(const DiskTierOptions& o)
      : options(o),
        writes(mu, {.max_bytes = o.max_queue_bytes},
               [this](std::unique_lock<std::mutex>& lock,
                      std::span<const WriteBehindQueue::Write> batch) {
                 Store(lock, batch.front());
               }) {}

  const DiskTierOptions options;
  ObjectAuthenticator authenticator;  // keyed
  std::optional<DirLock> dir_lock;
  std::unique_ptr<ObjectFileIo> io;
  // Fan-out directories known to exist (created on first write). Set by
  // Open, then used by the writer thread only.
  std::bitset<256> made_dirs;
  // Writer thread only: the directories changed since their last fsync
  // (fan-out directories by index; the top one when a fan-out directory was
  // made) and the objects renamed since.
  std::bitset<256> unsynced_dirs;
  bool unsynced_top = false;
  int unsynced_objects = 0;

  mutable std::mutex mu;
  // Guarded by mu. Invariants: index and lru hold the same keys; lru's
  // children count, per key, the indexed, queued and in-flight objects (not
  // cancelled ones too, until their write ends) that name it as parent (a
  // parent equal to the object's own key is not counted), all added with
  // AddChild (lru entries have no parent of their own); the directory holds
  // exactly the files of index, except for the files of the write in flight and
  // of the victims it evicted (see Evict). A key is in at most one of index and
  // writes (not cancelled).
  std::unordered_map<BlockKey, Entry, Hash128Hasher> index;
  LeafFirstLru lru{{.track_all = true}};
  uint64_t bytes_used = 0;
  uint64_t next_seq = 0;
  TierStats stats;  // counters only; occupancy is filled in by Stats()
  // One write at a time (its writer alone creates, renames and evicts
  // files); last, so that it stops before the state it stores into goes.
  WriteBehindQueue writes;

  std::string Path(const BlockKey& key) const {
    return ObjectFilePath(options.dir, key);
  }

  // Creates fan-out directory `b` unless it is known to exist. Writer
  // thread only.
  Status MakeDir(unsigned b) {
    if (made_dirs[b]) return Status::OK();
    const std::string sub = options.dir + "/" + HexByte(b);
    if (::mkdir(sub.c_str(), kCacheDirMode) != 0 && errno != EEXIST) {
      return ErrnoStatus("cannot create", sub, errno);
    }
    made_dirs[b] = true;
    unsynced_top = true;
    return Status::OK();
  }

  // fsyncs the directories changed since the last call. Writer thread only.
  std::vector<Status> SyncDirs() {
    std::vector<Status> failures;
    for (unsigned b = 0; b < 256; ++b) {
      if (!unsynced_dirs[b]) continue;
      Status st = SyncDir(options.dir + "/" + HexByte(b));
      if (!st.ok()) failures.push_back(std::move(st));
    }
    if (unsynced_top) {
      Status st = SyncDir(options.dir);
      if (!st.ok()) failures.push_back(std::move(st));
    }
    unsynced_dirs.reset();
    unsynced_top = false;
    unsynced_objects = 0;
    return failures;
  }

  void Fail(const Status& s) {
    ++stats.errors;
    stats.last_error = s.ToString();
  }

  // REQUIRES: mu held (for all the methods below).
  //
  // `child` (stored or queued) names `parent`: the parent is no leaf.
  void AddChild(const BlockKey& parent, const BlockKey& child) {
    if (parent != child) lru.AddChild(parent);  // else pinned for good
  }

  // `child` is gone (or will not be stored): its parent may become a leaf.
  void DropChild(const BlockKey& parent, const BlockKey& child) {
    if (parent != child) lru.DropChild(parent);
  }

  // Indexes a stored object of `object_bytes` as the most recently used.
  // Its own link to `parent` is AddChild's, made when it was queued.
  void Insert(const BlockKey& key, const BlockKey& parent,
              uint64_t object_bytes) {
    KV_CHECK(!index.contains(key));
    index.emplace(key, Entry{object_bytes, next_seq++, parent});
    lru.Insert(key, std::nullopt);
    bytes_used += ObjectFileBytes(object_bytes);
  }

  // Drops `key` from the index and returns its file, for the caller to
  // delete. REQUIRES: key indexed.
  std::string Unindex(const BlockKey& key) {
    const auto it = index.find(key);
    KV_CHECK(it != index.end());
    lru.Erase(key);
    bytes_used -= ObjectFileBytes(it->second.object_bytes);
    const BlockKey parent = it->second.parent;
    index.erase(it);
    DropChild(parent, key);
    return Path(key);
  }

  // Unindex, and deletes the file now. REQUIRES: key indexed.
  Status Remove(const BlockKey& key) {
    const std::string path = Unindex(key);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      const Status s = ErrnoStatus("cannot delete", path, errno);
      Fail(s);
      return s;
    }
    return Status::OK();
  }

  // The object of `key` was not returned because of `error` (from reading
  // or verifying it): a damaged (Corruption) or forged (PermissionDenied)
  // object is counted and deleted, a file deleted behind the tier's back
  // (NotFound) is counted as an error and unindexed, and any other error is
  // counted and leaves the object, which may read later. Only the object
  // read is dropped: the one indexed under sequence number `seq` (another
  // one means it was evicted or erased while being read, and its key may
  // hold another object by now), or, without `seq`, whichever is indexed.
  void Refused(const BlockKey& key, std::optional<uint64_t> seq,
               const Status& error) {
    const auto it = index.find(key);
    const bool read =
        it != index.end() && (!seq.has_value() || it->second.seq == *seq);
    if (error.code() == StatusCode::kCorruption ||
        error.code() == StatusCode::kPermissionDenied) {
      if (!read) return;
      ++(error.code() == StatusCode::kCorruption ? stats.corrupt_dropped
                                                 : stats.forged_dropped);
      stats.last_error = error.ToString();
      (void)Remove(key);  // a failure is counted
    } else if (error.code() == StatusCode::kNotFound) {
      if (!read) return;
      Fail(error);
      (void)Remove(key);
    } else {
      Fail(error);
    }
  }

  // Drops objects from the index, least recently used leaf first (see the
  // Capacity paragraph of disk_tier.h), until `incoming` more bytes fit, and
  // returns their files for the caller to delete. Deleting outside mu is
  // safe for the writer thread: a dropped key is no longer indexed (Get and
  // Erase leave its file alone), and only the writer publishes files, so
  // none can reappear under a victim's name before the writer has deleted
  // it. REQUIRES: incoming <= capacity.
  std::vector<std::string> Evict(uint64_t incoming) {
    std::vector<std::string> victims;
    while (bytes_used + incoming > options.capacity_bytes) {
      const std::optional<BlockKey> key =
          lru.leaf_count() > 0 ? lru.OldestLeaf() : lru.Oldest();
      KV_CHECK(key.has_value());
      victims.push_back(Unindex(*key));
      ++stats.evictions;
    }
    return victims;
  }

  bool Pending(const BlockKey& key) const {
    return writes.Find(key) != nullptr;
  }

  // Stores `w`, the write in flight: evicts what it needs, writes the file
  // and publishes it. The writer thread's StoreFn (store/write_behind.h):
  // the I/O runs outside mu.
  void Store(std::unique_lock<std::mutex>& lock,
             const WriteBehindQueue::Write& w) {
    const bool last_queued = writes.queue_empty();
    const BlockKey key = w.key;
    const std::shared_ptr<const std::vector<uint8_t>> bytes = w.bytes;
    const uint64_t file_bytes = ObjectFileBytes(bytes->size());
    const std::vector<std::string> victims = Evict(file_bytes);

    // The I/O, outside mu: evictions, the temporary file, its publication.
    lock.unlock();
    std::vector<Status> failures;
    for (const std::string& victim : victims) {
      if (::unlink(victim.c_str()) != 0 && errno != ENOENT) {
        failures.push_back(ErrnoStatus("cannot delete", victim, errno));
      }
    }
    const std::string path = Path(key);
    const std::string tmp = path + std::string(kTempFileSuffix);
    Status status = MakeDir(unsigned(key.hi >> 56));
    if (status.ok()) status = io->WriteSynced(tmp, *bytes);
    if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
      status = ErrnoStatus("cannot rename into", path, errno);
    }
    if (status.ok()) {
      unsynced_dirs[unsigned(key.hi >> 56)] = true;
      ++unsynced_objects;
    } else {
      ::unlink(tmp.c_str());
      failures.push_back(status);
    }
    if (last_queued || unsynced_objects >= kDirSyncBatch) {
      for (Status& f : SyncDirs()) failures.push_back(std::move(f));
    }
    lock.lock();

    // Until now the key was in flight (Get served it from memory, Put
    // deduplicated it, Erase marked it cancelled), so nobody else touched
    // its file.
    if (status.ok() && !w.cancelled) {
      Insert(key, w.parent, bytes->size());
      ++stats.writes;
      stats.bytes_written += bytes->size();
    } else {
      if (status.ok() && ::unlink(path.c_str()) != 0 && errno != ENOENT) {
        failures.push_back(ErrnoStatus("cannot delete", path, errno));
      }
      DropChild(w.parent, key);
    }
    for (const Status& f : failures) Fail(f);
  }

  // Indexes the directory for Open: deletes temporary files and files whose
  // header is bad, indexes the rest by mtime, evicts down to capacity.
  Status Load() {
    KV_ASSIGN_OR_RETURN(CacheDirListing listing, ListCacheDir(options.dir));
    made_dirs = listing.fanout_dirs;
    for (const TempFile& t : listing.temps) {
      if (::unlink(t.path.c_str()) != 0 && errno != ENOENT) {
        return ErrnoStatus("cannot delete", t.path, errno);
      }
    }
    const std::vector<Result<ObjectHeader>> headers =
        io->ReadHeaders(listing.objects);
    std::vector<size_t> good;
    for (size_t i = 0; i < headers.size(); ++i) {
      const Status& error = headers[i].status();
      if (error.ok()) {
        good.push_back(i);
      } else if (error.code() == StatusCode::kCorruption) {
        ++stats.corrupt_dropped;
        stats.last_error = error.ToString();
        const std::string& path = listing.objects[i].path;
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
          Fail(ErrnoStatus("cannot delete", path, errno));
        }
      } else if (error.code() != StatusCode::kNotFound) {
        Fail(error);  // unreadable now: left alone, not indexed
      }
    }
    std::sort(good.begin(), good.end(), [&](size_t x, size_t y) {
      return listing.objects[x].mtime_ns < listing.objects[y].mtime_ns;
    });
    for (const size_t i : good) {  // the newest ends up the most recent
      // ReadHeaders checked that the object fills f.bytes of file.
      const ObjectFile& f = listing.objects[i];
      Insert(f.key, headers[i]->parent,
             kObjectHeaderBytes + headers[i]->payload_bytes);
      AddChild(headers[i]->parent, f.key);
    }
    for (const std::string& victim : Evict(0)) {
      if (::unlink(victim.c_str()) != 0 && errno != ENOENT) {
        return ErrnoStatus("cannot delete", victim, errno);
      }
    }
    return Status::OK();
  }
};

Result<std::unique_ptr<DiskTier>> DiskTier::Open(
    const DiskTierOptions& options) {
  if (options.dir.empty()) {
    return Status::InvalidArgument("disk cache: no directory given");
  }
  if (options.capacity_bytes == 0 || options.max_queue_bytes == 0) {
    return Status::InvalidArgument(
        "disk cache '" + options.dir +
        "': capacity and write queue size must be > 0");
  }
  if (options.authenticator && !options.authenticator->keyed()) {
    return Status::InvalidArgument("disk cache '" + options.dir +
                                   "': its authenticator has no key");
  }
  KV_RETURN_IF_ERROR(MakePrivateDir(options.dir).WithPrefix("disk cache"));
  Result<DirLock> lock = DirLock::Acquire(options.dir);
  if (!lock.ok()) {
    if (lock.status().code() != StatusCode::kUnavailable) return lock.status();
    return Status::Unavailable(lock.status().message() +
                               "; give each kvstash process its own directory");
  }

  auto state = std::make_unique<State>(options);
  state->dir_lock.emplace(std::move(lock).value());
  if (options.authenticator) {
    state->authenticator = *options.authenticator;
  } else {
    KV_ASSIGN_OR_RETURN(state->authenticator, DirKey(options.dir, true));
  }
  KV_ASSIGN_OR_RETURN(state->io, ObjectFileIo::Open(options.dir, options.io,
                                                    state->authenticator));
  KV_RETURN_IF_ERROR(state->Load());
  state->writes.Start();
  return std::unique_ptr<DiskTier>(new DiskTier(std::move(state)));
}

DiskTier::DiskTier(std::unique_ptr<State> state) : state_(std::move(state)) {}

DiskTier::~DiskTier() { state_->writes.Stop(); }

std::string_view DiskTier::io_mode() const { return state_->io->mode(); }

MacAlgorithm DiskTier::seal_with() const {
  return state_->authenticator.seal_with();
}

void DiskTier::PauseWriterForTesting(bool paused) {
  state_->writes.SetPaused(paused);
}

std::string DiskTier::ObjectPath(const BlockKey& key) const {
  return state_->Path(key);
}

Status DiskTier::Put(const BlockKey& key, std::vector<uint8_t> object) {
  State& s = *state_;
  KV_ASSIGN_OR_RETURN(const ObjectHeader header,
                      ParseObjectForPut("disk cache", key, object));
  s.authenticator.Seal(object);
  const uint64_t size = object.size();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (s.index.contains(key)) {
    s.lru.Touch(key);
    return Status::OK();
  }
  if (s.Pending(key)) return Status::OK();
  if (ObjectFileBytes(size) > s.options.capacity_bytes) {
    ++s.stats.dropped_writes;
    return Status::ResourceExhausted("disk cache '" + s.options.dir +
                                     "': object of " + std::to_string(size) +
                                     " bytes (" +
                                     std::to_string(ObjectFileBytes(size)) +
                                     " on disk) exceeds the capacity of " +
                                     std::to_string(s.options.capacity_bytes));
  }
  if (!s.writes.Push(key, header.parent, std::move(object))) {
    return Status::ResourceExhausted(
        "disk cache '" + s.options.dir + "': write queue full (" +
        std::to_string(s.writes.bytes()) + " bytes queued)");
  }
  s.AddChild(header.parent, key);
  return Status::OK();
}

std::vector<bool> DiskTier::Visit(std::span<const BlockKey> keys,
                                  const ObjectVisitor& visit) {
  State& s = *state_;
  std::vector<bool> out(keys.size(), false);
  struct FileRead {
    size_t i;
    uint64_t seq;
  };
  std::vector<FileRead> reads;
  std::vector<BlockKey> read_keys;
  std::vector<std::pair<size_t, std::shared_ptr<const std::vector<uint8_t>>>>
      queued;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = keys.size(); i-- > 0;) {
      if (auto it = s.index.find(keys[i]); it != s.index.end()) {
        s.lru.Touch(keys[i]);
        reads.push_back({i, it->second.seq});
        read_keys.push_back(keys[i]);
      } else if (auto bytes = s.writes.Find(keys[i])) {
        queued.emplace_back(i, std::move(bytes));
      } else {
        ++s.stats.misses;
      }
    }
    s.stats.hits += queued.size();
  }
  for (auto& [i, bytes] : queued) {
    visit(i, *bytes);
    out[i] = true;
  }
  const std::vector<Result<size_t>> got =
      s.io->ReadObjects(read_keys, s.options.capacity_bytes,
                        [&](size_t r, std::span<const uint8_t> object) {
                          visit(reads[r].i, object);
                        });

  const std::lock_guard<std::mutex> lock(s.mu);
  for (size_t r = 0; r < reads.size(); ++r) {
    const size_t i = reads[r].i;
    if (got[r].ok()) {
      ++s.stats.hits;
      s.stats.bytes_read += *got[r];
      out[i] = true;
    } else {
      ++s.stats.misses;
      s.Refused(keys[i], reads[r].seq, got[r].status());
    }
  }
  return out;
}

std::vector<bool> DiskTier::ReadRanges(std::span<const BlockKey> keys,
                                       std::span<const RangeRead> ranges) {
  State& s = *state_;
  // Per key, where its object lies now: its file (the index's entry) or
  // the queue; out[i] false when neither.
  std::vector<bool> out(keys.size(), false);
  std::vector<uint64_t> object_bytes(keys.size(), 0);
  std::vector<std::optional<uint64_t>> seq(keys.size());
  std::vector<std::shared_ptr<const std::vector<uint8_t>>> queued(keys.size());
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = 0; i < keys.size(); ++i) {
      if (auto it = s.index.find(keys[i]); it != s.index.end()) {
        object_bytes[i] = it->second.object_bytes;
        seq[i] = it->second.seq;
      } else if ((queued[i] = s.writes.Find(keys[i]))) {
        object_bytes[i] = queued[i]->size();
      } else {
        continue;
      }
      out[i] = true;
    }
  }
  std::vector<ObjectFileIo::FileRange> file_ranges;
  for (const RangeRead& r : ranges) {
    KV_CHECK(r.key < keys.size());
    if (!out[r.key]) continue;
    const uint64_t n = object_bytes[r.key];
    if (r.offset > n || r.into.size() > n - r.offset) {
      out[r.key] = false;  // past the object's end
    } else if (queued[r.key] != nullptr) {
      const uint8_t* from = queued[r.key]->data() + r.offset;
      std::copy(from, from + r.into.size(), r.into.begin());
    } else if (!r.into.empty()) {
      file_ranges.push_back({r.key, r.offset, r.into});
    }
  }
  // Not the ranges of keys refused above: they are lost anyway.
  std::erase_if(file_ranges,
                [&](const ObjectFileIo::FileRange& r) { return !out[r.file]; });
  const std::vector<Status> got = s.io->ReadRanges(keys, file_ranges);

  const std::lock_guard<std::mutex> lock(s.mu);
  for (const ObjectFileIo::FileRange& r : file_ranges) {
    if (got[r.file].ok()) s.stats.bytes_read += r.into.size();
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!got[i].ok()) {
      out[i] = false;
      s.Refused(keys[i], seq[i], got[i]);
    }
  }
  return out;
}

Status DiskTier::VerifyGathered(
    const BlockKey& key, std::span<const uint8_t> header,
    std::span<const std::span<const uint8_t>> payload) {
  State& s = *state_;
  Status verdict = s.io->VerifyGathered(key, header, payload);
  const std::lock_guard<std::mutex> lock(s.mu);
  if (verdict.ok()) {
    ++s.stats.hits;
    if (s.index.contains(key)) s.lru.Touch(key);
  } else {
    ++s.stats.misses;
    s.Refused(key, std::nullopt, verdict);
  }
  return verdict;
}

std::vector<bool> DiskTier::Exists(std::span<const BlockKey> keys) {
  State& s = *state_;
  std::vector<bool> out(keys.size());
  const std::lock_guard<std::mutex> lock(s.mu);
  for (size_t i = 0; i < keys.size(); ++i) {
    out[i] = s.index.contains(keys[i]) || s.Pending(keys[i]);
  }
  return out;
}

Status DiskTier::Erase(const BlockKey& key) {
  State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.mu);
  if (std::optional<WriteBehindQueue::Write> w = s.writes.Cancel(key)) {
    s.DropChild(w->parent, key);
  }
  if (s.index.contains(key)) return s.Remove(key);
  return Status::OK();
}

void DiskTier::Flush() { state_->writes.Flush(); }

TierStats DiskTier::Stats() const {
  const State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.mu);
  TierStats out = s.stats;
  out.objects = s.index.size();
  out.bytes_used = s.bytes_used;
  s.writes.AddStats(out);
  return out;
}

}  // namespace kvstash::store
