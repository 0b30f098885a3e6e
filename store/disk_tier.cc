#include "store/disk_tier.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "base/check.h"
#include "store/object_format.h"

namespace kvstash::store {
namespace {

constexpr std::string_view kObjectSuffix = ".kvo";
constexpr std::string_view kTempSuffix = ".tmp";
constexpr size_t kKeyHexDigits = 32;

Status ErrnoStatus(std::string_view what, const std::string& path, int err) {
  return Status::IOError(std::string(what) + " '" + path +
                         "': " + std::strerror(err));
}

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now and reports the result; the destructor then does nothing.
  int Close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

std::string HexByte(unsigned b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  return {kDigits[b >> 4], kDigits[b & 15]};
}

// A lowercase hex digit (the case Hash128::Hex() writes).
bool HexDigit(char c, unsigned* digit) {
  if (c >= '0' && c <= '9') {
    *digit = unsigned(c - '0');
  } else if (c >= 'a' && c <= 'f') {
    *digit = unsigned(c - 'a' + 10);
  } else {
    return false;
  }
  return true;
}

// A fan-out directory name: two lowercase hex digits.
bool ParseHexByte(std::string_view name, unsigned* b) {
  unsigned hi, lo;
  if (name.size() != 2 || !HexDigit(name[0], &hi) || !HexDigit(name[1], &lo)) {
    return false;
  }
  *b = hi << 4 | lo;
  return true;
}

// Inverse of Hash128::Hex(): exactly 32 lowercase hex digits, hi then lo.
bool ParseKeyHex(std::string_view hex, BlockKey* key) {
  if (hex.size() != kKeyHexDigits) return false;
  uint64_t half[2] = {0, 0};
  for (size_t i = 0; i < kKeyHexDigits; ++i) {
    unsigned digit;
    if (!HexDigit(hex[i], &digit)) return false;
    half[i / 16] = half[i / 16] << 4 | digit;
  }
  key->hi = half[0];
  key->lo = half[1];
  return true;
}

// Calls fn(directory fd, entry name) for the entries of `path` but "." and
// "..", in directory order, stopping at the first error.
template <typename F>
Status ForEachEntry(const std::string& path, F fn) {
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return ErrnoStatus("cannot list", path, errno);
  const std::unique_ptr<DIR, int (*)(DIR*)> closer(d, ::closedir);
  for (;;) {
    errno = 0;
    const dirent* ent = ::readdir(d);
    if (ent == nullptr) {
      if (errno != 0) return ErrnoStatus("cannot list", path, errno);
      return Status::OK();
    }
    const std::string_view name = ent->d_name;
    if (name == "." || name == "..") continue;
    KV_RETURN_IF_ERROR(fn(::dirfd(d), ent->d_name));
  }
}

// An object file found by Open.
struct Found {
  BlockKey key;
  uint64_t bytes;
  int64_t mtime_ns;
};

// Indexes the objects of fan-out directory `path` (named `hh`) into `found`
// and deletes the temporary files a killed writer left there. Other entries
// are left alone.
Status ScanSubdir(const std::string& path, std::string_view hh,
                  std::vector<Found>* found) {
  return ForEachEntry(path, [&](int dir_fd, const char* name_cstr) -> Status {
    const std::string_view name = name_cstr;
    if (name.ends_with(kTempSuffix)) {
      if (::unlinkat(dir_fd, name_cstr, 0) != 0 && errno != ENOENT) {
        return ErrnoStatus("cannot delete", path + "/" + name_cstr, errno);
      }
      return Status::OK();
    }
    BlockKey key;
    if (name.size() != kKeyHexDigits + kObjectSuffix.size() ||
        !name.ends_with(kObjectSuffix) || !name.starts_with(hh) ||
        !ParseKeyHex(name.substr(0, kKeyHexDigits), &key)) {
      return Status::OK();
    }
    struct stat st;
    if (::fstatat(dir_fd, name_cstr, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus("cannot stat", path + "/" + name_cstr, errno);
    }
    if (S_ISREG(st.st_mode)) {
      found->push_back(
          {key, uint64_t(st.st_size),
           int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec});
    }
    return Status::OK();
  });
}

// Writes `bytes` to a new file at `path` and fdatasyncs it.
Status WriteFileSynced(const std::string& path,
                       const std::vector<uint8_t>& bytes) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoStatus("cannot create", path, errno);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pwrite(fd.get(), bytes.data() + done,
                               bytes.size() - done, off_t(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", path, errno);
    }
    done += size_t(n);
  }
  if (::fdatasync(fd.get()) != 0) {
    return ErrnoStatus("cannot sync", path, errno);
  }
  if (fd.Close() != 0) return ErrnoStatus("cannot close", path, errno);
  return Status::OK();
}

// Reads and verifies the object file of `key`: NotFound when the file is
// gone, IOError when it cannot be read, Corruption when it is not an intact
// object of `key` (or is larger than `max_bytes`, which no stored object is).
Result<std::vector<uint8_t>> ReadObjectFile(const std::string& path,
                                            const BlockKey& key,
                                            uint64_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return Status::NotFound("'" + path + "' vanished");
    return ErrnoStatus("cannot open", path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return ErrnoStatus("cannot stat", path, errno);
  }
  if (!S_ISREG(st.st_mode) || uint64_t(st.st_size) > max_bytes) {
    return Status::Corruption("'" + path +
                              "' is not a regular file within capacity");
  }
  std::vector<uint8_t> bytes(size_t(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(fd.get(), bytes.data() + done,
                              bytes.size() - done, off_t(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot read", path, errno);
    }
    if (n == 0) return Status::Corruption("'" + path + "' shrank while read");
    done += size_t(n);
  }
  Result<ObjectView> view = ParseObject(bytes);
  if (!view.ok()) return view.status().WithPrefix("'" + path + "'");
  if (view->header.key != key) {
    return Status::Corruption("'" + path + "' holds the object of key " +
                              view->header.key.Hex());
  }
  return bytes;
}

}  // namespace

struct DiskTier::State {
  struct Entry {
    uint64_t bytes = 0;
    uint64_t seq = 0;  // distinguishes a re-stored key from the one read
    std::list<BlockKey>::iterator lru;
  };
  struct Write {
    BlockKey key;
    std::shared_ptr<const std::vector<uint8_t>> bytes;
    uint64_t ticket = 0;  // order of acceptance, for Flush
  };

  DiskTierOptions options;
  int lock_fd = -1;
  std::thread writer;
  // Fan-out directories known to exist (created on first write). Set by
  // Open, then used by the writer thread only.
  std::bitset<256> made_dirs;

  mutable std::mutex mu;
  std::condition_variable work_cv;  // queue non-empty, or stop
  std::condition_variable done_cv;  // a queued write finished or went away
  // Guarded by mu. Invariant: index and lru hold the same keys, and the
  // directory holds exactly the files of index, except for the files of the
  // write in flight and of the victims it evicted (see Evict).
  std::unordered_map<BlockKey, Entry, Hash128Hasher> index;
  std::list<BlockKey> lru;  // front = most recently used
  uint64_t bytes_used = 0;
  uint64_t next_seq = 0;
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
  TierStats stats;  // counters only; occupancy is filled in by Stats()

  std::string Path(const BlockKey& key) const {
    const std::string hex = key.Hex();
    return options.dir + "/" + hex.substr(0, 2) + "/" + hex +
           std::string(kObjectSuffix);
  }

  // Creates fan-out directory `b` unless it is known to exist. Writer
  // thread only.
  Status MakeDir(unsigned b) {
    if (made_dirs[b]) return Status::OK();
    const std::string sub = options.dir + "/" + HexByte(b);
    if (::mkdir(sub.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoStatus("cannot create", sub, errno);
    }
    made_dirs[b] = true;
    return Status::OK();
  }

  void Fail(const Status& s) {
    ++stats.errors;
    stats.last_error = s.ToString();
  }

  void Touch(Entry& e) { lru.splice(lru.begin(), lru, e.lru); }

  void Insert(const BlockKey& key, uint64_t bytes) {
    KV_CHECK(!index.contains(key));
    lru.push_front(key);
    index.emplace(key, Entry{bytes, next_seq++, lru.begin()});
    bytes_used += bytes;
  }

  // Drops `key` from the index and deletes its file. REQUIRES: mu held,
  // key indexed.
  Status Remove(const BlockKey& key) {
    auto it = index.find(key);
    KV_CHECK(it != index.end());
    bytes_used -= it->second.bytes;
    lru.erase(it->second.lru);
    index.erase(it);
    const std::string path = Path(key);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      const Status s = ErrnoStatus("cannot delete", path, errno);
      Fail(s);
      return s;
    }
    return Status::OK();
  }

  // Drops least recently used objects from the index until `incoming` more
  // bytes fit, and returns their files for the caller to delete. Deleting
  // outside mu is safe for the writer thread: a dropped key is no longer
  // indexed (Get and Erase leave its file alone), and only the writer
  // publishes files, so none can reappear under a victim's name before the
  // writer has deleted it. REQUIRES: mu held, incoming <= capacity.
  std::vector<std::string> Evict(uint64_t incoming) {
    std::vector<std::string> victims;
    while (bytes_used + incoming > options.capacity_bytes) {
      KV_CHECK(!lru.empty());
      const BlockKey key = lru.back();
      auto it = index.find(key);
      bytes_used -= it->second.bytes;
      lru.pop_back();
      index.erase(it);
      victims.push_back(Path(key));
      ++stats.evictions;
    }
    return victims;
  }

  bool Pending(const BlockKey& key) const {
    return queued.contains(key) ||
           (in_flight && in_flight->key == key && !in_flight_cancelled);
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
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) {
    return Status::IOError("cannot create disk cache directory '" +
                           options.dir + "': " + ec.message());
  }

  auto state = std::make_unique<State>();
  state->options = options;
  const std::string lock_path = options.dir + "/LOCK";
  const int lock_fd =
      ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return ErrnoStatus("cannot open", lock_path, errno);
  // From here on the tier owns lock_fd (closed by ~DiskTier, which the
  // error returns below run through).
  state->lock_fd = lock_fd;
  std::unique_ptr<DiskTier> tier(new DiskTier(std::move(state)));
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      return ErrnoStatus("cannot lock", lock_path, errno);
    }
    char pid[32] = {};
    const ssize_t n = ::pread(lock_fd, pid, sizeof(pid) - 1, 0);
    const std::string holder =
        n > 0 ? std::string(pid, size_t(n)) : std::string("unknown");
    return Status::Unavailable(
        "disk cache directory '" + options.dir + "' is already open (pid " +
        holder + " holds the lock on '" + lock_path +
        "'); give each kvstash process its own directory");
  }
  const std::string my_pid = std::to_string(::getpid());
  if (::ftruncate(lock_fd, 0) != 0 ||
      ::pwrite(lock_fd, my_pid.data(), my_pid.size(), 0) !=
          ssize_t(my_pid.size())) {
    return ErrnoStatus("cannot write", lock_path, errno);
  }

