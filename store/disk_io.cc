#include "store/disk_io.h"

#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>
#include <thread>
#include <utility>

#include "base/check.h"

namespace kvstash::store {
namespace {

// Longest single request: io_uring takes 32-bit lengths, and a shorter
// request is continued like any short read.
constexpr uint64_t kMaxRequest = uint64_t{1} << 30;

uint64_t RequestBytes(const ReadOp& op) {
  return std::min(op.length - op.done, kMaxRequest);
}

}  // namespace

Status ErrnoStatus(std::string_view what, const std::string& path, int err) {
  return Status::IOError(std::string(what) + " '" + path +
                         "': " + std::strerror(err));
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

int Fd::Close() {
  const int rc = ::close(fd_);
  fd_ = -1;
  return rc;
}

void AlignedBuffer::Free::operator()(uint8_t* p) const {
  ::operator delete(p, std::align_val_t(kDirectIoAlign));
}

AlignedBuffer::AlignedBuffer(size_t size) : AlignedBuffer(Uninitialized(size)) {
  std::memset(data_.get(), 0, size);
}

AlignedBuffer AlignedBuffer::Uninitialized(size_t size) {
  KV_CHECK(size > 0 && size % kDirectIoAlign == 0);
  AlignedBuffer b;
  b.data_.reset(static_cast<uint8_t*>(
      ::operator new(size, std::align_val_t(kDirectIoAlign))));
  b.size_ = size;
  return b;
}

void ReadAllSync(std::span<ReadOp> ops) {
  for (ReadOp& op : ops) {
    KV_CHECK(op.want <= op.length);
    op.done = 0;
    op.error = 0;
    do {
      const ssize_t n = ::pread(op.fd, op.dst + op.done, RequestBytes(op),
                                off_t(op.offset + op.done));
      if (n < 0) {
        if (errno == EINTR) continue;
        op.error = errno;
        break;
      }
      if (n == 0) break;
      op.done += uint64_t(n);
    } while (op.done < op.want);
  }
}

Result<std::unique_ptr<IoRing>> IoRing::Create(unsigned depth) {
  KV_CHECK(depth > 0);
  auto ring = std::make_unique<io_uring>();
  const int rc = io_uring_queue_init(depth, ring.get(), 0);
  if (rc < 0) {
    return Status::NotSupported(
        std::string("io_uring unavailable: io_uring_queue_init: ") +
        std::strerror(-rc));
  }
  return std::unique_ptr<IoRing>(new IoRing(std::move(ring), depth));
}

IoRing::IoRing(std::unique_ptr<io_uring> ring, unsigned depth)
    : ring_(std::move(ring)), depth_(depth) {}

IoRing::~IoRing() {
  KV_CHECK(in_flight_ == 0);
  io_uring_queue_exit(ring_.get());
}

void IoRing::Queue(ReadOp* op) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  // The ring has >= depth() entries, and each op in flight holds at most
  // one of them.
  KV_CHECK(sqe != nullptr);
  io_uring_prep_read(sqe, op->fd, op->dst + op->done,
                     unsigned(RequestBytes(*op)), op->offset + op->done);
  io_uring_sqe_set_data(sqe, op);
}

void IoRing::Start(ReadOp* op) {
  KV_CHECK(in_flight_ < depth_);
  KV_CHECK(op->want <= op->length);
  op->done = 0;
  op->error = 0;
  Queue(op);
  ++in_flight_;
}

ReadOp* IoRing::Next() {
  KV_CHECK(in_flight_ > 0);
  for (;;) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(ring_.get(), &cqe) != 0) {
      const int rc = io_uring_submit_and_wait(ring_.get(), 1);
      if (rc < 0 && rc != -EINTR) {
        // Queued entries stay queued; anything else is a misuse of the ring
        // that cannot be undone while reads are in flight.
        KV_CHECK_MSG(rc == -EAGAIN || rc == -EBUSY || rc == -ENOMEM,
                     "io_uring_enter failed");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      continue;
    }
    ReadOp* op = static_cast<ReadOp*>(io_uring_cqe_get_data(cqe));
    const int res = cqe->res;
    io_uring_cqe_seen(ring_.get(), cqe);
    if (res == -EINTR) {
      Queue(op);
      continue;
    }
    if (res < 0) {
      op->error = -res;
    } else {
      op->done += uint64_t(res);
      if (res > 0 && op->done < op->want) {
        Queue(op);
        continue;
      }
    }
    --in_flight_;
    return op;
  }
}

void IoRing::ReadAll(std::span<ReadOp> ops) {
  size_t next = 0;
  while (next < ops.size() || in_flight_ > 0) {
    while (next < ops.size() && in_flight_ < depth_) Start(&ops[next++]);
    Next();
  }
}

Status ProbeDirectUring(const std::string& dir) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<IoRing> ring, IoRing::Create(1));
  const std::string path = dir + "/DIRECT_IO_PROBE";
  Fd fd(::open(path.c_str(),
               O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_NOFOLLOW | O_CLOEXEC,
               0600));
  if (fd.get() < 0) {
    if (errno == EINVAL) {
      return Status::NotSupported("the file system of '" + dir +
                                  "' refuses O_DIRECT");
    }
    return ErrnoStatus("cannot create", path, errno);
  }
  AlignedBuffer written(kDirectIoAlign);
  AlignedBuffer read(kDirectIoAlign);
  for (size_t i = 0; i < written.size(); ++i) written.data()[i] = uint8_t(i);
  const ssize_t n = ::pwrite(fd.get(), written.data(), written.size(), 0);
  const int write_errno = errno;
  ReadOp op{.fd = fd.get(),
            .dst = read.data(),
            .length = read.size(),
            .want = read.size()};
  if (n == ssize_t(written.size())) ring->ReadAll({&op, 1});
  fd.Close();
  ::unlink(path.c_str());
  if (n != ssize_t(written.size())) {
    return Status::NotSupported(
        "O_DIRECT write to '" + path +
        "' failed: " + (n < 0 ? std::strerror(write_errno) : "short write"));
  }
  if (op.error != 0 || op.done != read.size() ||
      std::memcmp(read.data(), written.data(), read.size()) != 0) {
    return Status::NotSupported(
        "O_DIRECT read through io_uring of '" + path + "' failed: " +
        (op.error != 0 ? std::strerror(op.error) : "wrong bytes"));
  }
  return Status::OK();
}

}  // namespace kvstash::store
