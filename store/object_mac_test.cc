#include "store/object_mac.h"

#include <gtest/gtest.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "store/object_testing.h"
#include "store/tier_test_util.h"

namespace kvstash::store {
namespace {

using Bytes = std::vector<uint8_t>;

const std::string kSecret(40, 's');

ObjectAuthenticator Keyed(const std::string& secret = kSecret,
                          std::optional<MacAlgorithm> seal_with = {}) {
  Result<ObjectAuthenticator> a =
      ObjectAuthenticator::FromSecret(secret, seal_with);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return *a;
}

Bytes Sealed(const ObjectAuthenticator& a, uint64_t id = 1) {
  Bytes object = MakeObject(id, 2);
  a.Seal(object);
  return object;
}

StatusCode CodeOf(const Result<ObjectView>& v) { return v.status().code(); }

// Each test runs for objects sealed with each algorithm.
class ObjectMacTest : public ::testing::TestWithParam<MacAlgorithm> {
 protected:
  ObjectAuthenticator Keyed(const std::string& secret = kSecret) const {
    return store::Keyed(secret, GetParam());
  }
};

INSTANTIATE_TEST_SUITE_P(Algorithms, ObjectMacTest,
                         ::testing::Values(MacAlgorithm::kGmacAes256,
                                           MacAlgorithm::kChaCha20Poly1305),
                         [](const auto& info) {
                           return info.param == MacAlgorithm::kGmacAes256
                                      ? std::string("Gmac")
                                      : std::string("ChaCha20Poly1305");
                         });

TEST_P(ObjectMacTest, SealedObjectVerifiesAndKeepsItsContent) {
  const ObjectAuthenticator a = Keyed();
  const Bytes plain = MakeObject(1, 2);
  const Bytes sealed = Sealed(a);
  ASSERT_EQ(sealed.size(), plain.size());
  // Only the MAC fields changed: nonce, algorithm, tag.
  for (size_t i = 0; i < plain.size(); ++i) {
    if (i >= kObjectMacNonceAt && i < kObjectHeaderBytes) continue;
    ASSERT_EQ(sealed[i], plain[i]) << i;
  }
  EXPECT_EQ(a.seal_with(), GetParam());
  EXPECT_EQ(sealed[kObjectMacAlgorithmAt], uint8_t(GetParam()));
  Result<ObjectView> v = a.Verify(sealed);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->header.key, KeyOf(1));
  EXPECT_EQ(v->header.mac, GetParam());
  EXPECT_TRUE(std::equal(v->payload.begin(), v->payload.end(),
                         plain.begin() + kObjectHeaderBytes));
  // The object is still intact to an unkeyed reader.
  EXPECT_TRUE(ParseObject(sealed).ok());
}

TEST_P(ObjectMacTest, EverySealDrawsAFreshNonce) {
  const ObjectAuthenticator a = Keyed();
  const Bytes x = Sealed(a), y = Sealed(a);
  EXPECT_FALSE(std::equal(x.begin() + kObjectMacNonceAt,
                          x.begin() + kObjectMacAlgorithmAt,
                          y.begin() + kObjectMacNonceAt));
  EXPECT_TRUE(a.Verify(x).ok());
  EXPECT_TRUE(a.Verify(y).ok());
}

TEST_P(ObjectMacTest, TheSameSecretGivesTheSameKey) {
  const Bytes sealed = Sealed(Keyed());
  EXPECT_TRUE(Keyed().Verify(sealed).ok());  // another server of the fleet
  EXPECT_EQ(CodeOf(Keyed(std::string(40, 't')).Verify(sealed)),
            StatusCode::kPermissionDenied);  // another fleet
}

// The attack of issue 13: edit the payload (or the header) and recompute the
// checksum. Intact to anything unkeyed, refused as forged by the key.
TEST_P(ObjectMacTest, EditsWithARecomputedChecksumAreForged) {
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

TEST_P(ObjectMacTest, DamageIsCorruptionNotForgery) {
  const ObjectAuthenticator a = Keyed();
  Bytes damaged = Sealed(a);
  damaged[kObjectHeaderBytes + 3] ^= 0x10;  // checksum not recomputed
  EXPECT_EQ(CodeOf(a.Verify(damaged)), StatusCode::kCorruption);
  damaged = Sealed(a);
  damaged.pop_back();  // torn
  EXPECT_EQ(CodeOf(a.Verify(damaged)), StatusCode::kCorruption);
}

TEST(ObjectMacAlgorithmsTest, UnsealedObjectsAreRefusedByAKeyAndReadWithout) {
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

TEST(ObjectMacAlgorithmsTest, ShortSecretsAreRefusedWithAHint) {
  Result<ObjectAuthenticator> a = ObjectAuthenticator::FromSecret("short");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("openssl rand"), std::string::npos);
  EXPECT_TRUE(ObjectAuthenticator::FromSecret(
                  std::string(ObjectAuthenticator::kMinSecretBytes, 'x'))
                  .ok());
}

// Any keyed reader verifies objects sealed with either algorithm under its
// secret, so servers that seal differently share one tier; the algorithm
// byte is under the tag, so relabelling an object is a forgery.
TEST(ObjectMacAlgorithmsTest, EitherAlgorithmVerifiesUnderOneSecret) {
  const ObjectAuthenticator gmac = Keyed(kSecret, MacAlgorithm::kGmacAes256);
  const ObjectAuthenticator chacha =
      Keyed(kSecret, MacAlgorithm::kChaCha20Poly1305);
  for (const ObjectAuthenticator* writer : {&gmac, &chacha}) {
    const Bytes sealed = Sealed(*writer);
    for (const ObjectAuthenticator* reader : {&gmac, &chacha}) {
      EXPECT_TRUE(reader->Verify(sealed).ok());
    }
    Bytes relabelled = sealed;
    relabelled[kObjectMacAlgorithmAt] =
        uint8_t(writer == &gmac ? MacAlgorithm::kChaCha20Poly1305
                                : MacAlgorithm::kGmacAes256);
    EXPECT_EQ(CodeOf(gmac.Verify(relabelled)), StatusCode::kPermissionDenied);
  }
}

TEST(ObjectMacAlgorithmsTest, SealsWithTheFastestAlgorithmUnlessTold) {
  const MacAlgorithm fastest = ObjectAuthenticator::FastestMacAlgorithm();
  EXPECT_TRUE(fastest == MacAlgorithm::kGmacAes256 ||
              fastest == MacAlgorithm::kChaCha20Poly1305);
  EXPECT_EQ(ObjectAuthenticator::FastestMacAlgorithm(), fastest);  // once
  EXPECT_EQ(Keyed().seal_with(), fastest);
  EXPECT_EQ(ObjectAuthenticator().seal_with(), MacAlgorithm::kNone);
  Result<ObjectAuthenticator> none =
      ObjectAuthenticator::FromSecret(kSecret, MacAlgorithm::kNone);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  // Told by name (bench tiers --tier-mac), the same key seals otherwise.
  for (const MacAlgorithm a :
       {MacAlgorithm::kGmacAes256, MacAlgorithm::kChaCha20Poly1305}) {
    Result<MacAlgorithm> parsed = ParseMacAlgorithm(MacAlgorithmName(a));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, a);
    const ObjectAuthenticator b = Keyed().SealingWith(a);
    const Bytes sealed = Sealed(b);
    EXPECT_EQ(sealed[kObjectMacAlgorithmAt], uint8_t(a));
    EXPECT_TRUE(Keyed().Verify(sealed).ok());
  }
  for (const char* bad : {"none", "gmac", ""}) {
    Result<MacAlgorithm> parsed = ParseMacAlgorithm(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_NE(parsed.status().message().find("chacha20-poly1305"),
              std::string::npos);
  }
}

#if defined(__x86_64__)
// The upper halves of vector registers 0-15 that hold data (XGETBV with
// ECX = 1, XINUSE: bit 2 for YMM, bit 6 for ZMM), or nullopt where the CPU
// cannot tell.
std::optional<uint64_t> UpperVectorStateInUse() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || (ecx & (1u << 27)) == 0) {
    return std::nullopt;  // no OSXSAVE
  }
  if (!__get_cpuid_count(0xd, 1, &eax, &ebx, &ecx, &edx) ||
      (eax & (1u << 2)) == 0) {
    return std::nullopt;  // no XGETBV with ECX = 1
  }
  uint32_t lo = 0, hi = 0;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
  return ((uint64_t(hi) << 32) | lo) & ((1u << 2) | (1u << 6));
}

