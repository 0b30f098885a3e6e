// Objects for the tier tests: a small layout (512-byte blocks), keys derived
// from an id, and well-formed objects whose payload is derived from the id
// (the id itself first, little-endian, then every third byte zero so values
// are not C strings).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
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

// Puts objects of very different sizes into `tier` (1 to 2048 blocks: 0.6
// KiB to 1 MiB) and flushes it, then reads them back in Visits whose key
// orders and sizes alternate, so that every buffer a tier reuses (the disk
// tier's read buffers, the Redis replies') is read into after a larger
// object and after a smaller one. Each key is visited once, on the calling
// thread, with exactly its object (as stored, before sealing); an absent key
// is not visited. Get, Visit with copies, agrees.
inline void ExpectVisitsGiveEachObjectExactly(Tier& tier) {
  const std::vector<int> blocks = {2048, 1, 300, 7, 1500, 129};
  std::vector<BlockKey> keys;
  for (size_t i = 0; i < blocks.size(); ++i) {
    keys.push_back(KeyOf(100 + i));
    ASSERT_TRUE(tier.Put(keys[i], MakeObject(100 + i, blocks[i])).ok());
  }
  tier.Flush();
  const BlockKey absent = KeyOf(99);
  const std::vector<std::vector<size_t>> rounds = {
      {0, 1, 2, 3, 4, 5}, {1}, {5, 4, 3, 2, 1, 0}, {3, 0}, {2, 6, 1}, {4}};
  for (int pass = 0; pass < 2; ++pass) {
    for (const std::vector<size_t>& round : rounds) {
      std::vector<BlockKey> asked;
      for (const size_t r : round) {
        asked.push_back(r < keys.size() ? keys[r] : absent);
      }
      std::vector<int> visits(asked.size(), 0);
      const std::thread::id caller = std::this_thread::get_id();
      const std::vector<bool> found =
          tier.Visit(asked, [&](size_t i, std::span<const uint8_t> object) {
            EXPECT_EQ(std::this_thread::get_id(), caller);
            ASSERT_LT(i, asked.size());
            ++visits[i];
            const size_t r = round[i];
            ASSERT_LT(r, keys.size());
            EXPECT_EQ(Unsealed({object.begin(), object.end()}),
                      MakeObject(100 + r, blocks[r]))
                << "object " << r << " of round " << i;
          });
      ASSERT_EQ(found.size(), asked.size());
      for (size_t i = 0; i < asked.size(); ++i) {
        const bool present = round[i] < keys.size();
        EXPECT_EQ(found[i], present) << i;
        EXPECT_EQ(visits[i], present ? 1 : 0) << i;
      }
      const std::vector<std::optional<std::vector<uint8_t>>> got =
          tier.Get(asked);
      for (size_t i = 0; i < asked.size(); ++i) {
        EXPECT_EQ(got[i].has_value(), found[i]);
        if (got[i]) {
          EXPECT_EQ(Unsealed(*got[i]),
                    MakeObject(100 + round[i], blocks[round[i]]));
        }
      }
    }
  }
}

}  // namespace kvstash::store
