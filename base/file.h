// Read-only file access: MappedFile maps a whole file into memory (weights are
// read in place, never copied), ReadFile slurps small files, WriteFileAtomic
// writes through a temporary file and rename so that a reader never sees a
// half-written file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"

namespace kvstash {

// A read-only private mapping of an entire file. Immutable and thread-safe once
// opened. An empty file maps to an empty span.
class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

Result<std::string> ReadFile(const std::string& path);

// Writes `contents` to `path` via "<path>.tmp.<pid>" + fsync + rename.
Status WriteFileAtomic(const std::string& path, std::string_view contents);

}  // namespace kvstash
