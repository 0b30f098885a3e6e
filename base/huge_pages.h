// HugePages: anonymous memory for large buffers that are streamed through
// (model weights, the KV block arena, the bandwidth probe's buffer), mapped
// at a 2 MiB boundary and advised to transparent huge pages (MADV_HUGEPAGE)
// before anything touches it, so that where the kernel has huge pages the
// first write to each 2 MiB faults in one. A pass over gigabytes then walks
// one TLB entry per 2 MiB instead of 512 4 KiB ones: 1b f16 decode ran
// 1.2-2.1x as fast (q8_0 1.0-1.2x) from weights held so as from the page
// cache's 4 KiB pages (README "Speed, measured"). Huge pages are an
// optimization: a kernel without them (transparent_hugepage set to never, or
// memory too fragmented to compact) leaves the memory in ordinary pages, which
// work the same; HugePageBytes says what was had.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "base/status.h"

namespace kvstash {

class HugePages {
 public:
  static constexpr size_t kHugePageBytes = size_t{2} << 20;

  // At least `bytes` (rounded up to kHugePageBytes; at least one) of
  // zero-filled read-write memory. `reserve`: false maps it MAP_NORESERVE
  // (no swap space is set aside; the pages are had as they are touched).
  // ResourceExhausted, with the reason, when it cannot be mapped.
  static Result<std::unique_ptr<HugePages>> Map(size_t bytes,
                                                bool reserve = true);
  ~HugePages();
  HugePages(const HugePages&) = delete;
  HugePages& operator=(const HugePages&) = delete;

  uint8_t* data() const { return data_; }
  size_t bytes() const { return bytes_; }

  // Makes the whole mapping read-only (a write faults from then on).
  Status MakeReadOnly();

  // Bytes of the mapping the kernel backs with huge pages now: the
  // AnonHugePages of its mappings in /proc/self/smaps.
  Result<size_t> HugePageBytes() const;

 private:
  HugePages(uint8_t* data, size_t bytes) : data_(data), bytes_(bytes) {}
  uint8_t* data_;
  size_t bytes_;
};

}  // namespace kvstash
