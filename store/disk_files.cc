#include "store/disk_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <system_error>
#include <utility>

#include "base/check.h"
#include "base/file.h"

namespace kvstash::store {
namespace {

constexpr size_t kKeyHexDigits = 32;

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

// Adds the object and temporary files of fan-out directory `path` (named
// `hh`) to `listing`.
Status ListSubdir(const std::string& path, std::string_view hh,
                  CacheDirListing* listing) {
  return ForEachEntry(path, [&](int dir_fd, const char* name_cstr) -> Status {
    const std::string_view name = name_cstr;
    BlockKey key;
    const bool temp = name.ends_with(kTempFileSuffix);
    const bool object =
        name.size() == kKeyHexDigits + kObjectFileSuffix.size() &&
        name.ends_with(kObjectFileSuffix) && name.starts_with(hh) &&
        ParseKeyHex(name.substr(0, kKeyHexDigits), &key);
    if (!temp && !object) return Status::OK();
    const std::string file = path + "/" + name_cstr;
    struct stat st;
    if (::fstatat(dir_fd, name_cstr, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus("cannot stat", file, errno);
    }
    if (temp && !S_ISDIR(st.st_mode)) {
      listing->temps.push_back({file, uint64_t(st.st_size)});
    } else if (object && S_ISREG(st.st_mode)) {
      listing->objects.push_back(
          {key, file, uint64_t(st.st_size),
           int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec});
    }
    return Status::OK();
  });
}

// Whether the header names the key of the file that holds it.
Status CheckKey(const ObjectHeader& header, const BlockKey& key,
                const std::string& path) {
  if (header.key == key) return Status::OK();
  return Status::Corruption("'" + path + "' holds the object of key " +
                            header.key.Hex());
}

// What the header says against the file that holds it.
Status CheckHeader(const ObjectHeader& header, const BlockKey& key,
                   uint64_t file_bytes, const std::string& path) {
  KV_RETURN_IF_ERROR(CheckKey(header, key, path));
  if (header.payload_bytes > file_bytes ||
      ObjectFileBytes(kObjectHeaderBytes + header.payload_bytes) !=
          file_bytes) {
    return Status::Corruption(
        "'" + path + "' has " + std::to_string(file_bytes) +
        " bytes, its object of " + std::to_string(header.payload_bytes) +
        " payload bytes takes " +
        std::to_string(
            ObjectFileBytes(kObjectHeaderBytes + header.payload_bytes)));
  }
  return Status::OK();
}

// The length of the verified object at the start of `file` (the whole
// object file of `key`).
Result<size_t> CheckObjectFile(std::span<const uint8_t> file,
                               const BlockKey& key, const std::string& path,
                               const ObjectAuthenticator& authenticator) {
  Result<ObjectHeader> header = ParseHeaderPrefix(file);
  if (!header.ok()) return header.status().WithPrefix("'" + path + "'");
  KV_RETURN_IF_ERROR(CheckHeader(*header, key, file.size(), path));
  const size_t object = kObjectHeaderBytes + size_t(header->payload_bytes);
  if (!std::all_of(file.begin() + ptrdiff_t(object), file.end(),
                   [](uint8_t b) { return b == 0; })) {
    return Status::Corruption("'" + path + "' has non-zero padding");
  }
  const Status intact = authenticator.Verify(file.first(object)).status();
  if (!intact.ok()) return intact.WithPrefix("'" + path + "'");
  return object;
}

// Creates `path` with `contents`, mode 0600, failing if anything is there.
Status CreatePrivateFile(const std::string& path, std::string_view contents) {
  Fd fd(::open(path.c_str(),
               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
               kCacheFileMode));
  if (fd.get() < 0) return ErrnoStatus("cannot create", path, errno);
  if (::write(fd.get(), contents.data(), contents.size()) !=
          ssize_t(contents.size()) ||
      ::fsync(fd.get()) != 0) {
    return ErrnoStatus("cannot write", path, errno);
  }
  if (fd.Close() != 0) return ErrnoStatus("cannot close", path, errno);
  return Status::OK();
}

}  // namespace

std::string ObjectFilePath(const std::string& dir, const BlockKey& key) {
  const std::string hex = key.Hex();
  return dir + "/" + hex.substr(0, 2) + "/" + hex +
         std::string(kObjectFileSuffix);
}

std::string DirKeyPath(const std::string& dir) { return dir + "/TIER_KEY"; }

Result<ObjectAuthenticator> DirKey(const std::string& dir, bool create) {
  const std::string path = DirKeyPath(dir);
  struct stat st;
  bool absent = ::lstat(path.c_str(), &st) != 0;
  if (absent && errno != ENOENT) return ErrnoStatus("cannot stat", path, errno);
  if (!absent && create && S_ISREG(st.st_mode) && st.st_size == 0) {
    // Left empty by a build that wrote the key in place and was killed
    // before the write: it holds no key, and nothing was sealed with it.
    if (::unlink(path.c_str()) != 0) {
      return ErrnoStatus("cannot remove the empty", path, errno);
    }
    absent = true;
  }
  if (absent) {
    if (!create) return Status::NotFound("no tier key at '" + path + "'");
    // Written whole to a temporary file, then linked into place (which
    // fails if another process made one meanwhile: that one is used), so
    // a kill -9 or a power cut never leaves a torn key.
    KV_ASSIGN_OR_RETURN(const std::string secret,
                        ObjectAuthenticator::NewSecret());
    const std::string temp = path + "." + std::to_string(::getpid()) + ".tmp";
    ::unlink(temp.c_str());  // a leftover of an earlier process of this pid
    KV_RETURN_IF_ERROR(CreatePrivateFile(temp, secret + "\n"));
    const bool linked = ::link(temp.c_str(), path.c_str()) == 0;
    const int link_errno = errno;
    ::unlink(temp.c_str());
    if (!linked && link_errno != EEXIST) {
      return ErrnoStatus("cannot create", path, link_errno);
    }
    KV_RETURN_IF_ERROR(SyncDir(dir));
  }
  KV_ASSIGN_OR_RETURN(const std::string secret, ReadSecretFile(path));
  Result<ObjectAuthenticator> key = ObjectAuthenticator::FromSecret(secret);
  if (!key.ok()) return key.status().WithPrefix("'" + path + "'");
  return key;
}

Status MakePrivateDir(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    return Status::IOError("cannot create directory '" + path +
                           "': " + ec.message());
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return ErrnoStatus("cannot stat", path, errno);
  }
  if ((st.st_mode & 07777) != kCacheDirMode &&
      ::chmod(path.c_str(), kCacheDirMode) != 0) {
    return ErrnoStatus("cannot make private (chmod 700)", path, errno);
  }
  return Status::OK();
}

Status SyncDir(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("cannot open", path, errno);
  if (::fsync(fd.get()) != 0) return ErrnoStatus("cannot sync", path, errno);
  return Status::OK();
}

Result<DirLock> DirLock::Acquire(const std::string& dir) {
  const std::string path = dir + "/LOCK";
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
               kCacheFileMode));
  if (fd.get() < 0) return ErrnoStatus("cannot open", path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return ErrnoStatus("cannot lock", path, errno);
    char pid[32] = {};
    const ssize_t n = ::pread(fd.get(), pid, sizeof(pid) - 1, 0);
    const std::string holder =
        n > 0 ? std::string(pid, size_t(n)) : std::string("unknown");
    return Status::Unavailable("disk cache directory '" + dir +
                               "' is in use (pid " + holder +
                               " holds the lock on '" + path + "')");
  }
  const std::string my_pid = std::to_string(::getpid());
  if (::ftruncate(fd.get(), 0) != 0 ||
      ::pwrite(fd.get(), my_pid.data(), my_pid.size(), 0) !=
          ssize_t(my_pid.size())) {
    return ErrnoStatus("cannot write", path, errno);
  }
  return DirLock(std::move(fd));
}

