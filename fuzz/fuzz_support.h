// What the fuzz harnesses share. Each harness defines LLVMFuzzerTestOneInput
// (and maybe LLVMFuzzerInitialize): linked with libFuzzer in a clang build
// with -DKVSTASH_FUZZ=ON it is a coverage-guided fuzzer; otherwise it is
// linked with replay_main.cc and runs the inputs it is given once each (how
// ctest replays the corpora in fuzz/corpus, crash reproducers included).
//
// A harness must accept any input: every failure is a Status or a refusal,
// never a crash, a sanitizer report, an abort or a hang. Where the code
// under test promises more (a property of its output), the harness checks it
// with FUZZ_CHECK, which aborts so that libFuzzer saves the input.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#define FUZZ_CHECK(cond)                                               \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                   \
      std::abort();                                                    \
    }                                                                  \
  } while (0)

namespace kvstash::fuzz {

// `relative` under the shared test data (../shared beside the repository,
// or $KVSTASH_SHARED_DIR); exits with a message when it is missing, since a
// harness without its vocabulary would test nothing.
inline std::string SharedPath(const std::string& relative) {
  const char* env = std::getenv("KVSTASH_SHARED_DIR");
  const std::string path =
      (env != nullptr ? std::string(env)
                      : std::string(KVSTASH_SHARED_DIR_DEFAULT)) +
      "/" + relative;
  if (!std::filesystem::exists(path)) {
    std::fprintf(stderr,
                 "shared test data missing: %s (set KVSTASH_SHARED_DIR)\n",
                 path.c_str());
    std::exit(2);
  }
  return path;
}

// An in-memory file (memfd) that holds one input at a time, for readers
// that take a path: path() names it as /proc/self/fd/N.
class InputFile {
 public:
  InputFile() : fd_(::memfd_create("fuzz-input", MFD_CLOEXEC)) {
    if (fd_ < 0) {
      std::perror("memfd_create");
      std::exit(2);
    }
  }
  ~InputFile() { ::close(fd_); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // Replaces the contents with `bytes`.
  void Write(std::span<const uint8_t> bytes) {
    if (::ftruncate(fd_, 0) != 0 ||
        ::pwrite(fd_, bytes.data(), bytes.size(), 0) !=
            static_cast<ssize_t>(bytes.size())) {
      std::perror("memfd write");
      std::exit(2);
    }
  }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  const int fd_;
};

// Reads a structured input front to back; reads past the end give zeros
// and empty strings, so every input means something.
class InputReader {
 public:
  explicit InputReader(std::span<const uint8_t> bytes) : rest_(bytes) {}

  uint8_t Byte() {
    if (rest_.empty()) return 0;
    const uint8_t b = rest_.front();
    rest_ = rest_.subspan(1);
    return b;
  }
  // A string of at most `max` bytes, its length given by the next byte.
  std::string_view Short(size_t max = 255) {
    size_t n = Byte();
    if (n > max) n = max;
    if (n > rest_.size()) n = rest_.size();
    const std::string_view s(reinterpret_cast<const char*>(rest_.data()), n);
    rest_ = rest_.subspan(n);
    return s;
  }
  std::span<const uint8_t> Rest() {
    const std::span<const uint8_t> r = rest_;
    rest_ = {};
    return r;
  }
  bool empty() const { return rest_.empty(); }

 private:
  std::span<const uint8_t> rest_;
};

inline std::string_view AsText(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace kvstash::fuzz
