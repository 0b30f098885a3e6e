// Low-level file I/O under the disk tier, its maintenance tools and the disk
// probe: 4096-aligned buffers for O_DIRECT, an io_uring ring that keeps a
// window of reads in flight (a batch of reads costs one submission, not one
// system call per read), and the pread loop that replaces the ring where the
// kernel refuses io_uring.
//
// O_DIRECT asks the caller to align buffer addresses, file offsets and
// request lengths to the device's logical block size; everything here uses
// kDirectIoAlign (4096, the largest logical block size of common devices),
// so a request valid for O_DIRECT is valid for buffered I/O too. A read may
// ask for more bytes than the file holds (up to the next aligned length):
// it stops at the end of the file.
//
// Internal to store/. Thread-compatible: an IoRing is used by one thread at
// a time (callers that share one serialize on their own); the free
// functions are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"

struct io_uring;  // liburing's ring, kept out of this header

namespace kvstash::store {

inline constexpr uint64_t kDirectIoAlign = 4096;

// `n` rounded up to a multiple of kDirectIoAlign.
constexpr uint64_t AlignUp(uint64_t n) {
  return (n + kDirectIoAlign - 1) / kDirectIoAlign * kDirectIoAlign;
}
// `n` rounded down to a multiple of kDirectIoAlign.
constexpr uint64_t AlignDown(uint64_t n) {
  return n / kDirectIoAlign * kDirectIoAlign;
}

// IOError "<what> '<path>': <strerror(err)>".
Status ErrnoStatus(std::string_view what, const std::string& path, int err);

// Closes a file descriptor when it goes out of scope. Movable.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  Fd& operator=(Fd&& other) noexcept;
  int get() const { return fd_; }
  // Closes now and returns close()'s result; the destructor then does
  // nothing.
  int Close();

 private:
  int fd_;
};

// Bytes at a kDirectIoAlign-aligned address, zero-filled unless made by
// Uninitialized. Movable.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // REQUIRES: size > 0 and a multiple of kDirectIoAlign.
  explicit AlignedBuffer(size_t size);
  // A buffer whose bytes are whatever the allocator left: for reads that
  // overwrite what they use (zeroing a read target costs as much as the
  // copy out of it). REQUIRES as the constructor.
  static AlignedBuffer Uninitialized(size_t size);
  uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  std::span<uint8_t> span() const { return {data_.get(), size_}; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

// One read: up to `length` bytes of `fd` from `offset` into `dst`, continued
// after short transfers until at least `want` bytes (<= length) arrived, the
// file ended, or a read failed. With an O_DIRECT `fd`, dst, offset and length
// must be multiples of kDirectIoAlign.
struct ReadOp {
  int fd = -1;
  uint8_t* dst = nullptr;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t want = 0;
  // Results: bytes read (below `want` only at the end of the file or after
  // an error) and the errno of a failed read, or 0.
  uint64_t done = 0;
  int error = 0;
};

// Runs `ops` one after the other with pread.
void ReadAllSync(std::span<ReadOp> ops);

// An io_uring instance with room for depth() reads in flight.
class IoRing {
 public:
  // NotSupported naming the reason when the kernel refuses a ring (no
  // io_uring, a seccomp filter, a resource limit).
  static Result<std::unique_ptr<IoRing>> Create(unsigned depth);
  // REQUIRES: in_flight() == 0 (a read in flight would land in freed
  // memory).
  ~IoRing();
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  unsigned depth() const { return depth_; }
  unsigned in_flight() const { return in_flight_; }

  // Queues `op` (its results reset); it is submitted by the next call of
  // Next. REQUIRES: in_flight() < depth(); `op` and its buffer stay valid
  // until Next returns it.
  void Start(ReadOp* op);
  // Submits what Start queued and waits until one started op is finished,
  // resubmitting short and interrupted reads meanwhile; returns that op.
  // REQUIRES: in_flight() > 0.
  ReadOp* Next();
  // Runs `ops` with up to depth() of them in flight at once.
  void ReadAll(std::span<ReadOp> ops);

 private:
  IoRing(std::unique_ptr<io_uring> ring, unsigned depth);
  // Puts the rest of `op` into a submission queue entry.
  void Queue(ReadOp* op);

  std::unique_ptr<io_uring> ring_;
  unsigned depth_;
  unsigned in_flight_ = 0;  // started and not yet returned by Next
};

// Whether reads of `dir` can use O_DIRECT through io_uring: creates a ring,
// writes a scratch file in `dir` with O_DIRECT, reads it back through the
// ring and removes it. OK, or NotSupported saying what the kernel or the
// file system refused.
Status ProbeDirectUring(const std::string& dir);

}  // namespace kvstash::store