Result<CacheDirListing> ListCacheDir(const std::string& dir) {
  CacheDirListing listing;
  KV_RETURN_IF_ERROR(
      ForEachEntry(dir, [&](int dir_fd, const char* name) -> Status {
        unsigned b = 0;
        if (!ParseHexByte(name, &b)) return Status::OK();  // LOCK, foreign
        struct stat st;
        if (::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
          return ErrnoStatus("cannot stat", dir + "/" + name, errno);
        }
        if (!S_ISDIR(st.st_mode)) return Status::OK();
        listing.fanout_dirs[b] = true;
        return ListSubdir(dir + "/" + name, name, &listing);
      }));
  return listing;
}

// One file being read: its descriptor, the buffer the read fills, and what
// went wrong before the read (the read is skipped unless status is OK).
struct ObjectFileIo::FileRead {
  std::string path;
  Status status;
  Fd fd;
  uint64_t file_bytes = 0;        // as fstat saw it, where the caller asked
  AlignedBuffer* slot = nullptr;  // the reader's buffer the read fills
  ReadOp op;

  // Opens `file` for reading; false (and status set) when it cannot.
  bool Open(std::string file, bool direct) {
    path = std::move(file);
    fd = Fd(
        ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0)));
    if (fd.get() >= 0) return true;
    status = errno == ENOENT ? Status::NotFound("'" + path + "' vanished")
                             : ErrnoStatus("cannot open", path, errno);
    return false;
  }

  // Points `op` at the reader's `slot` (grown where too small) for reading
  // `want` bytes from the start of the file, in whole aligned blocks of up
  // to `length` bytes (as O_DIRECT needs; buffered reads take them too).
  void Prepare(uint64_t want, uint64_t length) {
    const uint64_t aligned = AlignUp(std::max<uint64_t>(length, 1));
    if (slot->size() < aligned) *slot = AlignedBuffer::Uninitialized(aligned);
    op = ReadOp{
        .fd = fd.get(), .dst = slot->data(), .length = aligned, .want = want};
  }
};

