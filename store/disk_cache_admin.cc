#include "store/disk_cache_admin.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>

#include "store/disk_files.h"

namespace kvstash::store {
namespace {

// Takes the lock of the existing cache directory `dir`.
Result<DirLock> LockForMaintenance(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return Status::NotFound("no disk cache directory '" + dir + "'");
    }
    return ErrnoStatus("cannot stat", dir, errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::IOError("disk cache '" + dir + "' is not a directory");
  }
  Result<DirLock> lock = DirLock::Acquire(dir);
  if (lock.status().code() == StatusCode::kUnavailable) {
    return Status::Unavailable(lock.status().message() +
                               "; stop that process first");
  }
  return lock;
}

// Counts what `listing` holds into `report`.
void CountFiles(const CacheDirListing& listing, DiskCacheReport* report) {
  report->objects = listing.objects.size();
  for (const ObjectFile& f : listing.objects) report->bytes += f.bytes;
  report->temp_files = listing.temps.size();
  for (const TempFile& t : listing.temps) report->temp_bytes += t.bytes;
}

// Deletes `path` (gone already is fine) and counts it as removed.
Status Remove(const std::string& path, uint64_t bytes,
              DiskCacheReport* report) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus("cannot delete", path, errno);
  }
  ++report->removed_files;
  report->removed_bytes += bytes;
  return Status::OK();
}

// The key ScanDiskCache verifies with: `key`, else the directory's own,
// else none (checksums only).
Result<ObjectAuthenticator> ScanKey(
    const std::string& dir, const std::optional<ObjectAuthenticator>& key) {
  if (key) return *key;
  Result<ObjectAuthenticator> own = DirKey(dir, false);
  if (own.status().code() == StatusCode::kNotFound) {
    return ObjectAuthenticator();
  }
  return own;
}

}  // namespace

Result<DiskCacheReport> ScanDiskCache(
    const std::string& dir, bool verify, bool remove_bad,
    const std::optional<ObjectAuthenticator>& key) {
  KV_ASSIGN_OR_RETURN(const DirLock lock, LockForMaintenance(dir));
  KV_ASSIGN_OR_RETURN(const CacheDirListing listing, ListCacheDir(dir));
  KV_ASSIGN_OR_RETURN(const ObjectAuthenticator authenticator,
                      ScanKey(dir, key));
  KV_ASSIGN_OR_RETURN(
      const std::unique_ptr<ObjectFileIo> io,
      ObjectFileIo::Open(dir, DiskTierOptions::DiskIo::kAuto, authenticator));
  DiskCacheReport report;
  report.dir = dir;
  report.verified = verify;
  report.authenticated = verify && authenticator.keyed();
  CountFiles(listing, &report);

  const std::vector<ObjectFile>& files = listing.objects;
  const std::vector<Result<ObjectHeader>> headers = io->ReadHeaders(files);
  std::vector<Status> verdicts;  // per file; OK for a good one
  for (const Result<ObjectHeader>& h : headers) verdicts.push_back(h.status());
  if (verify) {
    std::vector<size_t> good;
    for (size_t i = 0; i < files.size(); ++i) {
      if (verdicts[i].ok()) good.push_back(i);
    }
    // A batch at a time, so that memory holds one batch of objects.
    for (size_t start = 0; start < good.size();
         start += ObjectFileIo::kReadBatch) {
      const std::span<const size_t> batch(
          good.data() + start,
          std::min<size_t>(ObjectFileIo::kReadBatch, good.size() - start));
      std::vector<BlockKey> keys;
      for (const size_t i : batch) keys.push_back(files[i].key);
      const std::vector<Result<size_t>> objects =
          io->ReadObjects(keys, std::numeric_limits<uint64_t>::max(),
                          [](size_t, std::span<const uint8_t>) {});
      for (size_t k = 0; k < batch.size(); ++k) {
        verdicts[batch[k]] = objects[k].status();
      }
    }
  }

  std::map<std::string, DiskCacheNamespace> namespaces;
  for (size_t i = 0; i < files.size(); ++i) {
    if (verdicts[i].ok()) {
      DiskCacheNamespace& ns = namespaces[headers[i]->fingerprint.Hex()];
      ++ns.objects;
      ns.bytes += files[i].bytes;
      ns.tokens += headers[i]->token_count;
      continue;
    }
    if (verdicts[i].code() == StatusCode::kPermissionDenied) ++report.forged;
    report.bad.push_back({files[i].path, verdicts[i].message()});
    if (remove_bad) {
      KV_RETURN_IF_ERROR(Remove(files[i].path, files[i].bytes, &report));
    }
  }
  for (auto& [fingerprint, ns] : namespaces) {
    ns.fingerprint = fingerprint;
    report.namespaces.push_back(std::move(ns));
  }
  return report;
}

Result<DiskCacheReport> ClearDiskCache(const std::string& dir, bool rekey) {
  KV_ASSIGN_OR_RETURN(const DirLock lock, LockForMaintenance(dir));
  KV_ASSIGN_OR_RETURN(const CacheDirListing listing, ListCacheDir(dir));
  DiskCacheReport report;
  report.dir = dir;
  CountFiles(listing, &report);
  for (const ObjectFile& f : listing.objects) {
    KV_RETURN_IF_ERROR(Remove(f.path, f.bytes, &report));
  }
  for (const TempFile& t : listing.temps) {
    KV_RETURN_IF_ERROR(Remove(t.path, t.bytes, &report));
  }
  if (rekey) {
    const std::string key = DirKeyPath(dir);
    if (::unlink(key.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus("cannot delete", key, errno);
    }
    report.key_removed = true;
  }
  return report;
}

}  // namespace kvstash::store
