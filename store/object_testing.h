// Test-only: what a forger who lacks the tier key can do to an object.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/hash.h"
#include "store/object_format.h"

namespace kvstash::store {

// What a forger who lacks the tier key can do: recompute the checksum of an
// edited object (the low half of XXH3-128 of bytes [0, 88) || payload, at
// offset 88), so that it is intact as far as anything unkeyed can tell.
inline void RecomputeChecksum(std::vector<uint8_t>& object) {
  constexpr size_t kChecksumAt = 88;
  const uint64_t sum = Hasher128()
                           .Add(object.data(), kChecksumAt)
                           .Add(object.data() + kObjectHeaderBytes,
                                object.size() - kObjectHeaderBytes)
                           .Finish()
                           .lo;
  for (size_t i = 0; i < 8; ++i) {
    object[kChecksumAt + i] = uint8_t(sum >> (8 * i));
  }
}

// `object` with its MAC fields (nonce, algorithm, tag) zeroed: what a tier
// returns, as it was before the tier sealed it.
inline std::vector<uint8_t> Unsealed(std::vector<uint8_t> object) {
  if (object.size() >= kObjectHeaderBytes) {
    std::fill(object.begin() + kObjectMacNonceAt,
              object.begin() + kObjectHeaderBytes, uint8_t{0});
  }
  return object;
}

}  // namespace kvstash::store
