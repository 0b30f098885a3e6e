// Canonical 128-bit hashing (XXH3-128) for content addresses: block-hash
// chains of the KV cache, model identities, object checksums.
//
// Hash128 values are platform-independent: the same bytes give the same hash
// on every machine and in every process (XXH3 with its default secret, no
// seed). Integers are fed little-endian (Hasher128::AddU32/AddU64), so a key
// never depends on the host's byte order. Hex() is the canonical text form
// (hi then lo, 32 lowercase hex digits).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

namespace kvstash {

struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const Hash128&, const Hash128&) = default;
  std::string Hex() const;
};

// For unordered containers; the hash is already uniform.
struct Hash128Hasher {
  size_t operator()(const Hash128& h) const { return size_t(h.lo ^ h.hi); }
};

// XXH3-128 of `bytes`.
Hash128 HashBytes(std::span<const uint8_t> bytes);
Hash128 HashBytes(const void* data, size_t size);

// Streaming XXH3-128: the hash of the concatenation of everything added.
// Thread-compatible.
class Hasher128 {
 public:
  Hasher128();
  ~Hasher128();
  Hasher128(const Hasher128&) = delete;
  Hasher128& operator=(const Hasher128&) = delete;

  Hasher128& Add(const void* data, size_t size);
  Hasher128& Add(std::string_view s) { return Add(s.data(), s.size()); }
  Hasher128& AddU32(uint32_t v);  // 4 bytes, little-endian
  Hasher128& AddU64(uint64_t v);  // 8 bytes, little-endian
  Hasher128& Add(const Hash128& h) { return AddU64(h.lo).AddU64(h.hi); }
  Hash128 Finish() const;

 private:
  void* state_;  // XXH3_state_t
};

}  // namespace kvstash
