#include "base/hash.h"

#include <xxhash.h>

#include "base/check.h"

namespace kvstash {

std::string Hash128::Hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) {
    s[15 - i] = kDigits[(hi >> (4 * i)) & 15];
    s[31 - i] = kDigits[(lo >> (4 * i)) & 15];
  }
  return s;
}

Hash128 HashBytes(const void* data, size_t size) {
  const XXH128_hash_t h = XXH3_128bits(data, size);
  return {h.low64, h.high64};
}

Hash128 HashBytes(std::span<const uint8_t> bytes) {
  return HashBytes(bytes.data(), bytes.size());
}

Hasher128::Hasher128() : state_(XXH3_createState()) {
  KV_CHECK(state_ != nullptr);
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_));
}

Hasher128::~Hasher128() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

Hasher128& Hasher128::Add(const void* data, size_t size) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, size);
  return *this;
}

Hasher128& Hasher128::AddU32(uint32_t v) {
  const uint8_t b[4] = {uint8_t(v), uint8_t(v >> 8), uint8_t(v >> 16),
                        uint8_t(v >> 24)};
  return Add(b, sizeof(b));
}

Hasher128& Hasher128::AddU64(uint64_t v) {
  return AddU32(uint32_t(v)).AddU32(uint32_t(v >> 32));
}

Hash128 Hasher128::Finish() const {
  const XXH128_hash_t h =
      XXH3_128bits_digest(static_cast<const XXH3_state_t*>(state_));
  return {h.low64, h.high64};
}

}  // namespace kvstash
