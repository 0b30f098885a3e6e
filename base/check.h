// KV_CHECK: aborts with file, line and the failed condition when an internal
// invariant is broken. Never used for conditions that bad input can cause
// (those return a Status). KV_DCHECK compiles away in release builds.
#pragma once

namespace kvstash::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond,
                              const char* msg);
}  // namespace kvstash::internal

#define KV_CHECK(cond)                                                 \
  do {                                                                 \
    if (!(cond)) [[unlikely]]                                          \
      ::kvstash::internal::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define KV_CHECK_MSG(cond, msg)                                           \
  do {                                                                    \
    if (!(cond)) [[unlikely]]                                             \
      ::kvstash::internal::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

#ifdef NDEBUG
#define KV_DCHECK(cond) \
  do {                  \
  } while (false && (cond))
#else
#define KV_DCHECK(cond) KV_CHECK(cond)
#endif
