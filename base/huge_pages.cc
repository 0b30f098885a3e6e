#include "base/huge_pages.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace kvstash {

Result<std::unique_ptr<HugePages>> HugePages::Map(size_t bytes, bool reserve) {
  const size_t size =
      std::max<size_t>(1, (bytes + kHugePageBytes - 1) / kHugePageBytes) *
      kHugePageBytes;
  // Over-map by one huge page and unmap the slack on both sides of the
  // aligned start.
  const size_t over = size + kHugePageBytes;
  void* raw = ::mmap(
      nullptr, over, PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS | (reserve ? 0 : MAP_NORESERVE), -1, 0);
  if (raw == MAP_FAILED) {
    return Status::ResourceExhausted("cannot map " + std::to_string(size) +
                                     " bytes: " + std::strerror(errno));
  }
  auto* const first = static_cast<uint8_t*>(raw);
  const uintptr_t at = reinterpret_cast<uintptr_t>(first);
  uint8_t* const start =
      first + (kHugePageBytes - at % kHugePageBytes) % kHugePageBytes;
  if (start > first) ::munmap(first, start - first);
  if (start + size < first + over) {
    ::munmap(start + size, first + over - (start + size));
  }
  // A kernel without transparent huge pages says EINVAL: ordinary pages.
  ::madvise(start, size, MADV_HUGEPAGE);
  return std::unique_ptr<HugePages>(new HugePages(start, size));
}

HugePages::~HugePages() { ::munmap(data_, bytes_); }

Status HugePages::MakeReadOnly() {
  if (::mprotect(data_, bytes_, PROT_READ) != 0) {
    return Status::Internal(std::string("mprotect: ") + std::strerror(errno));
  }
  return Status::OK();
}

Result<size_t> HugePages::HugePageBytes() const {
  std::ifstream smaps("/proc/self/smaps");
  if (!smaps) {
    return Status::IOError(std::string("cannot open /proc/self/smaps: ") +
                           std::strerror(errno));
  }
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data_);
  const uintptr_t end = begin + bytes_;
  // Each mapping is a header line "start-end perms ..." followed by
  // "Key: value kB" lines (no key parses as two hex numbers and a dash);
  // only mappings inside this one count.
  bool inside = false;
  size_t bytes = 0;
  std::string line;
  while (std::getline(smaps, line)) {
    uintmax_t from = 0, to = 0;
    size_t kib = 0;
    if (std::sscanf(line.c_str(), "%jx-%jx ", &from, &to) == 2) {
      inside = from >= begin && to <= end;
    } else if (inside &&
               std::sscanf(line.c_str(), "AnonHugePages: %zu kB", &kib) == 1) {
      bytes += kib << 10;
    }
  }
  return bytes;
}

}  // namespace kvstash
