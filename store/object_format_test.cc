#include "store/object_format.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/kv_format_testing.h"
#include "store/object_testing.h"

namespace kvstash::store {
namespace {

using kernels::BlockLayout;
using kernels::KvFormat;
using kernels::KvType;

using Bytes = std::vector<uint8_t>;

BlockLayout TestLayout(KvFormat kv = {}) {
  BlockLayout l;
  l.n_layers = 2;
  l.n_kv_heads = 2;
  l.head_dim = 8;
  l.block_tokens = 4;
  l.kv = kv;
  return l;
}

using kernels::testing::AllKvFormats;

const Hash128 kFingerprint = HashBytes("namespace", 9);
const Hash128 kKey = HashBytes("key", 3);
const Hash128 kParent = HashBytes("parent", 6);

std::vector<uint8_t> Payload(size_t n, uint8_t seed) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = uint8_t(seed + i * 7);
  return p;
}

std::vector<uint8_t> Encode(int blocks = 1,
                            const BlockLayout& l = TestLayout()) {
  return EncodeObject(kFingerprint, kParent, kKey, l,
                      uint32_t(blocks * l.block_tokens),
                      Payload(size_t(blocks) * l.block_bytes(), 3));
}

void PutU32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + size_t(i)] = uint8_t(v >> (8 * i));
}

// Recomputes the checksum, so that a test can make an intact object with
// header values no writer of this build produces.
void Reseal(std::vector<uint8_t>& b) { RecomputeChecksum(b); }

TEST(ObjectFormatTest, RoundTripsOneAndSeveralBlocks) {
  for (const KvFormat& f : AllKvFormats()) {
    SCOPED_TRACE(kernels::KvFormatName(f));
    for (const int blocks : {1, 3}) {
      const BlockLayout l = TestLayout(f);
      const std::vector<uint8_t> payload =
          Payload(size_t(blocks) * l.block_bytes(), uint8_t(blocks));
      const std::vector<uint8_t> obj =
          EncodeObject(kFingerprint, kParent, kKey, l,
                       uint32_t(blocks * l.block_tokens), payload);
      ASSERT_EQ(obj.size(), kObjectHeaderBytes + payload.size());

      Result<ObjectView> v = DecodeObject(obj, kFingerprint, kKey, l);
      ASSERT_TRUE(v.ok()) << v.status().ToString();
      EXPECT_EQ(v->header.fingerprint, kFingerprint);
      EXPECT_EQ(v->header.key, kKey);
      EXPECT_EQ(v->header.parent, kParent);
      EXPECT_EQ(v->header.token_count, uint32_t(blocks * l.block_tokens));
      EXPECT_EQ(v->header.layout.n_layers, l.n_layers);
      EXPECT_EQ(v->header.layout.n_kv_heads, l.n_kv_heads);
      EXPECT_EQ(v->header.layout.head_dim, l.head_dim);
      EXPECT_EQ(v->header.layout.block_tokens, l.block_tokens);
      EXPECT_EQ(v->header.layout.kv, f);
      EXPECT_EQ(v->header.layout.block_bytes(), l.block_bytes());
      // Header bytes 60 and 62 hold the K and V types.
      EXPECT_EQ(obj[60], uint8_t(f.k));
      EXPECT_EQ(obj[62], uint8_t(f.v));
      EXPECT_EQ(v->header.codec, Codec::kRaw);
      EXPECT_EQ(v->header.payload_bytes, payload.size());
      EXPECT_EQ(v->payload.data(), obj.data() + kObjectHeaderBytes);
      EXPECT_TRUE(std::equal(v->payload.begin(), v->payload.end(),
                             payload.begin(), payload.end()));
    }
  }
}