struct ObjectFileIo::Reader {
  std::unique_ptr<IoRing> ring;  // null: buffered, or the kernel refused
  std::vector<AlignedBuffer> buffers =
      std::vector<AlignedBuffer>(ObjectFileIo::kReadBatch);

  // Frees the buffers past the first kKeptReadBytes.
  void Trim() {
    size_t kept = 0;
    for (AlignedBuffer& b : buffers) {
      kept += b.size();
      if (kept > kKeptReadBytes) b = AlignedBuffer();
    }
  }
};

ObjectFileIo::ObjectFileIo(std::string dir, bool direct,
                           const ObjectAuthenticator& authenticator)
    : dir_(std::move(dir)), direct_(direct), authenticator_(authenticator) {}

ObjectFileIo::~ObjectFileIo() = default;

Result<std::unique_ptr<ObjectFileIo>> ObjectFileIo::Open(
    const std::string& dir, DiskTierOptions::DiskIo mode,
    const ObjectAuthenticator& authenticator) {
  bool direct = false;
  if (mode != DiskTierOptions::DiskIo::kBuffered) {
    const Status probe = ProbeDirectUring(dir);
    if (!probe.ok() && mode == DiskTierOptions::DiskIo::kDirectUring) {
      return probe.WithPrefix("disk cache '" + dir +
                              "': direct I/O through io_uring unavailable");
    }
    direct = probe.ok();
  }
  return std::unique_ptr<ObjectFileIo>(
      new ObjectFileIo(dir, direct, authenticator));
}

std::string_view ObjectFileIo::mode() const {
  return direct_ ? "direct+io_uring" : "buffered";
}

std::unique_ptr<ObjectFileIo::Reader> ObjectFileIo::TakeReader() {
  {
    const std::lock_guard<std::mutex> lock(readers_mu_);
    if (!free_readers_.empty()) {
      std::unique_ptr<Reader> reader = std::move(free_readers_.back());
      free_readers_.pop_back();
      return reader;
    }
  }
  return std::make_unique<Reader>();
}

void ObjectFileIo::GiveBack(std::unique_ptr<Reader> reader) {
  reader->Trim();
  const std::lock_guard<std::mutex> lock(readers_mu_);
  free_readers_.push_back(std::move(reader));
}

