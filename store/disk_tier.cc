#include "store/disk_tier.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <cerrno>
#include <condition_variable>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include "base/check.h"
#include "store/disk_files.h"
#include "store/object_format.h"

namespace kvstash::store {
namespace {

std::string HexByte(unsigned b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return {kDigits[b >> 4], kDigits[b & 15]};
}

}  // namespace

struct DiskTier::State {
  struct Entry {
    uint64_t bytes = 0;  // of the file
    uint64_t seq = 0;    // distinguishes a re-stored key from the one read
    uint64_t used = 0;   // recency tick: the key of the entry in `recency`
    BlockKey parent;
  };
  struct Write {
    BlockKey key;
    BlockKey parent;
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    uint64_t ticket = 0;  // order of acceptance, for Flush
  };

  DiskTierOptions options;
  ObjectAuthenticator authenticator;  // keyed
  std::optional<DirLock> dir_lock;
  std::unique_ptr<ObjectFileIo> io;
  std::thread writer;
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
  std::condition_variable work_cv;  // queue non-empty, or stop
  std::condition_variable done_cv;  // a queued write finished or went away
  // Guarded by mu. Invariants: index and recency hold the same keys; leaves
  // holds exactly those of them that are not in children; children counts,
  // per key, the indexed, queued and in-flight objects (not cancelled ones
  // too, until their write ends) that name it as parent (a parent equal to
  // the object's own key is not counted); the directory holds exactly the
  // files of index, except for the files of the write in flight and of the
  // victims it evicted (see Evict).
  std::unordered_map<BlockKey, Entry, Hash128Hasher> index;
  std::map<uint64_t, BlockKey> recency;  // by Entry::used, oldest first
  std::map<uint64_t, BlockKey> leaves;   // by Entry::used, oldest first
  std::unordered_map<BlockKey, uint64_t, Hash128Hasher> children;
  uint64_t bytes_used = 0;
  uint64_t next_seq = 0;
  uint64_t clock = 0;  // the latest recency tick given out
  // Guarded by mu. A key is in at most one of index, queue and in_flight
  // (not cancelled).
  std::list<Write> queue;  // FIFO, tickets ascending
  std::unordered_map<BlockKey, std::list<Write>::iterator, Hash128Hasher>
      queued;
  std::optional<Write> in_flight;
  bool in_flight_cancelled = false;  // erased while being written
  uint64_t queue_bytes = 0;          // queue and in_flight
  uint64_t last_ticket = 0;
  bool stop = false;
  bool writer_paused = false;
  TierStats stats;  // counters only; occupancy is filled in by Stats()

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

  // The recency lists, for an indexed key. REQUIRES: mu held (for all
  // the methods below).
  void List(const BlockKey& key, const Entry& e) {
    recency.emplace(e.used, key);
    if (!children.contains(key)) leaves.emplace(e.used, key);
  }
  void Unlist(const Entry& e) {
    recency.erase(e.used);
    leaves.erase(e.used);
  }

  void Touch(const BlockKey& key, Entry& e) {
    Unlist(e);
    e.used = ++clock;
    List(key, e);
  }

  // `child` (stored or queued) names `parent`: the parent is no leaf.
  void AddChild(const BlockKey& parent, const BlockKey& child) {
    if (parent == child) return;  // would pin the object for good
    if (children[parent]++ > 0) return;
    if (auto it = index.find(parent); it != index.end()) {
      leaves.erase(it->second.used);
    }
  }

  // `child` is gone (or will not be stored): its parent may become a leaf.
  void DropChild(const BlockKey& parent, const BlockKey& child) {
    if (parent == child) return;
    const auto it = children.find(parent);
    KV_CHECK(it != children.end());
    if (--it->second > 0) return;
    children.erase(it);
    if (auto p = index.find(parent); p != index.end()) {
      leaves.emplace(p->second.used, parent);
    }
  }

  // Indexes a stored object as the most recently used. Its own link to
  // `parent` is AddChild's, made when it was queued.
  void Insert(const BlockKey& key, const BlockKey& parent, uint64_t bytes) {
    KV_CHECK(!index.contains(key));
    const Entry& e =
        index.emplace(key, Entry{bytes, next_seq++, ++clock, parent})
            .first->second;
    List(key, e);
    bytes_used += bytes;
  }

