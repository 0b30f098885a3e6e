#include "base/check.h"

#include <cstdio>
#include <cstdlib>

namespace kvstash::internal {

void CheckFailed(const char* file, int line, const char* cond,
                 const char* msg) {
  std::fprintf(stderr, "%s:%d: CHECK failed: %s %s\n", file, line, cond, msg);
  std::fflush(stderr);
  std::abort();
}

}  // namespace kvstash::internal
