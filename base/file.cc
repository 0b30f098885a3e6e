#include "base/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

}  // namespace

Result<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  FdCloser fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoStatus("cannot open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("cannot stat", path);
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument("not a regular file: '" + path + "'");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) return ErrnoStatus("cannot mmap", path);
    data = static_cast<const uint8_t*>(p);
  }
  return std::unique_ptr<MappedFile>(new MappedFile(path, data, size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
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
