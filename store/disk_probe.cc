#include "store/disk_probe.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <memory>
#include <vector>

#include "store/disk_io.h"

namespace kvstash::store {
namespace {

constexpr uint64_t kRequestBytes = uint64_t{1} << 20;
constexpr unsigned kQueueDepth = 8;

// A file name whose file is deleted when the name goes out of scope.
struct ScratchFile {
  std::string path;
  ~ScratchFile() { ::unlink(path.c_str()); }
};

// Writes `bytes` (a multiple of kRequestBytes or not) of non-zero data to a
// new file at `path`, syncs it and asks the kernel to drop its pages.
Status WriteScratchFile(const std::string& path, uint64_t bytes) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoStatus("cannot create", path, errno);
  std::vector<uint8_t> chunk(kRequestBytes);
  for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = uint8_t(i * 131 + 7);
  for (uint64_t done = 0; done < bytes;) {
    const size_t n = size_t(std::min<uint64_t>(chunk.size(), bytes - done));
    const ssize_t w = ::pwrite(fd.get(), chunk.data(), n, off_t(done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", path, errno);
    }
    done += uint64_t(w);
  }
  if (::fdatasync(fd.get()) != 0) {
    return ErrnoStatus("cannot sync", path, errno);
  }
  // Advice only: a kernel that keeps the pages makes a buffered figure
  // optimistic, which `direct` tells apart.
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);
  if (fd.Close() != 0) return ErrnoStatus("cannot close", path, errno);
  return Status::OK();
}

// Reads a file of `file_bytes` through `fd` from start to end, a request of
// up to kRequestBytes per buffer in `buffers`, as many in flight as there are
// buffers when `ring` is given, else one at a time.
class SequentialReader {
 public:
  SequentialReader(int fd, const std::string& path, uint64_t file_bytes)
      : fd_(fd), path_(path), file_bytes_(file_bytes) {}

  Status Run(IoRing* ring, std::vector<AlignedBuffer>& buffers) {
    std::vector<ReadOp> ops(buffers.size());
    for (size_t i = 0; i < ops.size(); ++i) {
      ops[i].fd = fd_;
      ops[i].dst = buffers[i].data();
    }
    if (ring == nullptr) {
      while (Aim(&ops[0])) {
        ReadAllSync({&ops[0], 1});
        Account(ops[0]);
      }
      return status_;
    }
    for (ReadOp& op : ops) {
      if (Aim(&op)) ring->Start(&op);
    }
    while (ring->in_flight() > 0) {  // drained even after an error
      ReadOp* op = ring->Next();
      Account(*op);
      if (status_.ok() && Aim(op)) ring->Start(op);
    }
    return status_;
  }

 private:
  // Points `op` at the next request; false when the file is all requested.
  bool Aim(ReadOp* op) {
    if (next_ == file_bytes_) return false;
    op->offset = next_;
    op->length = std::min(kRequestBytes, file_bytes_ - next_);
    op->want = op->length;
    next_ += op->length;
    return true;
  }

  void Account(const ReadOp& op) {
    if (!status_.ok()) return;
    if (op.error != 0) {
      status_ = ErrnoStatus("cannot read", path_, op.error);
    } else if (op.done < op.want) {
      status_ = Status::IOError("'" + path_ + "' shrank while read");
    }
  }

  const int fd_;
  const std::string& path_;
  const uint64_t file_bytes_;
  uint64_t next_ = 0;
  Status status_;
};

}  // namespace

Result<DiskProbeResult> DirectSequentialReadProbe(const std::string& dir,
                                                  uint64_t bytes) {
  if (bytes == 0) {
    return Status::InvalidArgument("disk probe of '" + dir + "': 0 bytes");
  }
  const uint64_t file_bytes = AlignUp(bytes);
  const ScratchFile scratch{dir + "/kvstash-read-probe." +
                            std::to_string(::getpid()) + ".tmp"};
  const std::string& path = scratch.path;
  KV_RETURN_IF_ERROR(WriteScratchFile(path, file_bytes));

  DiskProbeResult result;
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT));
  result.direct = fd.get() >= 0;
  if (!result.direct && errno == EINVAL) {
    fd = Fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  }
  if (fd.get() < 0) return ErrnoStatus("cannot open", path, errno);
  std::vector<AlignedBuffer> buffers;
  for (unsigned i = 0; i < kQueueDepth; ++i) {
    buffers.emplace_back(kRequestBytes);
  }
  Result<std::unique_ptr<IoRing>> ring = IoRing::Create(kQueueDepth);

  const auto start = std::chrono::steady_clock::now();
  SequentialReader reader(fd.get(), path, file_bytes);
  KV_RETURN_IF_ERROR(reader.Run(ring.ok() ? ring->get() : nullptr, buffers));
  const std::chrono::duration<double> seconds =
      std::chrono::steady_clock::now() - start;
  result.bytes_per_second =
      double(file_bytes) / std::max(seconds.count(), 1e-9);
  return result;
}

}  // namespace kvstash::store
