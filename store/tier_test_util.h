// Objects for the tier tests: a small layout (512-byte blocks), keys derived
// from an id, and well-formed objects whose payload is derived from the id
// (the id itself first, little-endian, then every third byte zero so values
// are not C strings); and the checks every tier passes (Visits, ranged
// reads).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/hash.h"
#include "base/status.h"
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

// An object read in ranges (Tier::ReadRanges): its header, and its payload
// in parts.
struct GatheredObject {
  std::vector<uint8_t> header = std::vector<uint8_t>(kObjectHeaderBytes);
  std::vector<std::vector<uint8_t>> parts;

  // The parts, as VerifyGathered takes them.
  std::vector<std::span<const uint8_t>> payload() const {
    return {parts.begin(), parts.end()};
  }
  // The object: header and parts joined.
  std::vector<uint8_t> Joined() const {
    std::vector<uint8_t> out = header;
    for (const std::vector<uint8_t>& p : parts) {
      out.insert(out.end(), p.begin(), p.end());
    }
    return out;
  }
};

// Reads the objects of `keys` (`sizes[i]` bytes each) with one ReadRanges:
// the header of each, and its payload cut into `pieces` parts at unaligned
// points (a part may be empty). Returns ReadRanges' answer.
inline std::vector<bool> GatherObjects(Tier& tier,
                                       std::span<const BlockKey> keys,
                                       std::span<const size_t> sizes,
                                       int pieces,
                                       std::vector<GatheredObject>* out) {
  out->assign(keys.size(), {});
  std::vector<Tier::RangeRead> ranges;
  for (size_t i = 0; i < keys.size(); ++i) {
    GatheredObject& g = (*out)[i];
    ranges.push_back({i, 0, g.header});
    const size_t payload = sizes[i] - kObjectHeaderBytes;
    size_t at = 0;
    for (size_t k = 1; k <= size_t(pieces); ++k) {
      const size_t cut =
          k == size_t(pieces)
              ? payload
              : std::min(payload, payload * k / size_t(pieces) + 13 * k);
      g.parts.emplace_back(cut - at);
      at = cut;
    }
    uint64_t offset = kObjectHeaderBytes;
    for (std::vector<uint8_t>& part : g.parts) {
      ranges.push_back({i, offset, part});
      offset += part.size();
    }
  }
  return tier.ReadRanges(keys, ranges);
}

// The stored object of `key` (sealed), read whole by Get.
inline std::vector<uint8_t> StoredObject(Tier& tier, const BlockKey& key) {
  std::optional<std::vector<uint8_t>> got = tier.Get({&key, 1})[0];
  EXPECT_TRUE(got.has_value());
  return got.value_or(std::vector<uint8_t>());
}

