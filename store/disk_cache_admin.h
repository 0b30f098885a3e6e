// Offline maintenance of a disk cache directory (the layout of
// store/disk_tier.h), behind the `kvstash cache` command: report what the
// directory holds, verify every object, remove bad ones, or clear it.
//
// Each function takes the directory's lock the way DiskTier::Open does, so
// it never runs beside a server that uses the directory: while one holds it
// the call fails with Unavailable naming the holder's pid. Files that are
// neither objects nor temporary files (LOCK, foreign files) are never
// touched. Thread-safe (the lock serializes calls on one directory).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "store/object_mac.h"

namespace kvstash::store {

// The objects of one namespace (one model, layout and tenant).
struct DiskCacheNamespace {
  std::string fingerprint;  // h_0, as Hash128::Hex()
  uint64_t objects = 0;
  uint64_t bytes = 0;   // of their files
  uint64_t tokens = 0;  // the sum of their token counts
};

// An object file found bad, and why.
struct DiskCacheBadFile {
  std::string path;
  std::string reason;
};

struct DiskCacheReport {
  std::string dir;
  // Object files found (bad ones included) and their bytes.
  uint64_t objects = 0;
  uint64_t bytes = 0;
  // Temporary files a killed writer left behind, and their bytes.
  uint64_t temp_files = 0;
  uint64_t temp_bytes = 0;
  // The good objects per namespace, by ascending fingerprint.
  std::vector<DiskCacheNamespace> namespaces;
  // Whether every object was read in full and verified, and whether their
  // MACs were checked too (with a key), not only their checksums.
  bool verified = false;
  bool authenticated = false;
  // Bad files that were intact but not sealed with the key (forged, or
  // written under another key).
  uint64_t forged = 0;
  // The bad object files, in directory order.
  std::vector<DiskCacheBadFile> bad;
  // Files deleted by the call, and their bytes.
  uint64_t removed_files = 0;
  uint64_t removed_bytes = 0;
  // Whether the directory's TIER_KEY was deleted (ClearDiskCache's rekey).
  bool key_removed = false;
};

// Reports the objects and temporary files of `dir`. Reads the header of
// every object file: a file whose header does not parse, names another key
// than the file's name or does not fill the file is bad. With `verify`, also
// reads every object whole and checks its padding and its MAC under `key`
// (the key the servers that use `dir` are given), else under the
// directory's own TIER_KEY, else (no key anywhere) its checksum only; an
// object that fails or cannot be read is bad too. With `remove_bad`,
// deletes the bad files. NotFound when `dir` does not exist, Unavailable
// when it is locked, IOError naming the path when it cannot be listed or a
// bad file cannot be deleted; the errors of DirKey for an unreadable
// TIER_KEY.
Result<DiskCacheReport> ScanDiskCache(
    const std::string& dir, bool verify, bool remove_bad,
    const std::optional<ObjectAuthenticator>& key = std::nullopt);

// Deletes every object and temporary file of `dir` and reports them (counts
// and bytes; no namespaces, nothing is read); with `rekey`, also its
// TIER_KEY, so that the next DiskTier::Open without a key makes a new one
// (how a directory's key is changed: objects sealed under the old key would
// be refused anyway). Errors as ScanDiskCache.
Result<DiskCacheReport> ClearDiskCache(const std::string& dir,
                                       bool rekey = false);

}  // namespace kvstash::store