// The encoding is part of the on-disk and on-Redis contract: little-endian
// fields at fixed offsets, and the same bytes on every machine.
TEST(ObjectFormatTest, EncodingIsLittleEndianAndStable) {
  const std::vector<uint8_t> obj = Encode(2);
  EXPECT_EQ(std::string(obj.begin(), obj.begin() + 4), "KVSO");
  EXPECT_EQ(obj[4], 4);  // version
  EXPECT_EQ(obj[5] | obj[6] | obj[7], 0);
  EXPECT_EQ(obj[8], uint8_t(kFingerprint.lo));
  EXPECT_EQ(obj[16], uint8_t(kFingerprint.hi));
  EXPECT_EQ(obj[24], uint8_t(kKey.lo));
  EXPECT_EQ(obj[40], 8);                    // tokens
  EXPECT_EQ(obj[44], 2);                    // n_layers
  EXPECT_EQ(obj[52], 8);                    // head_dim
  EXPECT_EQ(obj[60], 1);                    // K f16
  EXPECT_EQ(obj[61], 0);                    // raw
  EXPECT_EQ(obj[62], 1);                    // V f16
  EXPECT_EQ(obj[63], 0);                    // reserved
  EXPECT_EQ(obj[64] | obj[65] << 8, 1024);  // payload bytes
  EXPECT_EQ(obj[kObjectHeaderBytes], 3);    // first payload byte
  EXPECT_EQ(obj[72], uint8_t(kParent.lo));
  EXPECT_EQ(obj[80], uint8_t(kParent.hi));
  for (size_t i = 96; i < kObjectHeaderBytes; ++i) {
    EXPECT_EQ(obj[i], 0) << i;  // unsealed: no MAC nonce, algorithm or tag
  }
  EXPECT_EQ(HashBytes(obj.data(), obj.size()).Hex(),
            "ee418992ca066ac50b0739542583046a");
}

TEST(ObjectFormatTest, ObjectOfAnotherNamespaceKeyOrLayoutIsRefused) {
  const BlockLayout l = TestLayout();
  const std::vector<uint8_t> obj = Encode();
  struct Case {
    std::string field;
    Hash128 fingerprint;
    Hash128 key;
    BlockLayout layout;
  };
  std::vector<Case> cases;
  cases.push_back({"fingerprint", HashBytes("other", 5), kKey, l});
  cases.push_back({"key", kFingerprint, HashBytes("other", 5), l});
  BlockLayout m = l;
  m.n_layers = 3;
  cases.push_back({"n_layers", kFingerprint, kKey, m});
  m = l;
  m.n_kv_heads = 1;
  cases.push_back({"n_kv_heads", kFingerprint, kKey, m});
  m = l;
  m.head_dim = 16;
  cases.push_back({"head_dim", kFingerprint, kKey, m});
  m = l;
  m.block_tokens = 2;
  cases.push_back({"block_tokens", kFingerprint, kKey, m});
  for (const KvFormat& f : AllKvFormats()) {
    if (f == l.kv) continue;
    m = l;
    m.kv = f;
    cases.push_back({"kv types", kFingerprint, kKey, m});
  }
  // One side differing is enough.
  m = l;
  m.kv.v = KvType::kQ8;
  cases.push_back({"kv types", kFingerprint, kKey, m});
  m = l;
  m.kv.k = KvType::kKivi4;
  cases.push_back({"kv types", kFingerprint, kKey, m});
  for (const Case& c : cases) {
    for (const auto decode : {&DecodeObject, &DecodeVerifiedObject}) {
      Result<ObjectView> v =
          decode(obj, c.fingerprint, c.key, c.layout, Codec::kRaw);
      ASSERT_FALSE(v.ok()) << c.field;
      EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument) << c.field;
      EXPECT_NE(v.status().message().find(c.field), std::string::npos)
          << v.status().message();
    }
  }
  // The object itself is intact.
  EXPECT_TRUE(ParseObject(obj).ok());
}

// The first block of a chain names h_0 (the fingerprint) as its parent; a
// later object names the key of the object before it.
TEST(ObjectFormatTest, ParentChainsObjects) {
  const BlockLayout l = TestLayout();
  const Bytes payload = Payload(l.block_bytes(), 1);
  const Bytes first = EncodeObject(kFingerprint, kFingerprint, kParent, l,
                                   uint32_t(l.block_tokens), payload);
  const Bytes second = EncodeObject(kFingerprint, kParent, kKey, l,
                                    uint32_t(l.block_tokens), payload);
  Result<ObjectView> a = DecodeObject(first, kFingerprint, kParent, l);
  Result<ObjectView> b = DecodeObject(second, kFingerprint, kKey, l);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->header.parent, kFingerprint);
  EXPECT_EQ(b->header.parent, a->header.key);
}