// Ranged reads of `count` objects `tier` stored (ids from `first`, of 1 to
// 2048 blocks: 0.6 KiB to 1 MiB) give exactly the bytes Get returns: at
// unaligned offsets, up to the object's end, several ranges of an object
// in one call, overlapping, in no particular order; they count bytes_read
// only. Then each object gathered from its header and its payload cut at
// arbitrary points verifies, and counts a hit.
inline void ExpectRangesReadStoredObjects(Tier& tier, uint64_t first,
                                          int count) {
  ASSERT_TRUE(tier.reads_ranges());
  const int blocks[] = {2048, 1, 300, 7};
  std::vector<BlockKey> keys;
  std::vector<std::vector<uint8_t>> whole;
  std::vector<size_t> sizes;
  for (int i = 0; i < count; ++i) {
    const uint64_t id = first + uint64_t(i);
    keys.push_back(KeyOf(id));
    ASSERT_TRUE(tier.Put(keys.back(), MakeObject(id, blocks[i % 4])).ok());
  }
  tier.Flush();
  for (const BlockKey& key : keys) {
    whole.push_back(StoredObject(tier, key));
    sizes.push_back(whole.back().size());
  }
  const TierStats before = tier.Stats();

  // Per object, the last first: a tail up to its end, a run from the
  // payload's start (what a layer-ordered load reads), one across a
  // 4096-byte boundary, its header, and all of it.
  std::vector<Tier::RangeRead> ranges;
  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(keys.size() * 5);
  uint64_t asked_bytes = 0;
  for (size_t i = keys.size(); i-- > 0;) {
    const uint64_t n = sizes[i];
    const uint64_t across = std::min<uint64_t>(4096, n - 12) - 5;
    const std::pair<uint64_t, uint64_t> spans[] = {
        {n - 77, 77},
        {kObjectHeaderBytes, std::min<uint64_t>(n - kObjectHeaderBytes, 32768)},
        {across, 12},
        {0, kObjectHeaderBytes},
        {0, n}};
    for (const auto& [offset, size] : spans) {
      buffers.emplace_back(size, uint8_t{0xAB});
      ranges.push_back({i, offset, buffers.back()});
      asked_bytes += size;
    }
  }
  EXPECT_EQ(tier.ReadRanges(keys, ranges),
            std::vector<bool>(keys.size(), true));
  for (const Tier::RangeRead& r : ranges) {
    const std::vector<uint8_t>& object = whole[r.key];
    EXPECT_TRUE(std::equal(r.into.begin(), r.into.end(),
                           object.begin() + ptrdiff_t(r.offset)))
        << "object " << r.key << ", offset " << r.offset << ", "
        << r.into.size() << " bytes";
  }
  TierStats st = tier.Stats();
  EXPECT_EQ(st.bytes_read - before.bytes_read, asked_bytes);
  EXPECT_EQ(st.hits, before.hits);
  EXPECT_EQ(st.misses, before.misses);
  EXPECT_EQ(st.errors, 0u) << st.last_error;

  std::vector<GatheredObject> gathered;
  EXPECT_EQ(GatherObjects(tier, keys, sizes, 5, &gathered),
            std::vector<bool>(keys.size(), true));
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(gathered[i].Joined(), whole[i]) << i;
    const Status verdict =
        tier.VerifyGathered(keys[i], gathered[i].header, gathered[i].payload());
    EXPECT_TRUE(verdict.ok()) << i << ": " << verdict.ToString();
  }
  st = tier.Stats();
  EXPECT_EQ(st.hits, before.hits + keys.size());
  EXPECT_EQ(st.misses, before.misses);
  EXPECT_EQ(st.corrupt_dropped + st.forged_dropped, 0u);
  EXPECT_EQ(st.errors, 0u) << st.last_error;
}

// A key the tier does not hold, and a range past the end of an object
// (ending a byte after it, or starting far beyond it), fail their key only:
// the other keys of the call read, and nothing counts as an error, a hit
// or a miss.
inline void ExpectMissingKeysAndRangesPastTheEndFailAlone(Tier& tier) {
  const std::vector<BlockKey> keys = {KeyOf(300), KeyOf(301), KeyOf(302),
                                      KeyOf(303), KeyOf(304)};
  for (const uint64_t id : {300, 302, 303, 304}) {
    ASSERT_TRUE(tier.Put(KeyOf(id), MakeObject(id, 3)).ok());
  }
  tier.Flush();
  const std::vector<uint8_t> first = StoredObject(tier, keys[0]);
  const std::vector<uint8_t> fourth = StoredObject(tier, keys[3]);
  const uint64_t n = first.size();
  const TierStats before = tier.Stats();
  std::vector<uint8_t> b0(100), b1(128), b2(128), b2_past(11), b3(10), b4(1);
  const std::vector<Tier::RangeRead> ranges = {
      {0, 5, b0},            // read
      {1, 0, b1},            // absent
      {2, 0, b2},            // read, but the next range of its key is not
      {2, n - 10, b2_past},  // one byte past the end
      {3, n - 10, b3},       // up to the end: read
      {4, n + 4096, b4}};    // far past the end
  EXPECT_EQ(tier.ReadRanges(keys, ranges),
            (std::vector<bool>{true, false, false, true, false}));
  EXPECT_TRUE(std::equal(b0.begin(), b0.end(), first.begin() + 5));
  EXPECT_TRUE(std::equal(b3.begin(), b3.end(), fourth.end() - 10));
  const TierStats st = tier.Stats();
  EXPECT_EQ(st.hits, before.hits);
  EXPECT_EQ(st.misses, before.misses);
  EXPECT_EQ(st.errors, 0u) << st.last_error;
  EXPECT_EQ(st.corrupt_dropped + st.forged_dropped, 0u);
  EXPECT_GE(st.bytes_read - before.bytes_read, b0.size() + b3.size());
  // Nothing was dropped.
  EXPECT_EQ(tier.Exists(keys),
            (std::vector<bool>{true, false, true, true, true}));
}