  // Drops `key` from the index and returns its file, for the caller to
  // delete. REQUIRES: key indexed.
  std::string Unindex(const BlockKey& key) {
    const auto it = index.find(key);
    KV_CHECK(it != index.end());
    Unlist(it->second);
    bytes_used -= it->second.bytes;
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
      KV_CHECK(!recency.empty());
      const BlockKey key = (leaves.empty() ? recency : leaves).begin()->second;
      victims.push_back(Unindex(key));
      ++stats.evictions;
    }
    return victims;
  }

  bool Pending(const BlockKey& key) const {
    return queued.contains(key) ||
           (in_flight && in_flight->key == key && !in_flight_cancelled);
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
      const ObjectFile& f = listing.objects[i];
      Insert(f.key, headers[i]->parent, f.bytes);
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

  auto state = std::make_unique<State>();
  state->options = options;
  state->dir_lock.emplace(std::move(lock).value());
  if (options.authenticator) {
    state->authenticator = *options.authenticator;
  } else {
    KV_ASSIGN_OR_RETURN(state->authenticator, DirKey(options.dir, true));
  }
  KV_ASSIGN_OR_RETURN(state->io, ObjectFileIo::Open(options.dir, options.io,
                                                    state->authenticator));
  KV_RETURN_IF_ERROR(state->Load());
  std::unique_ptr<DiskTier> tier(new DiskTier(std::move(state)));
  tier->state_->writer = std::thread([t = tier.get()] { t->WriterLoop(); });
  return tier;
}

DiskTier::DiskTier(std::unique_ptr<State> state) : state_(std::move(state)) {}

DiskTier::~DiskTier() {
  State& s = *state_;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    s.stop = true;
  }
  s.work_cv.notify_all();
  s.writer.join();
}

std::string_view DiskTier::io_mode() const { return state_->io->mode(); }

void DiskTier::PauseWriterForTesting(bool paused) {
  {
    const std::lock_guard<std::mutex> lock(state_->mu);
    state_->writer_paused = paused;
  }
  state_->work_cv.notify_all();
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
  if (auto it = s.index.find(key); it != s.index.end()) {
    s.Touch(key, it->second);
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
  if (s.queue_bytes + size > s.options.max_queue_bytes) {
    ++s.stats.dropped_writes;
    return Status::ResourceExhausted(
        "disk cache '" + s.options.dir + "': write queue full (" +
        std::to_string(s.queue_bytes) + " bytes queued)");
  }
  s.queue.push_back(
      {key, header.parent,
       std::make_shared<const std::vector<uint8_t>>(std::move(object)),
       ++s.last_ticket});
  s.queued.emplace(key, std::prev(s.queue.end()));
  s.queue_bytes += size;
  s.AddChild(header.parent, key);
  s.work_cv.notify_one();
  return Status::OK();
}

std::vector<std::optional<std::vector<uint8_t>>> DiskTier::Get(
    std::span<const BlockKey> keys) {
  State& s = *state_;
  std::vector<std::optional<std::vector<uint8_t>>> out(keys.size());
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
        s.Touch(keys[i], it->second);
        reads.push_back({i, it->second.seq});
        read_keys.push_back(keys[i]);
      } else if (auto q = s.queued.find(keys[i]); q != s.queued.end()) {
        queued.emplace_back(i, q->second->bytes);
      } else if (s.Pending(keys[i])) {
        queued.emplace_back(i, s.in_flight->bytes);
      } else {
        ++s.stats.misses;
      }
    }
    s.stats.hits += queued.size();
  }
  for (auto& [i, bytes] : queued) out[i] = *bytes;
  std::vector<Result<std::vector<uint8_t>>> got =
      s.io->ReadObjects(read_keys, s.options.capacity_bytes);

  const std::lock_guard<std::mutex> lock(s.mu);
  for (size_t r = 0; r < reads.size(); ++r) {
    const size_t i = reads[r].i;
    if (got[r].ok()) {
      ++s.stats.hits;
      s.stats.bytes_read += got[r]->size();
      out[i] = std::move(got[r]).value();
      continue;
    }
    ++s.stats.misses;
    const Status& error = got[r].status();
    const auto it = s.index.find(keys[i]);
    // Otherwise the object was evicted or erased while being read.
    const bool same = it != s.index.end() && it->second.seq == reads[r].seq;
    if (error.code() == StatusCode::kCorruption ||
        error.code() == StatusCode::kPermissionDenied) {
      if (same) {
        ++(error.code() == StatusCode::kCorruption ? s.stats.corrupt_dropped
                                                   : s.stats.forged_dropped);
        s.stats.last_error = error.ToString();
        (void)s.Remove(keys[i]);  // a failure is counted
      }
    } else if (error.code() == StatusCode::kNotFound) {
      if (same) {  // deleted behind the tier's back
        s.Fail(error);
        (void)s.Remove(keys[i]);
      }
    } else {
      s.Fail(error);  // unreadable now; kept, it may read later
    }
  }
  return out;
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
  if (auto q = s.queued.find(key); q != s.queued.end()) {
    s.queue_bytes -= q->second->bytes->size();
    s.DropChild(q->second->parent, key);
    s.queue.erase(q->second);
    s.queued.erase(q);
    s.done_cv.notify_all();
  }
  if (s.in_flight && s.in_flight->key == key) s.in_flight_cancelled = true;
  if (s.index.contains(key)) return s.Remove(key);
  return Status::OK();
}