IoRing* ObjectFileIo::Ring(Reader& reader) const {
  if (direct_ && reader.ring == nullptr) {
    Result<std::unique_ptr<IoRing>> created = IoRing::Create(kReadBatch);
    if (created.ok()) reader.ring = std::move(created).value();
  }
  return reader.ring.get();
}

void ObjectFileIo::Run(Reader& reader, std::span<FileRead> files) {
  std::vector<ReadOp> ops;
  for (const FileRead& f : files) {
    if (f.status.ok()) ops.push_back(f.op);
  }
  if (IoRing* ring = Ring(reader)) {
    ring->ReadAll(ops);
  } else {
    ReadAllSync(ops);
  }
  size_t next = 0;
  for (FileRead& f : files) {
    if (f.status.ok()) f.op = ops[next++];
  }
}

template <typename T, typename Prepare, typename Finish>
std::vector<Result<T>> ObjectFileIo::ReadInBatches(size_t n, Prepare prepare,
                                                   Finish finish) {
  std::vector<Result<T>> out;
  out.reserve(n);
  std::unique_ptr<Reader> reader = TakeReader();
  for (size_t start = 0; start < n; start += kReadBatch) {
    std::vector<FileRead> reads(std::min<size_t>(kReadBatch, n - start));
    for (size_t i = 0; i < reads.size(); ++i) {
      reads[i].slot = &reader->buffers[i];
      prepare(start + i, reads[i]);
    }
    Run(*reader, reads);
    for (size_t i = 0; i < reads.size(); ++i) {
      FileRead& r = reads[i];
      if (r.status.ok() && r.op.error != 0) {
        r.status = ErrnoStatus("cannot read", r.path, r.op.error);
      }
      if (!r.status.ok()) {
        out.push_back(r.status);
        continue;
      }
      out.push_back(
          finish(start + i, r, std::span<const uint8_t>(r.op.dst, r.op.done)));
    }
  }
  GiveBack(std::move(reader));
  return out;
}

std::vector<Result<ObjectHeader>> ObjectFileIo::ReadHeaders(
    std::span<const ObjectFile> files) {
  return ReadInBatches<ObjectHeader>(
      files.size(),
      [&](size_t i, FileRead& r) {
        if (r.Open(files[i].path, direct_)) {
          r.Prepare(kObjectHeaderBytes, kObjectHeaderBytes);
        }
      },
      [&](size_t i, FileRead& r,
          std::span<const uint8_t> bytes) -> Result<ObjectHeader> {
        Result<ObjectHeader> header = ParseHeaderPrefix(bytes);
        if (!header.ok()) return header.status().WithPrefix("'" + r.path + "'");
        KV_RETURN_IF_ERROR(
            CheckHeader(*header, files[i].key, files[i].bytes, r.path));
        return header;
      });
}

std::vector<Result<size_t>> ObjectFileIo::ReadObjects(
    std::span<const BlockKey> keys, uint64_t max_file_bytes,
    const ObjectVisitor& visit) {
  return ReadInBatches<size_t>(
      keys.size(),
      [&](size_t i, FileRead& r) {
        if (!r.Open(ObjectFilePath(dir_, keys[i]), direct_)) return;
        struct stat st;
        if (::fstat(r.fd.get(), &st) != 0) {
          r.status = ErrnoStatus("cannot stat", r.path, errno);
        } else if (!S_ISREG(st.st_mode) ||
                   uint64_t(st.st_size) > max_file_bytes) {
          r.status = Status::Corruption(
              "'" + r.path + "' is not a regular file within capacity");
        } else {
          r.file_bytes = uint64_t(st.st_size);
          r.Prepare(r.file_bytes, r.file_bytes);
        }
      },
      [&](size_t i, FileRead& r,
          std::span<const uint8_t> bytes) -> Result<size_t> {
        if (bytes.size() < r.file_bytes) {
          return Status::Corruption("'" + r.path + "' shrank while read");
        }
        const std::span<const uint8_t> file = bytes.first(r.file_bytes);
        KV_ASSIGN_OR_RETURN(
            const size_t object,
            CheckObjectFile(file, keys[i], r.path, authenticator_));
        visit(i, file.first(object));
        return object;
      });
}

