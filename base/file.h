// Read-only file access: MappedFile maps a whole file into memory (weights are
// read in place from the page cache, or read once into huge pages), ReadFile
// slurps small files, WriteFileAtomic
// writes through a temporary file and rename so that a reader never sees a
// half-written file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/huge_pages.h"
#include "base/status.h"

namespace kvstash {

// Where a MappedFile keeps the file's bytes.
enum class FileMemory {
  // A private read-only mapping of the file: pages come from the page cache
  // (shared with every process that maps the file, evictable, loaded on
  // first touch), in 4 KiB pages.
  kMapped,
  // HugePages (base/huge_pages.h) the whole file is read into at Open, then
  // made read-only: a pass over the weights walks 2 MiB pages. The cost is
  // the read at Open and memory of the process's own (neither shared nor
  // evictable).
  kHugePages,
};

// A read-only view of an entire file (FileMemory says how it is held).
// Immutable and thread-safe once opened. An empty file maps to an empty span.
class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> Open(
      const std::string& path, FileMemory memory = FileMemory::kMapped);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  // How the bytes are held (an empty file holds none: kMapped).
  FileMemory memory() const {
    return pages_ != nullptr ? FileMemory::kHugePages : FileMemory::kMapped;
  }
  // Bytes of the view the kernel backs with huge pages now; 0 for kMapped.
  Result<size_t> HugePageBytes() const;
  // Gives back the memory of the whole pages inside bytes [offset, offset +
  // size) of the view, for bytes a caller holds in another form from now on.
  // Reading them afterwards gives the file's bytes again (kMapped) or zeros
  // (kHugePages), so only a caller that never reads them again may call it.
  // REQUIRES: offset + size <= size().
  void Release(size_t offset, size_t size);

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size,
             std::unique_ptr<HugePages> pages)
      : path_(std::move(path)),
        data_(data),
        size_(size),
        pages_(std::move(pages)) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
  std::unique_ptr<HugePages> pages_;  // holds data_ when read into them
};

Result<std::string> ReadFile(const std::string& path);

// The secret a file holds (a key, a password), trailing whitespace (the
// newline an editor or `echo` adds) stripped. PermissionDenied, with the
// chmod that fixes it, when group or others may read or write the file (as
// ssh does: a secret others can read is no secret); InvalidArgument when it
// holds nothing but whitespace; the error of ReadFile otherwise.
Result<std::string> ReadSecretFile(const std::string& path);

// Streams a file into place atomically: bytes go to "<path>.tmp.<pid>", and
// Commit() fsyncs and renames it to `path`. A writer destroyed without a
// successful Commit() removes its temporary file, so `path` is either left
// untouched or holds the complete new contents. Not thread-safe.
class AtomicFileWriter {
 public:
  static Result<std::unique_ptr<AtomicFileWriter>> Create(
      const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  Status Append(std::string_view bytes);
  Status Commit();

 private:
  AtomicFileWriter(std::string path, std::string tmp, int fd)
      : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  std::string path_;
  std::string tmp_;
  int fd_;
  bool committed_ = false;
};

// Writes `contents` to `path` through an AtomicFileWriter.
Status WriteFileAtomic(const std::string& path, std::string_view contents);

}  // namespace kvstash
