// Objects for the tier tests: a small layout (512-byte blocks), keys derived
// from an id, and well-formed objects whose payload is derived from the id
// (the id itself first, little-endian, then every third byte zero so values
// are not C strings).
#pragma once

#include <cstdint>
#include <vector>

#include "base/hash.h"
#include "kernels/block_layout.h"
#include "store/object_format.h"
#include "store/object_testing.h"
#include "store/tier.h"

namespace kvstash::store {

inline kernels::BlockLayout TestLayout() {
  kernels::BlockLayout l;
  l.n_layers = 2;
  l.n_kv_heads = 2;
  l.head_dim = 8;
  l.block_tokens = 4;
  l.kv = {kernels::KvType::kF16, kernels::KvType::kF16};
  return l;  // 512-byte blocks
}

inline const Hash128 kFingerprint = HashBytes("namespace", 9);

inline BlockKey KeyOf(uint64_t id) {
  return Hasher128().Add("test-key").AddU64(id).Finish();
}

// Object `id` of `blocks` blocks, keyed KeyOf(id), in namespace
// `fingerprint`, chained to `parent` (by default the first object of its
// chain).
inline std::vector<uint8_t> MakeObject(
    uint64_t id, int blocks = 1, const Hash128& parent = kFingerprint,
    const Hash128& fingerprint = kFingerprint) {
  const kernels::BlockLayout l = TestLayout();
  std::vector<uint8_t> payload(size_t(blocks) * l.block_bytes());
  for (size_t i = 0; i < payload.size(); ++i) {
    payload[i] = i < 8        ? uint8_t(id >> (8 * i))
                 : i % 3 == 0 ? 0
                              : uint8_t(id * 31 + i * 7);
  }
  return EncodeObject(fingerprint, parent, KeyOf(id), l,
                      uint32_t(blocks * l.block_tokens), payload);
}

}  // namespace kvstash::store