// A header read on its own, without the payload behind it.
TEST(ObjectFormatTest, HeaderPrefixParsesWithoutThePayload) {
  const Bytes obj = Encode(3);
  const std::span<const uint8_t> header(obj.data(), kObjectHeaderBytes);
  EXPECT_FALSE(ParseObjectHeader(header).ok());  // the payload is missing
  Result<ObjectHeader> h = ParseHeaderPrefix(header);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->key, kKey);
  EXPECT_EQ(h->parent, kParent);
  EXPECT_EQ(h->payload_bytes, obj.size() - kObjectHeaderBytes);
  EXPECT_TRUE(ParseHeaderPrefix(obj).ok());  // what follows is not read
  EXPECT_EQ(
      ParseHeaderPrefix(header.first(kObjectHeaderBytes - 1)).status().code(),
      StatusCode::kCorruption);
  Bytes damaged(header.begin(), header.end());
  damaged[110] = 1;  // reserved
  EXPECT_EQ(ParseHeaderPrefix(damaged).status().code(),
            StatusCode::kCorruption);
}

TEST(ObjectFormatTest, UnknownCodecIsNotSupported) {
  std::vector<uint8_t> obj = Encode();
  obj[61] = 7;
  Reseal(obj);
  ASSERT_TRUE(ParseObject(obj).ok());
  Result<ObjectView> v = DecodeObject(obj, kFingerprint, kKey, TestLayout());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kNotSupported);
}

// Intact checksums over headers that no writer produces: still refused as
// corrupt, with a message saying what is wrong.
TEST(ObjectFormatTest, BadHeaderValuesAreCorruption) {
  struct Case {
    std::string what;
    void (*edit)(Bytes&);
    std::string message;
  };
  const Case cases[] = {
      {"magic", [](Bytes& b) { b[0] = 'X'; }, "magic"},
      {"version 1 (no parent)", [](Bytes& b) { PutU32(b, 4, 1); }, "version 1"},
      {"version 2 (no V type)", [](Bytes& b) { PutU32(b, 4, 2); }, "version 2"},
      {"version 3 (no MAC)", [](Bytes& b) { PutU32(b, 4, 3); }, "version 3"},
      {"version 5", [](Bytes& b) { PutU32(b, 4, 5); }, "version 5"},
      {"reserved 1", [](Bytes& b) { b[63] = 1; }, "reserved"},
      {"reserved 2", [](Bytes& b) { b[110] = 1; }, "reserved"},
      {"MAC algorithm", [](Bytes& b) { b[108] = 3; }, "MAC algorithm"},
      {"unsealed with a tag", [](Bytes& b) { b[120] = 1; }, "unsealed"},
      {"unsealed with a nonce", [](Bytes& b) { b[96] = 1; }, "unsealed"},
      {"payload length", [](Bytes& b) { PutU32(b, 64, 100); }, "payload"},
      {"payload length high", [](Bytes& b) { b[71] = 0x80; }, "payload"},
      {"zero tokens", [](Bytes& b) { PutU32(b, 40, 0); }, "token count"},
      {"partial block", [](Bytes& b) { PutU32(b, 40, 6); }, "token count"},
      {"zero layers", [](Bytes& b) { PutU32(b, 44, 0); }, "layout"},
      {"huge head_dim", [](Bytes& b) { PutU32(b, 52, 0x80000000u); }, "layout"},
      // Each field fits; their product is 2^80 bytes (0 in 64 bits).
      {"blocks over 1 GiB",
       [](Bytes& b) {
         PutU32(b, 44, 1u << 26);
         PutU32(b, 48, 1u << 27);
         PutU32(b, 52, 1u << 14);
       },
       "blocks over 1024 MiB"},
      {"K type", [](Bytes& b) { b[60] = 8; }, "kv type codes 8, 1"},
      {"V type", [](Bytes& b) { b[62] = 200; }, "kv type codes 1, 200"},
      // A known type the layout cannot hold: q8 needs head_dim % 8 == 0.
      {"type for head_dim",
       [](Bytes& b) {
         b[60] = uint8_t(KvType::kQ8);
         PutU32(b, 52, 12);
       },
       "object layout"},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> obj = Encode();
    c.edit(obj);
    Reseal(obj);
    Result<ObjectView> v = ParseObject(obj);
    ASSERT_FALSE(v.ok()) << c.what;
    EXPECT_EQ(v.status().code(), StatusCode::kCorruption) << c.what;
    EXPECT_NE(v.status().message().find(c.message), std::string::npos)
        << c.what << ": " << v.status().message();
    EXPECT_FALSE(ParseObjectHeader(obj).ok()) << c.what;
    // A header read alone cannot know how many bytes follow it.
    EXPECT_EQ(ParseHeaderPrefix(obj).ok(), c.message == "payload") << c.what;
  }
}