void DiskTier::Flush() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  const uint64_t ticket = s.last_ticket;
  s.done_cv.wait(lock, [&] {
    return (s.queue.empty() || s.queue.front().ticket > ticket) &&
           (!s.in_flight || s.in_flight->ticket > ticket);
  });
}

TierStats DiskTier::Stats() const {
  const State& s = *state_;
  const std::lock_guard<std::mutex> lock(s.mu);
  TierStats out = s.stats;
  out.objects = s.index.size();
  out.bytes_used = s.bytes_used;
  out.queue_objects = s.queue.size() + (s.in_flight ? 1 : 0);
  out.queue_bytes = s.queue_bytes;
  return out;
}

void DiskTier::WriterLoop() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  for (;;) {
    s.work_cv.wait(lock, [&] {
      return s.stop || (!s.queue.empty() && !s.writer_paused);
    });
    if (s.queue.empty()) return;  // stopping, and everything is stored
    s.in_flight = std::move(s.queue.front());
    s.queue.pop_front();
    s.queued.erase(s.in_flight->key);
    s.in_flight_cancelled = false;
    const bool last_queued = s.queue.empty();
    const BlockKey key = s.in_flight->key;
    const BlockKey parent = s.in_flight->parent;
    const std::shared_ptr<const std::vector<uint8_t>> bytes =
        s.in_flight->bytes;
    const uint64_t file_bytes = ObjectFileBytes(bytes->size());
    const std::vector<std::string> victims = s.Evict(file_bytes);

    // The I/O, outside mu: evictions, the temporary file, its publication.
    lock.unlock();
    std::vector<Status> failures;
    for (const std::string& victim : victims) {
      if (::unlink(victim.c_str()) != 0 && errno != ENOENT) {
        failures.push_back(ErrnoStatus("cannot delete", victim, errno));
      }
    }
    const std::string path = s.Path(key);
    const std::string tmp = path + std::string(kTempFileSuffix);
    Status status = s.MakeDir(unsigned(key.hi >> 56));
    if (status.ok()) status = s.io->WriteSynced(tmp, *bytes);
    if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
      status = ErrnoStatus("cannot rename into", path, errno);
    }
    if (status.ok()) {
      s.unsynced_dirs[unsigned(key.hi >> 56)] = true;
      ++s.unsynced_objects;
    } else {
      ::unlink(tmp.c_str());
      failures.push_back(status);
    }
    if (last_queued || s.unsynced_objects >= kDirSyncBatch) {
      for (Status& f : s.SyncDirs()) failures.push_back(std::move(f));
    }
    lock.lock();

    // Until now the key was in flight (Get served it from memory, Put
    // deduplicated it, Erase marked it cancelled), so nobody else touched
    // its file.
    if (status.ok() && !s.in_flight_cancelled) {
      s.Insert(key, parent, file_bytes);
      ++s.stats.writes;
      s.stats.bytes_written += bytes->size();
    } else {
      if (status.ok() && ::unlink(path.c_str()) != 0 && errno != ENOENT) {
        failures.push_back(ErrnoStatus("cannot delete", path, errno));
      }
      s.DropChild(parent, key);
    }
    for (const Status& f : failures) s.Fail(f);
    s.queue_bytes -= bytes->size();
    s.in_flight.reset();
    s.done_cv.notify_all();
  }
}

}  // namespace kvstash::store