  State& s = *tier->state_;
  std::vector<Found> found;
  KV_RETURN_IF_ERROR(
      ForEachEntry(options.dir, [&](int dir_fd, const char* name) -> Status {
        unsigned b = 0;
        struct stat st;
        if (!ParseHexByte(name, &b)) return Status::OK();  // LOCK, foreign
        if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
          return ErrnoStatus("cannot stat", options.dir + "/" + name, errno);
        }
        if (!S_ISDIR(st.st_mode)) return Status::OK();
        s.made_dirs[b] = true;
        return ScanSubdir(options.dir + "/" + name, name, &found);
      }));
  std::sort(found.begin(), found.end(), [](const Found& x, const Found& y) {
    return x.mtime_ns < y.mtime_ns;
  });
  for (const Found& f : found) s.Insert(f.key, f.bytes);  // newest at front
  for (const std::string& victim : s.Evict(0)) {
    if (::unlink(victim.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus("cannot delete", victim, errno);
    }
  }
  tier->state_->writer = std::thread([t = tier.get()] { t->WriterLoop(); });
  return tier;
}

DiskTier::DiskTier(std::unique_ptr<State> state) : state_(std::move(state)) {}

DiskTier::~DiskTier() {
  State& s = *state_;
  if (s.writer.joinable()) {
    {
      const std::lock_guard<std::mutex> lock(s.mu);
      s.stop = true;
    }
    s.work_cv.notify_all();
    s.writer.join();
  }
  if (s.lock_fd >= 0) ::close(s.lock_fd);
}

std::string DiskTier::ObjectPath(const BlockKey& key) const {
  return state_->Path(key);
}

Status DiskTier::Put(const BlockKey& key, std::vector<uint8_t> object) {
  State& s = *state_;
  Result<ObjectHeader> header = ParseObjectHeader(object);
  if (!header.ok()) {
    return Status::InvalidArgument(
        "disk cache Put of " + key.Hex() +
        ": not an object: " + header.status().message());
  }
  if (header->key != key) {
    return Status::InvalidArgument("disk cache Put of " + key.Hex() +
                                   ": the object's key is " +
                                   header->key.Hex());
  }
  const uint64_t size = object.size();
  const std::lock_guard<std::mutex> lock(s.mu);
  if (auto it = s.index.find(key); it != s.index.end()) {
    s.Touch(it->second);
    return Status::OK();
  }
  if (s.Pending(key)) return Status::OK();
  if (size > s.options.capacity_bytes) {
    ++s.stats.dropped_writes;
    return Status::ResourceExhausted("disk cache '" + s.options.dir +
                                     "': object of " + std::to_string(size) +
                                     " bytes exceeds the capacity of " +
                                     std::to_string(s.options.capacity_bytes));
  }
  if (s.queue_bytes + size > s.options.max_queue_bytes) {
    ++s.stats.dropped_writes;
    return Status::ResourceExhausted(
        "disk cache '" + s.options.dir + "': write queue full (" +
        std::to_string(s.queue_bytes) + " bytes queued)");
  }
  s.queue.push_back(
      {key, std::make_shared<const std::vector<uint8_t>>(std::move(object)),
       ++s.last_ticket});
  s.queued.emplace(key, std::prev(s.queue.end()));
  s.queue_bytes += size;
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
    Result<std::vector<uint8_t>> bytes = Status::Internal("not read");
  };
  std::vector<FileRead> reads;
  std::vector<std::pair<size_t, std::shared_ptr<const std::vector<uint8_t>>>>
      queued;
  {
    const std::lock_guard<std::mutex> lock(s.mu);
    for (size_t i = keys.size(); i-- > 0;) {
      if (auto it = s.index.find(keys[i]); it != s.index.end()) {
        s.Touch(it->second);
        reads.push_back({i, it->second.seq});
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
  for (FileRead& r : reads) {
    r.bytes =
        ReadObjectFile(s.Path(keys[r.i]), keys[r.i], s.options.capacity_bytes);
  }

  const std::lock_guard<std::mutex> lock(s.mu);
  for (FileRead& r : reads) {
    if (r.bytes.ok()) {
      ++s.stats.hits;
      s.stats.bytes_read += r.bytes->size();
      out[r.i] = std::move(r.bytes).value();
      continue;
    }
    ++s.stats.misses;
    const Status& error = r.bytes.status();
    const auto it = s.index.find(keys[r.i]);
    // Otherwise the object was evicted or erased while being read.
    const bool same = it != s.index.end() && it->second.seq == r.seq;
    if (error.code() == StatusCode::kCorruption) {
      if (same) {
        ++s.stats.corrupt_dropped;
        s.stats.last_error = error.ToString();
        (void)s.Remove(keys[r.i]);  // a failure is counted
      }
    } else if (error.code() == StatusCode::kNotFound) {
      if (same) {  // deleted behind the tier's back
        s.Fail(error);
        (void)s.Remove(keys[r.i]);
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
    s.work_cv.wait(lock, [&] { return s.stop || !s.queue.empty(); });
    if (s.queue.empty()) return;  // stopping, and everything is stored
    s.in_flight = std::move(s.queue.front());
    s.queue.pop_front();
    s.queued.erase(s.in_flight->key);
    s.in_flight_cancelled = false;
    const BlockKey key = s.in_flight->key;
    const std::shared_ptr<const std::vector<uint8_t>> bytes =
        s.in_flight->bytes;
    const std::vector<std::string> victims = s.Evict(bytes->size());

    // The I/O, outside mu: evictions, the temporary file, its publication.
    lock.unlock();
    std::vector<Status> failures;
    for (const std::string& victim : victims) {
      if (::unlink(victim.c_str()) != 0 && errno != ENOENT) {
        failures.push_back(ErrnoStatus("cannot delete", victim, errno));
      }
    }
    const std::string path = s.Path(key);
    const std::string tmp = path + std::string(kTempSuffix);
    Status status = s.MakeDir(unsigned(key.hi >> 56));
    if (status.ok()) status = WriteFileSynced(tmp, *bytes);
    if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
      status = ErrnoStatus("cannot rename into", path, errno);
    }
    if (!status.ok()) {
      ::unlink(tmp.c_str());
      failures.push_back(status);
    }
    lock.lock();

    // Until now the key was in flight (Get served it from memory, Put
    // deduplicated it, Erase marked it cancelled), so nobody else touched
    // its file.
    if (status.ok()) {
      if (s.in_flight_cancelled) {
        if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
          failures.push_back(ErrnoStatus("cannot delete", path, errno));
        }
      } else {
        s.Insert(key, bytes->size());
        ++s.stats.writes;
        s.stats.bytes_written += bytes->size();
      }
    }
    for (const Status& f : failures) s.Fail(f);
    s.queue_bytes -= bytes->size();
    s.in_flight.reset();
    s.done_cv.notify_all();
  }
}

}  // namespace kvstash::store
