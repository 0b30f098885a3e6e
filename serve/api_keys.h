// ApiKeys: who may call the server, as which tenant, with which role.
//
// A key file holds one key per line, `KEY TENANT [admin]` (fields separated
// by spaces or tabs; blank lines and lines starting with '#' are skipped),
// or a JSON array of {"key": KEY, "tenant": TENANT, "admin": bool}. Keys
// are at least 16 bytes of printable ASCII without spaces, each used once;
// tenants are 1 to 64 bytes of [A-Za-z0-9._-].
//
// A tenant's requests live in its own cache namespace (TenantSalt), so no
// cache_salt a client sends can reach another tenant's blocks. Admins may
// also read the global statistics and clear the cache.
//
// Find compares a presented key with every key in constant time (SHA-256
// digests compared with CRYPTO_memcmp, all of them, whatever matched), so
// the response time does not tell how much of a guess was right.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace kvstash {

struct Caller {
  std::string tenant;  // empty: the single tenant of a server without keys
  bool admin = false;
};

class ApiKeys {
 public:
  // InvalidArgument naming the line (or array index) of the first bad
  // entry: a short or repeated key, a bad tenant name, an unknown role.
  static Result<ApiKeys> Parse(std::string_view text);
  // Parse of the file's contents (a private file: base/file.h
  // ReadSecretFile); its errors, or InvalidArgument when it holds no key.
  static Result<ApiKeys> Load(const std::string& path);
  // One key for tenant "default", an admin (--api-key-file, KVSTASH_API_KEY).
  static Result<ApiKeys> Single(std::string_view key);

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  // The caller `presented` identifies, or null.
  const Caller* Find(std::string_view presented) const;

 private:
  struct Entry {
    std::array<uint8_t, 32> digest;  // SHA-256 of the key
    Caller caller;
  };
  Status Add(std::string_view key, std::string_view tenant, bool admin,
             const std::string& where);
  std::vector<Entry> entries_;
};

// The cache salt of a request: the client's own `cache_salt` alone on a
// server without keys (as before tenants existed); with keys, the tenant's
// name, length-prefixed, followed by the client's salt, so that a salt can
// narrow a tenant's namespace but never name another tenant's.
std::string TenantSalt(const Caller& caller, std::string_view cache_salt);

}  // namespace kvstash
