#include "base/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace kvstash {
namespace {

Status ErrnoStatus(const std::string& what, const std::string& path) {
  return Status::IOError(what + " '" + path + "': " + std::strerror(errno));
}

// Closes a file descriptor when it goes out of scope.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Reads `size` bytes of `fd` from offset 0 into `to`.
Status ReadWhole(int fd, const std::string& path, uint8_t* to, size_t size) {
  constexpr size_t kPiece = size_t{64} << 20;
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, to + done, std::min(kPiece, size - done),
                              static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("cannot read", path);
    if (n == 0) {
      return Status::IOError("'" + path + "' ended after " +
                             std::to_string(done) + " of " +
                             std::to_string(size) + " bytes while read");
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path,
                                                     FileMemory memory) {
  FdCloser fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("cannot open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("cannot stat", path);
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument("not a regular file: '" + path + "'");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    return std::unique_ptr<MappedFile>(
        new MappedFile(path, nullptr, 0, nullptr));
  }
  if (memory == FileMemory::kMapped) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) return ErrnoStatus("cannot mmap", path);
    return std::unique_ptr<MappedFile>(
        new MappedFile(path, static_cast<const uint8_t*>(p), size, nullptr));
  }
  Result<std::unique_ptr<HugePages>> pages = HugePages::Map(size);
  if (!pages.ok()) return pages.status().WithPrefix(path);
  KV_RETURN_IF_ERROR(ReadWhole(fd.get(), path, (*pages)->data(), size));
  KV_RETURN_IF_ERROR((*pages)->MakeReadOnly().WithPrefix(path));
  uint8_t* const data = (*pages)->data();
  return std::unique_ptr<MappedFile>(
      new MappedFile(path, data, size, std::move(pages).value()));
}

MappedFile::~MappedFile() {
  if (pages_ == nullptr && data_ != nullptr) {
    ::munmap(const_cast<uint8_t*>(data_), size_);
  }
}

void MappedFile::Release(size_t offset, size_t size) {
  KV_CHECK(offset <= size_ && size <= size_ - offset);
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin =
      (reinterpret_cast<uintptr_t>(data_) + offset + page - 1) / page * page;
  const uintptr_t end =
      (reinterpret_cast<uintptr_t>(data_) + offset + size) / page * page;
  if (end <= begin) return;
  // Advice only: where the kernel declines, the pages stay, which is
  // harmless.
  madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

Result<size_t> MappedFile::HugePageBytes() const {
  if (pages_ == nullptr) return size_t{0};
  return pages_->HugePageBytes();
}

Result<std::string> ReadFile(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  return std::string(reinterpret_cast<const char*>(file->data()), file->size());
}

Result<std::string> ReadSecretFile(const std::string& path) {
  KV_ASSIGN_OR_RETURN(std::string secret, ReadFile(path));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("cannot stat", path);
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return Status::PermissionDenied("secret file '" + path +
                                    "' may be read or written by group or " +
                                    "others; run `chmod 600 " + path + "`");
  }
  while (!secret.empty() &&
         std::isspace(static_cast<unsigned char>(secret.back()))) {
    secret.pop_back();
  }
  if (secret.empty()) {
    return Status::InvalidArgument("secret file '" + path + "' is empty");
  }
  return secret;
}

Result<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(
    const std::string& path) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", tmp);
  return std::unique_ptr<AtomicFileWriter>(
      new AtomicFileWriter(path, std::move(tmp), fd));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

Status AtomicFileWriter::Append(std::string_view bytes) {
  if (fd_ < 0) return Status::Internal("append after commit: " + path_);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", tmp_);
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return Status::Internal("commit twice: " + path_);
  if (::fsync(fd_) != 0) return ErrnoStatus("cannot fsync", tmp_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return ErrnoStatus("cannot close", tmp_);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    return ErrnoStatus("cannot rename to", path_);
  }
  committed_ = true;
  return Status::OK();
}

Status WriteFileAtomic(const std::string& path, std::string_view contents) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> writer,
                      AtomicFileWriter::Create(path));
  KV_RETURN_IF_ERROR(writer->Append(contents));
  return writer->Commit();
}

}  // namespace kvstash
