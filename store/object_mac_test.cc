#include "store/object_mac.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "store/object_testing.h"
#include "store/tier_test_util.h"

namespace kvstash::store {
namespace {

using Bytes = std::vector<uint8_t>;

const std::string kSecret(40, 's');

ObjectAuthenticator Keyed(const std::string& secret = kSecret) {
  Result<ObjectAuthenticator> a = ObjectAuthenticator::FromSecret(secret);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return *a;
}

Bytes Sealed(const ObjectAuthenticator& a, uint64_t id = 1) {
  Bytes object = MakeObject(id, 2);
  a.Seal(object);
  return object;
}

StatusCode CodeOf(const Result<ObjectView>& v) { return v.status().code(); }

TEST(ObjectMacTest, SealedObjectVerifiesAndKeepsItsContent) {
  const ObjectAuthenticator a = Keyed();
  const Bytes plain = MakeObject(1, 2);
  const Bytes sealed = Sealed(a);
  ASSERT_EQ(sealed.size(), plain.size());
  // Only the MAC fields changed: nonce, algorithm, tag.
  for (size_t i = 0; i < plain.size(); ++i) {
    if (i >= kObjectMacNonceAt && i < kObjectHeaderBytes) continue;
    ASSERT_EQ(sealed[i], plain[i]) << i;
  }
  EXPECT_EQ(sealed[kObjectMacAlgorithmAt], 1);
  Result<ObjectView> v = a.Verify(sealed);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->header.key, KeyOf(1));
  EXPECT_EQ(v->header.mac, MacAlgorithm::kGmacAes256);
  EXPECT_TRUE(std::equal(v->payload.begin(), v->payload.end(),
                         plain.begin() + kObjectHeaderBytes));
  // The object is still intact to an unkeyed reader.
  EXPECT_TRUE(ParseObject(sealed).ok());
}

TEST(ObjectMacTest, EverySealDrawsAFreshNonce) {
  const ObjectAuthenticator a = Keyed();
  const Bytes x = Sealed(a), y = Sealed(a);
  EXPECT_FALSE(std::equal(x.begin() + kObjectMacNonceAt,
                          x.begin() + kObjectMacAlgorithmAt,
                          y.begin() + kObjectMacNonceAt));
  EXPECT_TRUE(a.Verify(x).ok());
  EXPECT_TRUE(a.Verify(y).ok());
}

TEST(ObjectMacTest, TheSameSecretGivesTheSameKey) {
  const Bytes sealed = Sealed(Keyed());
  EXPECT_TRUE(Keyed().Verify(sealed).ok());  // another server of the fleet
  EXPECT_EQ(CodeOf(Keyed(std::string(40, 't')).Verify(sealed)),
            StatusCode::kPermissionDenied);  // another fleet
}

// The attack of issue 13: edit the payload (or the header) and recompute the
// checksum. Intact to anything unkeyed, refused as forged by the key.
TEST(ObjectMacTest, EditsWithARecomputedChecksumAreForged) {
  const ObjectAuthenticator a = Keyed();
  struct Edit {
    const char* what;
    size_t at;
  };
  const Edit edits[] = {{"payload", kObjectHeaderBytes + 17},
                        {"last payload byte", 0},
                        {"key", 24},
                        {"parent", 72},
                        {"K type", 60}};
  for (const Edit& e : edits) {
    Bytes forged = Sealed(a);
    const size_t at = e.at == 0 ? forged.size() - 1 : e.at;
    forged[at] = e.at == 60 ? 5 : uint8_t(forged[at] ^ 0x5a);
    RecomputeChecksum(forged);
    if (e.at != 24 && e.at != 72) {
      EXPECT_TRUE(ParseObject(forged).ok()) << e.what;
    }
    Result<ObjectView> v = a.Verify(forged);
    EXPECT_EQ(CodeOf(v), StatusCode::kPermissionDenied) << e.what;
  }
  // The MAC fields themselves are not under the checksum.
  for (const size_t at : {kObjectMacNonceAt, kObjectMacTagAt + 15}) {
    Bytes forged = Sealed(a);
    forged[at] ^= 1;
    EXPECT_EQ(CodeOf(a.Verify(forged)), StatusCode::kPermissionDenied) << at;
  }
}

TEST(ObjectMacTest, DamageIsCorruptionNotForgery) {
  const ObjectAuthenticator a = Keyed();
  Bytes damaged = Sealed(a);
  damaged[kObjectHeaderBytes + 3] ^= 0x10;  // checksum not recomputed
  EXPECT_EQ(CodeOf(a.Verify(damaged)), StatusCode::kCorruption);
  damaged = Sealed(a);
  damaged.pop_back();  // torn
  EXPECT_EQ(CodeOf(a.Verify(damaged)), StatusCode::kCorruption);
}

TEST(ObjectMacTest, UnsealedObjectsAreRefusedByAKeyAndReadWithout) {
  const Bytes plain = MakeObject(3);
  Result<ObjectView> keyed = Keyed().Verify(plain);
  EXPECT_EQ(CodeOf(keyed), StatusCode::kPermissionDenied);
  EXPECT_NE(keyed.status().message().find("not sealed"), std::string::npos);
  const ObjectAuthenticator none;
  EXPECT_FALSE(none.keyed());
  Bytes copy = plain;
  none.Seal(copy);
  EXPECT_EQ(copy, plain);  // unkeyed: nothing sealed
  EXPECT_TRUE(none.Verify(plain).ok());
  // Without a key, a sealed object is read on its checksum alone.
  EXPECT_TRUE(none.Verify(Sealed(Keyed())).ok());
  Bytes damaged = plain;
  damaged.back() ^= 1;
  EXPECT_EQ(CodeOf(none.Verify(damaged)), StatusCode::kCorruption);
}

TEST(ObjectMacTest, ShortSecretsAreRefusedWithAHint) {
  Result<ObjectAuthenticator> a = ObjectAuthenticator::FromSecret("short");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("openssl rand"), std::string::npos);
  EXPECT_TRUE(ObjectAuthenticator::FromSecret(
                  std::string(ObjectAuthenticator::kMinSecretBytes, 'x'))
                  .ok());
}

}  // namespace
}  // namespace kvstash::store
