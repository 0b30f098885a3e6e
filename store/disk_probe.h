// DirectSequentialReadProbe: how fast the device under a directory reads a
// large file sequentially when the page cache does not help. It is the
// baseline a benchmark compares the disk tier's restore throughput against
// (the tier cannot read faster than its device).
//
// The probe writes a scratch file, syncs it and drops it from the page
// cache, then reads it in 1 MiB requests, 8 in flight through io_uring
// (one at a time with pread where io_uring is refused), with O_DIRECT where
// the file system allows it. Thread-safe; concurrent probes of one directory
// use separate files but share the device, so their figures mean little.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace kvstash::store {

struct DiskProbeResult {
  double bytes_per_second = 0;  // bytes read / seconds spent reading
  // Whether the reads used O_DIRECT; false where the file system refused it
  // and the reads were buffered (after the file was dropped from the page
  // cache, which the kernel may only partly honour).
  bool direct = false;
};

// Measures sequential reads of a scratch file of `bytes` (rounded up to a
// multiple of 4096) written in the existing directory `dir` and removed
// afterwards. InvalidArgument when `bytes` is 0; IOError naming the path
// when the file cannot be written or read (a full disk, say).
Result<DiskProbeResult> DirectSequentialReadProbe(const std::string& dir,
                                                  uint64_t bytes);

}  // namespace kvstash::store
