#include "store/object_mac.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <memory>
#include <string>

#include "base/check.h"

namespace kvstash::store {
namespace {

// Labels that tie the derived key to its one use: a secret shared with
// another purpose never yields this key.
constexpr std::string_view kKdfSalt = "kvstash tier object key";
constexpr std::string_view kKdfInfo = "v4 GMAC-AES-256";

// The GMAC implementation, fetched once for the process.
EVP_MAC* Gmac() {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "GMAC", nullptr);
  KV_CHECK(mac != nullptr);
  return mac;
}

struct MacCtxFree {
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
};
struct KdfFree {
  void operator()(EVP_KDF* k) const { EVP_KDF_free(k); }
};
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* c) const { EVP_KDF_CTX_free(c); }
};

OSSL_PARAM OctetParam(const char* name, std::string_view bytes) {
  return OSSL_PARAM_construct_octet_string(
      name, const_cast<char*>(bytes.data()), bytes.size());
}

}  // namespace

Result<ObjectAuthenticator> ObjectAuthenticator::FromSecret(
    std::string_view secret) {
  if (secret.size() < kMinSecretBytes) {
    return Status::InvalidArgument(
        "a tier key needs a secret of at least " +
        std::to_string(kMinSecretBytes) + " bytes (this one has " +
        std::to_string(secret.size()) +
        "); make one with `openssl rand -hex 32 > tier.key && chmod 600 "
        "tier.key`");
  }
  const std::unique_ptr<EVP_KDF, KdfFree> kdf(
      EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (kdf == nullptr) return Status::Internal("libcrypto has no HKDF");
  const std::unique_ptr<EVP_KDF_CTX, KdfCtxFree> ctx(
      EVP_KDF_CTX_new(kdf.get()));
  if (ctx == nullptr) return Status::Internal("cannot make an HKDF context");
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OctetParam(OSSL_KDF_PARAM_KEY, secret),
      OctetParam(OSSL_KDF_PARAM_SALT, kKdfSalt),
      OctetParam(OSSL_KDF_PARAM_INFO, kKdfInfo), OSSL_PARAM_construct_end()};
  ObjectAuthenticator out;
  if (EVP_KDF_derive(ctx.get(), out.key_.data(), out.key_.size(), params) !=
      1) {
    return Status::Internal("HKDF-SHA256 failed");
  }
  out.keyed_ = true;
  return out;
}

Result<std::string> ObjectAuthenticator::NewSecret() {
  uint8_t bytes[32];
  if (RAND_bytes(bytes, int(sizeof(bytes))) != 1) {
    return Status::Internal("libcrypto could not draw a random secret");
  }
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (const uint8_t b : bytes) {
    hex += kDigits[b >> 4];
    hex += kDigits[b & 15];
  }
  return hex;
}

Result<ObjectAuthenticator> ObjectAuthenticator::Ephemeral() {
  KV_ASSIGN_OR_RETURN(const std::string secret, NewSecret());
  return FromSecret(secret);
}

std::array<uint8_t, kObjectMacTagBytes> ObjectAuthenticator::Tag(
    std::span<const uint8_t> object, const uint8_t* nonce) const {
  const std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(EVP_MAC_CTX_new(Gmac()));
  KV_CHECK(ctx != nullptr);
  char cipher[] = "AES-256-GCM";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, cipher, 0),
      OSSL_PARAM_construct_octet_string(
          OSSL_MAC_PARAM_IV, const_cast<uint8_t*>(nonce), kObjectMacNonceBytes),
      OSSL_PARAM_construct_end()};
  std::array<uint8_t, kObjectMacTagBytes> tag{};
  size_t tag_bytes = 0;
  const std::span<const uint8_t> payload = object.subspan(kObjectHeaderBytes);
  KV_CHECK(EVP_MAC_init(ctx.get(), key_.data(), key_.size(), params) == 1);
  KV_CHECK(EVP_MAC_update(ctx.get(), object.data(), kObjectMacTagAt) == 1);
  KV_CHECK(EVP_MAC_update(ctx.get(), payload.data(), payload.size()) == 1);
  KV_CHECK(EVP_MAC_final(ctx.get(), tag.data(), &tag_bytes, tag.size()) == 1);
  KV_CHECK(tag_bytes == tag.size());
  return tag;
}

void ObjectAuthenticator::Seal(std::span<uint8_t> object) const {
  KV_CHECK(ParseObjectHeader(object).ok());
  if (!keyed_) return;
  uint8_t* nonce = object.data() + kObjectMacNonceAt;
  KV_CHECK(RAND_bytes(nonce, int(kObjectMacNonceBytes)) == 1);
  object[kObjectMacAlgorithmAt] = uint8_t(MacAlgorithm::kGmacAes256);
  const std::array<uint8_t, kObjectMacTagBytes> tag = Tag(object, nonce);
  std::copy(tag.begin(), tag.end(), object.begin() + kObjectMacTagAt);
}

Result<ObjectView> ObjectAuthenticator::Verify(
    std::span<const uint8_t> bytes) const {
  if (!keyed_) return ParseObject(bytes);
  KV_ASSIGN_OR_RETURN(const ObjectHeader header, ParseObjectHeader(bytes));
  bool authentic = false;
  if (header.mac == MacAlgorithm::kGmacAes256) {
    const std::array<uint8_t, kObjectMacTagBytes> tag =
        Tag(bytes, bytes.data() + kObjectMacNonceAt);
    authentic = CRYPTO_memcmp(tag.data(), bytes.data() + kObjectMacTagAt,
                              tag.size()) == 0;
  }
  if (authentic) return ObjectView{header, bytes.subspan(kObjectHeaderBytes)};
  if (!ObjectChecksumHolds(bytes)) {
    return Status::Corruption("object checksum mismatch");
  }
  return Status::PermissionDenied(
      header.mac == MacAlgorithm::kNone
          ? "object is not sealed (written without a tier key)"
          : "object MAC does not verify under this tier key (forged, or "
            "written under another key)");
}

}  // namespace kvstash::store