// Layer-ordered loads read ranges that are not 4096-aligned (a payload
// starts kObjectHeaderBytes into its file), so O_DIRECT cannot read them
// into their buffers. Measured with DiskTier::ReadRanges over 256 object
// files of 512 KiB (128 MiB; ext4 on a virtio disk with 8 MiB of
// readahead, 2 busy cores), a load being 4 calls of one 128 KiB range per
// object (8 of 64 KiB), the page cache dropped first; medians of 15 loads:
//   O_DIRECT + io_uring into bounce buffers, copied out:
//     108-122 ms a load (1.05-1.18 GB/s), first call 26-32 ms (64 KiB:
//     126 ms, 17 ms); the copy out is 1-2 ms of a 23-29 ms call
//   buffered pread straight into the buffers:
//     127-129 ms (1.0 GB/s), first call 101 ms (64 KiB: 149 ms, 91 ms):
//     readahead pulls whole files in on the first call, so the later calls
//     hit the page cache but the first layers wait for all of it
//   buffered, every range already in the page cache: 27-31 ms (64 KiB: 38)
// (a standalone pread loop and buffered reads through io_uring did no
// better: 109-168 ms a load). So the direct mode reads through bounce
// buffers: a cold load, as a cache below DRAM mostly serves, is as fast or
// faster and its first layers arrive 3-5x sooner, and KV bytes stay out of
// the page cache, which only a warm page cache would pay back.
std::vector<Status> ObjectFileIo::ReadRanges(
    std::span<const BlockKey> keys, std::span<const FileRange> ranges) {
  // File by file, by offset: a file is open only while its reads run, and
  // with O_DIRECT the ranges whose aligned blocks meet are read at once (a
  // header and the range after it, say).
  std::vector<size_t> order(ranges.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return std::pair(ranges[x].file, ranges[x].offset) <
           std::pair(ranges[y].file, ranges[y].offset);
  });
  // One read: bytes [from, to) of a file, holding ranges order[first, last).
  struct Read {
    size_t file;
    uint64_t from, to, end;  // end: that of the last range
    size_t first, last;
  };
  std::vector<Read> reads;
  std::vector<size_t> left(keys.size(), 0);  // per file, its reads to run
  for (size_t k = 0; k < order.size(); ++k) {
    const FileRange& range = ranges[order[k]];
    const uint64_t end = range.offset + range.into.size();
    const uint64_t from = direct_ ? AlignDown(range.offset) : range.offset;
    const uint64_t to = direct_ ? AlignUp(end) : end;
    if (direct_ && !reads.empty()) {
      Read& last = reads.back();
      if (last.file == range.file && from <= last.to &&
          std::max(to, last.to) - last.from <= kMaxMergedRead) {
        last.to = std::max(to, last.to);
        last.end = std::max(end, last.end);
        last.last = k + 1;
        continue;
      }
    }
    reads.push_back({range.file, from, to, end, k, k + 1});
    ++left[range.file];
  }

  std::vector<FileRead> files(keys.size());
  std::unique_ptr<Reader> reader = TakeReader();
  IoRing* const ring = Ring(*reader);
  std::vector<ReadOp> ops(reads.size());
  // With O_DIRECT, the reader's buffer each read fills, the first ones
  // taken first (Trim keeps those).
  std::vector<AlignedBuffer*> slot_of(reads.size(), nullptr);
  std::vector<AlignedBuffer*> free_slots;
  for (auto b = reader->buffers.rbegin(); b != reader->buffers.rend(); ++b) {
    free_slots.push_back(&*b);
  }
  uint64_t held = 0;  // bytes of the buffers of the reads in flight
  unsigned in_flight = 0;

  // Read r is done, or its file failed: copies its ranges out when it came
  // whole, frees its buffer, closes its file after the last of its reads.
  const auto finish = [&](size_t r) {
    const Read& read = reads[r];
    FileRead& f = files[read.file];
    const ReadOp& op = ops[r];
    if (f.status.ok()) {
      if (op.error != 0) {
        f.status = ErrnoStatus("cannot read", f.path, op.error);
      } else if (op.done < op.want) {
        f.status = Status::Corruption("'" + f.path + "' ends before byte " +
                                      std::to_string(read.end));
      } else if (direct_) {
        for (size_t k = read.first; k < read.last; ++k) {
          const FileRange& range = ranges[order[k]];
          const uint8_t* at = op.dst + (range.offset - read.from);
          std::copy(at, at + range.into.size(), range.into.begin());
        }
      }
    }
    if (--left[read.file] == 0) f.fd = Fd();
    if (AlignedBuffer* slot = slot_of[r]) {
      held -= op.length;
      free_slots.push_back(slot);
    }
  };

  size_t next = 0;
  while (next < reads.size() || in_flight > 0) {
    while (next < reads.size() && in_flight < kReadBatch) {
      const size_t r = next;
      const Read& read = reads[r];
      const uint64_t length = read.to - read.from;
      if (direct_ && in_flight > 0 && held + length > kKeptReadBytes) {
        break;  // until a read in flight gives its buffer back
      }
      ++next;
      FileRead& f = files[read.file];
      if (f.path.empty()) {
        f.Open(ObjectFilePath(dir_, keys[read.file]), direct_);
      }
      if (!f.status.ok()) {
        finish(r);
        continue;
      }
      uint8_t* dst = ranges[order[read.first]].into.data();
      if (direct_) {
        AlignedBuffer* slot = free_slots.back();
        free_slots.pop_back();
        if (slot->size() < length) *slot = AlignedBuffer::Uninitialized(length);
        slot_of[r] = slot;
        held += length;
        dst = slot->data();
      }
      ops[r] = ReadOp{.fd = f.fd.get(),
                      .dst = dst,
                      .offset = read.from,
                      .length = length,
                      .want = read.end - read.from};
      if (ring == nullptr) {
        ReadAllSync({&ops[r], 1});
        finish(r);
        continue;
      }
      ring->Start(&ops[r]);
      ++in_flight;
    }
    if (in_flight > 0) {
      const ReadOp* op = ring->Next();
      --in_flight;
      finish(size_t(op - ops.data()));
    }
  }
  GiveBack(std::move(reader));
  std::vector<Status> out;
  out.reserve(files.size());
  for (FileRead& f : files) out.push_back(std::move(f.status));
  return out;
}

