// What the running process knows about itself, read from /proc.
#pragma once

#include <cstddef>

namespace kvstash {

// The process's resident set size now (VmRSS of /proc/self/status), in
// bytes; 0 if unknown.
size_t ResidentBytes();

}  // namespace kvstash
