#include "store/disk_io.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/testing/shared_data.h"

namespace kvstash::store {
namespace {

namespace fs = std::filesystem;

// A file of `n` bytes whose byte i is (i * 7 + i / 4096) mod 256.
std::string MakeFile(const std::string& dir, uint64_t n) {
  const std::string path = dir + "/data";
  std::vector<uint8_t> bytes(n);
  for (uint64_t i = 0; i < n; ++i) bytes[i] = uint8_t(i * 7 + i / 4096);
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
  KV_CHECK(fd.get() >= 0);
  KV_CHECK(::pwrite(fd.get(), bytes.data(), n, 0) == ssize_t(n));
  return path;
}

std::unique_ptr<IoRing> RingOrSkip(unsigned depth) {
  Result<std::unique_ptr<IoRing>> ring = IoRing::Create(depth);
  if (!ring.ok()) {
    EXPECT_EQ(ring.status().code(), StatusCode::kNotSupported);
    return nullptr;
  }
  return std::move(ring).value();
}

TEST(DiskIoTest, AlignedBufferIsAlignedAndZeroed) {
  AlignedBuffer b(3 * kDirectIoAlign);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % kDirectIoAlign, 0u);
  EXPECT_EQ(b.size(), 3 * kDirectIoAlign);
  for (const uint8_t x : b.span()) ASSERT_EQ(x, 0);
  AlignedBuffer moved = std::move(b);
  EXPECT_EQ(moved.size(), 3 * kDirectIoAlign);
  const AlignedBuffer raw = AlignedBuffer::Uninitialized(5 * kDirectIoAlign);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(raw.data()) % kDirectIoAlign, 0u);
  EXPECT_EQ(raw.size(), 5 * kDirectIoAlign);
  EXPECT_EQ(AlignUp(0), 0u);
  EXPECT_EQ(AlignUp(1), kDirectIoAlign);
  EXPECT_EQ(AlignUp(kDirectIoAlign), kDirectIoAlign);
  EXPECT_EQ(AlignUp(kDirectIoAlign + 1), 2 * kDirectIoAlign);
}

// Many aligned reads, some reaching past the end of the file and one on a
// closed descriptor, through the ring (a window smaller than the batch) and
// through pread, with and without O_DIRECT: the same bytes and results.
TEST(DiskIoTest, RingReadsWhatPreadReads) {
  const std::string dir = testing::TempDir("disk_io_ring");
  const uint64_t file_bytes = 40 * kDirectIoAlign + 1000;
  const std::string path = MakeFile(dir, file_bytes);
  std::unique_ptr<IoRing> ring = RingOrSkip(8);
  if (ring == nullptr) GTEST_SKIP() << "io_uring refused here";
  for (const int flags : {O_RDONLY, O_RDONLY | O_DIRECT}) {
    Fd fd(::open(path.c_str(), flags));
    if (fd.get() < 0 && errno == EINVAL) continue;  // no O_DIRECT here
    ASSERT_GE(fd.get(), 0);
    std::mt19937_64 rng(5);
    std::vector<AlignedBuffer> buffers;
    std::vector<ReadOp> ring_ops, sync_ops;
    for (int i = 0; i < 60; ++i) {
      const uint64_t offset = (rng() % 44) * kDirectIoAlign;
      const uint64_t length = (1 + rng() % 3) * kDirectIoAlign;
      const bool bad = i == 17;
      for (auto* ops : {&ring_ops, &sync_ops}) {
        buffers.emplace_back(length);
        ops->push_back({.fd = bad ? 9999 : fd.get(),
                        .dst = buffers.back().data(),
                        .offset = offset,
                        .length = length,
                        .want = length});
      }
    }
    ring->ReadAll(ring_ops);
    EXPECT_EQ(ring->in_flight(), 0u);
    ReadAllSync(sync_ops);
    for (size_t i = 0; i < ring_ops.size(); ++i) {
      const ReadOp& r = ring_ops[i];
      const ReadOp& s = sync_ops[i];
      SCOPED_TRACE(i);
      EXPECT_EQ(r.error, s.error);
      EXPECT_EQ(r.done, s.done);
      if (i == 17) {
        EXPECT_EQ(r.error, EBADF);
        EXPECT_EQ(r.done, 0u);
      } else {
        const uint64_t left = file_bytes > r.offset ? file_bytes - r.offset : 0;
        EXPECT_EQ(r.error, 0);
        EXPECT_EQ(r.done, std::min(r.length, left));
      }
      for (uint64_t k = 0; k < r.done; ++k) {
        const uint64_t at = r.offset + k;
        ASSERT_EQ(r.dst[k], uint8_t(at * 7 + at / 4096)) << k;
        ASSERT_EQ(s.dst[k], r.dst[k]);
      }
    }
  }
}

// Start/Next keep a window of reads in flight; each op comes back once.
TEST(DiskIoTest, StartAndNextReturnEveryOpOnce) {
  const std::string dir = testing::TempDir("disk_io_window");
  const std::string path = MakeFile(dir, 16 * kDirectIoAlign);
  std::unique_ptr<IoRing> ring = RingOrSkip(4);
  if (ring == nullptr) GTEST_SKIP() << "io_uring refused here";
  Fd fd(::open(path.c_str(), O_RDONLY));
  ASSERT_GE(fd.get(), 0);
  std::vector<AlignedBuffer> buffers;
  std::vector<ReadOp> ops(16);
  for (size_t i = 0; i < ops.size(); ++i) {
    buffers.emplace_back(kDirectIoAlign);
    ops[i] = {.fd = fd.get(),
              .dst = buffers.back().data(),
              .offset = i * kDirectIoAlign,
              .length = kDirectIoAlign,
              .want = 1};
  }
  std::vector<int> seen(ops.size(), 0);
  size_t next = 0;
  while (next < ops.size() || ring->in_flight() > 0) {
    while (next < ops.size() && ring->in_flight() < ring->depth()) {
      ring->Start(&ops[next++]);
    }
    ReadOp* op = ring->Next();
    ++seen[size_t(op - ops.data())];
    EXPECT_EQ(op->error, 0);
    EXPECT_GE(op->done, op->want);
  }
  EXPECT_EQ(seen, std::vector<int>(ops.size(), 1));
}

TEST(DiskIoTest, ProbeLeavesNoFileBehind) {
  const std::string dir = testing::TempDir("disk_io_probe");
  const Status s = ProbeDirectUring(dir);
  EXPECT_TRUE(s.ok() || s.code() == StatusCode::kNotSupported) << s.ToString();
  EXPECT_TRUE(fs::is_empty(dir));
  const Status missing = ProbeDirectUring(dir + "/missing");
  EXPECT_FALSE(missing.ok());
}

}  // namespace
}  // namespace kvstash::store