TEST(ObjectFormatTest, RawPayloadThatIsNotWholeBlocksIsCorruption) {
  // Two blocks' worth of tokens over one block of payload, consistently
  // framed and sealed.
  std::vector<uint8_t> obj = Encode(1);
  PutU32(obj, 40, 8);
  Reseal(obj);
  ASSERT_TRUE(ParseObject(obj).ok());
  Result<ObjectView> v = DecodeObject(obj, kFingerprint, kKey, TestLayout());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kCorruption);
}

TEST(ObjectFormatTest, DamageIsCaughtByTheChecksum) {
  std::vector<uint8_t> obj = Encode();
  obj[kObjectHeaderBytes + 5] ^= 1;
  Result<ObjectView> v = ParseObject(obj);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kCorruption);
  EXPECT_NE(v.status().message().find("checksum"), std::string::npos);
  EXPECT_TRUE(ParseObjectHeader(obj).ok());  // framing alone cannot tell
  // DecodeVerifiedObject trusts a checksum verified before: it checks the
  // framing and the identity only.
  Result<ObjectView> trusted =
      DecodeVerifiedObject(obj, kFingerprint, kKey, TestLayout());
  ASSERT_TRUE(trusted.ok()) << trusted.status().ToString();
  EXPECT_EQ(trusted->payload.size(), TestLayout().block_bytes());
  obj.pop_back();
  EXPECT_EQ(DecodeVerifiedObject(obj, kFingerprint, kKey, TestLayout())
                .status()
                .code(),
            StatusCode::kCorruption);
}

// 2000 random mutations (byte flips, truncations, extensions, splices) of an
// encoded object: none decodes, none crashes (run under ASan/UBSan too).
TEST(ObjectFormatTest, RandomDamageNeverDecodes) {
  const BlockLayout l = TestLayout();
  const std::vector<uint8_t> good = Encode(2);
  std::mt19937_64 rng(1234);
  auto uniform = [&](size_t n) { return size_t(rng() % n); };
  for (int round = 0; round < 2000; ++round) {
    std::vector<uint8_t> bad = good;
    switch (round % 4) {
      case 0: {  // flip 1..8 bytes (each to a different value)
        const size_t n = 1 + uniform(8);
        for (size_t k = 0; k < n; ++k) {
          bad[uniform(bad.size())] ^= uint8_t(1 + uniform(255));
        }
        if (bad == good) bad[0] ^= 1;  // two flips of one byte cancelled
        break;
      }
      case 1:  // truncate anywhere, header included
        bad.resize(uniform(bad.size()));
        break;
      case 2: {  // extend
        const size_t n = 1 + uniform(64);
        for (size_t k = 0; k < n; ++k) bad.push_back(uint8_t(rng()));
        break;
      }
      case 3: {  // random bytes behind an intact header
        bad.resize(kObjectHeaderBytes + uniform(3 * l.block_bytes()));
        for (size_t k = kObjectHeaderBytes; k < bad.size(); ++k) {
          bad[k] = uint8_t(rng());
        }
        if (bad == good) bad.back() ^= 1;
        break;
      }
    }
    Result<ObjectView> p = ParseObject(bad);
    ASSERT_FALSE(p.ok()) << "round " << round;
    EXPECT_EQ(p.status().code(), StatusCode::kCorruption) << "round " << round;
    Result<ObjectView> d = DecodeObject(bad, kFingerprint, kKey, l);
    ASSERT_FALSE(d.ok()) << "round " << round;
    EXPECT_EQ(d.status().code(), StatusCode::kCorruption) << "round " << round;
  }
  // Arbitrary byte strings, some behind a valid magic and version.
  for (int round = 0; round < 500; ++round) {
    std::vector<uint8_t> junk(uniform(400));
    for (uint8_t& b : junk) b = uint8_t(rng());
    if (round % 2 == 0 && junk.size() >= 8) {
      std::memcpy(junk.data(), good.data(), 8);
    }
    EXPECT_FALSE(ParseObject(junk).ok());
    EXPECT_FALSE(DecodeObject(junk, kFingerprint, kKey, l).ok());
  }
}

}  // namespace
}  // namespace kvstash::store