// A tag leaves no dirty upper vector state behind (OpenSSL's
// ChaCha20-Poly1305 did, and the legacy-SSE code after it on the thread
// ran 4x slower): checked where the CPU reports it.
TEST(ObjectMacAlgorithmsTest, TagsLeaveTheUpperVectorHalvesClean) {
  if (!UpperVectorStateInUse().has_value()) {
    GTEST_SKIP() << "this CPU does not report XINUSE";
  }
  for (const MacAlgorithm algorithm :
       {MacAlgorithm::kGmacAes256, MacAlgorithm::kChaCha20Poly1305}) {
    const ObjectAuthenticator a = Keyed(kSecret, algorithm);
    Bytes object = MakeObject(9, 4);
    a.Seal(object);
    EXPECT_EQ(UpperVectorStateInUse(), 0u) << "after Seal, " << int(algorithm);
    const bool verified = a.Verify(object).ok();
    EXPECT_EQ(UpperVectorStateInUse(), 0u)
        << "after Verify, " << int(algorithm);
    EXPECT_TRUE(verified);
  }
}
#endif

// The tags are the standard constructions, computed here another way from
// the primitives and the key derivation object_mac.cc documents: GMAC as
// AES-256-GCM encryption of no plaintext with the object as additional
// data; ChaCha20-Poly1305 as RFC 8439 section 2.8 spells it out, Poly1305
// under the first 32 bytes of ChaCha20 block 0, over the additional data,
// zero padding to 16 bytes and the two lengths. A reader in another
// language can check kvstash's objects from this.
TEST(ObjectMacAlgorithmsTest, TagsAreTheStandardConstructions) {
  auto derive = [](std::string_view info) {
    std::array<uint8_t, 32> key{};
    EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
    EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
    char digest[] = "SHA256";
    std::string secret = kSecret, salt = "kvstash tier object key", label(info);
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string("digest", digest, 0),
        OSSL_PARAM_construct_octet_string("key", secret.data(), secret.size()),
        OSSL_PARAM_construct_octet_string("salt", salt.data(), salt.size()),
        OSSL_PARAM_construct_octet_string("info", label.data(), label.size()),
        OSSL_PARAM_construct_end()};
    EXPECT_EQ(EVP_KDF_derive(ctx, key.data(), key.size(), params), 1);
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return key;
  };
  for (const MacAlgorithm algorithm :
       {MacAlgorithm::kGmacAes256, MacAlgorithm::kChaCha20Poly1305}) {
    const Bytes sealed = Sealed(Keyed(kSecret, algorithm), 7);
    const uint8_t* nonce = sealed.data() + kObjectMacNonceAt;
    Bytes aad(sealed.begin(), sealed.begin() + kObjectMacTagAt);
    aad.insert(aad.end(), sealed.begin() + kObjectHeaderBytes, sealed.end());
    std::array<uint8_t, 16> tag{};
    if (algorithm == MacAlgorithm::kGmacAes256) {
      const std::array<uint8_t, 32> key = derive("v4 GMAC-AES-256");
      EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
      int n = 0;
      uint8_t none[16];
      ASSERT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(),
                                   nonce),
                1);
      ASSERT_EQ(
          EVP_EncryptUpdate(ctx, nullptr, &n, aad.data(), int(aad.size())), 1);
      ASSERT_EQ(EVP_EncryptFinal_ex(ctx, none, &n), 1);
      ASSERT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag.data()),
                1);
      EVP_CIPHER_CTX_free(ctx);
    } else {
      const std::array<uint8_t, 32> key = derive("v4 ChaCha20-Poly1305");
      // ChaCha20 block 0: OpenSSL's 16-byte IV is the 32-bit little-endian
      // block counter, then the nonce.
      uint8_t iv[16] = {};
      std::copy(nonce, nonce + 12, iv + 4);
      uint8_t one_time_key[32] = {}, zeros[32] = {};
      EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
      int n = 0;
      ASSERT_EQ(
          EVP_EncryptInit_ex(ctx, EVP_chacha20(), nullptr, key.data(), iv), 1);
      ASSERT_EQ(EVP_EncryptUpdate(ctx, one_time_key, &n, zeros, 32), 1);
      EVP_CIPHER_CTX_free(ctx);
      Bytes mac_data = aad;
      mac_data.resize((aad.size() + 15) / 16 * 16, 0);
      for (const uint64_t length : {uint64_t(aad.size()), uint64_t{0}}) {
        for (int i = 0; i < 8; ++i)
          mac_data.push_back(uint8_t(length >> (8 * i)));
      }
      EVP_MAC* poly = EVP_MAC_fetch(nullptr, "POLY1305", nullptr);
      EVP_MAC_CTX* mctx = EVP_MAC_CTX_new(poly);
      size_t tag_bytes = 0;
      ASSERT_EQ(EVP_MAC_init(mctx, one_time_key, 32, nullptr), 1);
      ASSERT_EQ(EVP_MAC_update(mctx, mac_data.data(), mac_data.size()), 1);
      ASSERT_EQ(EVP_MAC_final(mctx, tag.data(), &tag_bytes, tag.size()), 1);
      EVP_MAC_CTX_free(mctx);
      EVP_MAC_free(poly);
    }
    EXPECT_TRUE(
        std::equal(tag.begin(), tag.end(), sealed.begin() + kObjectMacTagAt))
        << "algorithm " << int(algorithm);
  }
}

}  // namespace
}  // namespace kvstash::store