// What the range tests do to a stored object (of at least 4229 bytes)
// before reading it in ranges, and the refusal VerifyGathered must give:
// the attack of issue 13 (an edited payload with its checksum recomputed),
// damage, and another key's object in its place.
struct ObjectEdit {
  std::string what;
  StatusCode code;
  void (*apply)(std::vector<uint8_t>& object,
                const std::vector<uint8_t>& other);
};
inline std::vector<ObjectEdit> RangeReadEdits() {
  using Bytes = std::vector<uint8_t>;
  return {
      {"payload edited, checksum recomputed", StatusCode::kPermissionDenied,
       [](Bytes& b, const Bytes&) {
         b[kObjectHeaderBytes + 4100] ^= 0x40;
         RecomputeChecksum(b);
       }},
      {"payload byte flipped", StatusCode::kCorruption,
       [](Bytes& b, const Bytes&) { b[kObjectHeaderBytes + 4100] ^= 0x40; }},
      {"another key's object", StatusCode::kCorruption,
       [](Bytes& b, const Bytes& other) { b = other; }},
  };
}

// The object of `key`, edited into `object` behind the tier's back by
// `edit`, read in ranges: the ranges give the edited bytes (reads do not
// verify), VerifyGathered refuses it with edit.code and a message naming
// `where` (its file or Redis key), and counts one miss, as forged or as
// damaged, with no hit and no error.
inline void ExpectEditedObjectRefused(Tier& tier, const BlockKey& key,
                                      const std::vector<uint8_t>& object,
                                      const ObjectEdit& edit,
                                      const std::string& where) {
  std::vector<GatheredObject> gathered;
  const size_t sizes[] = {object.size()};
  ASSERT_EQ(GatherObjects(tier, {&key, 1}, sizes, 3, &gathered),
            std::vector<bool>{true});
  EXPECT_EQ(gathered[0].Joined(), object);  // unverified
  const Status verdict =
      tier.VerifyGathered(key, gathered[0].header, gathered[0].payload());
  EXPECT_EQ(verdict.code(), edit.code) << verdict.ToString();
  EXPECT_NE(verdict.message().find(where), std::string::npos)
      << verdict.ToString();
  const TierStats st = tier.Stats();
  EXPECT_EQ(st.forged_dropped,
            edit.code == StatusCode::kPermissionDenied ? 1u : 0u);
  EXPECT_EQ(st.corrupt_dropped, edit.code == StatusCode::kCorruption ? 1u : 0u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.hits, 0u);
  EXPECT_EQ(st.errors, 0u) << st.last_error;
  EXPECT_EQ(st.last_error, verdict.ToString());
}

// While `tier` cannot store anything (its writer or its server held), an
// object accepted by Put as `key` (MakeObject(5, 9)) is read in ranges from
// the queue and verifies gathered, and a range past its end fails; nothing
// is read from the medium. Then `release` lets the tier store it, and
// ranges read it from the medium. The tier holds nothing else.
template <typename Release>
void ExpectQueuedObjectReadInRanges(Tier& tier, Release release) {
  const BlockKey key = KeyOf(5);
  ASSERT_TRUE(tier.Put(key, MakeObject(5, 9)).ok());
  const std::vector<uint8_t> queued = StoredObject(tier, key);  // sealed
  ASSERT_EQ(Unsealed(queued), MakeObject(5, 9));
  std::vector<GatheredObject> gathered;
  const size_t sizes[] = {queued.size()};
  ASSERT_EQ(GatherObjects(tier, {&key, 1}, sizes, 4, &gathered),
            std::vector<bool>{true});
  EXPECT_EQ(gathered[0].Joined(), queued);
  EXPECT_TRUE(
      tier.VerifyGathered(key, gathered[0].header, gathered[0].payload()).ok());
  std::vector<uint8_t> past(2);
  const Tier::RangeRead beyond = {0, queued.size() - 1, past};
  EXPECT_EQ(tier.ReadRanges({&key, 1}, {&beyond, 1}), std::vector<bool>{false});
  TierStats st = tier.Stats();
  EXPECT_EQ(st.hits, 2u);  // Get's and VerifyGathered's
  EXPECT_EQ(st.bytes_read, 0u);
  EXPECT_EQ(st.writes, 0u);
  EXPECT_EQ(st.errors, 0u) << st.last_error;

  release();
  tier.Flush();
  ASSERT_EQ(GatherObjects(tier, {&key, 1}, sizes, 4, &gathered),
            std::vector<bool>{true});
  EXPECT_EQ(gathered[0].Joined(), queued);
  st = tier.Stats();
  EXPECT_EQ(st.writes, 1u);
  EXPECT_EQ(st.bytes_read, queued.size());
  EXPECT_EQ(st.errors, 0u) << st.last_error;
}

}  // namespace kvstash::store