Status ObjectFileIo::VerifyGathered(
    const BlockKey& key, std::span<const uint8_t> header,
    std::span<const std::span<const uint8_t>> payload) const {
  Result<ObjectHeader> verified =
      authenticator_.VerifyGathered(header, payload);
  const std::string path = ObjectFilePath(dir_, key);
  if (!verified.ok()) return verified.status().WithPrefix("'" + path + "'");
  return CheckKey(*verified, key, path);
}

Status ObjectFileIo::WriteSynced(const std::string& path,
                                 std::span<const uint8_t> object) const {
  // The file's bytes: the object, then zeros up to the alignment. A fresh
  // zeroed buffer per write cost the writer a page fault per 4 KiB.
  thread_local AlignedBuffer kept;
  const size_t file_bytes = ObjectFileBytes(object.size());
  AlignedBuffer once;  // for a file larger than kKeptWriteBytes
  if (kept.size() < file_bytes) {
    (file_bytes <= kKeptWriteBytes ? kept : once) =
        AlignedBuffer::Uninitialized(file_bytes);
  }
  const std::span<uint8_t> file =
      (once.size() > 0 ? once : kept).span().first(file_bytes);
  std::copy(object.begin(), object.end(), file.begin());
  std::fill(file.begin() + ptrdiff_t(object.size()), file.end(), uint8_t{0});
  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC |
                    (direct_ ? O_DIRECT : 0);
  Fd fd(::open(path.c_str(), flags, kCacheFileMode));
  if (fd.get() < 0 && errno == EEXIST && ::unlink(path.c_str()) == 0) {
    fd = Fd(::open(path.c_str(), flags, kCacheFileMode));
  }
  if (fd.get() < 0) return ErrnoStatus("cannot create", path, errno);
  size_t done = 0;
  while (done < file.size()) {
    const ssize_t n =
        ::pwrite(fd.get(), file.data() + done, file.size() - done, off_t(done));
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

}  // namespace kvstash::store
