#include "store/object_mac.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/check.h"

namespace kvstash::store {
namespace {

using Tag128 = std::array<uint8_t, kObjectMacTagBytes>;

// Labels that tie each derived key to its one use: a secret shared with
// another purpose never yields these keys, and no key serves two
// algorithms.
constexpr std::string_view kKdfSalt = "kvstash tier object key";
std::string_view KdfInfo(MacAlgorithm algorithm) {
  return algorithm == MacAlgorithm::kGmacAes256 ? "v4 GMAC-AES-256"
                                                : "v4 ChaCha20-Poly1305";
}

// The implementations, fetched once for the process.
EVP_MAC* Gmac() {
  static EVP_MAC* const mac = EVP_MAC_fetch(nullptr, "GMAC", nullptr);
  KV_CHECK(mac != nullptr);
  return mac;
}
EVP_CIPHER* ChaCha20Poly1305() {
  static EVP_CIPHER* const cipher =
      EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
  KV_CHECK(cipher != nullptr);
  return cipher;
}

struct MacCtxFree {
  void operator()(EVP_MAC_CTX* c) const { EVP_MAC_CTX_free(c); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
struct KdfFree {
  void operator()(EVP_KDF* k) const { EVP_KDF_free(k); }
};
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* c) const { EVP_KDF_CTX_free(c); }
};

// OpenSSL 3.0's ChaCha20-Poly1305 (its AVX-512 code) returns with the upper
// halves of the vector registers dirty, and legacy-SSE code on the same
// thread then ran 4x slower until a VZEROUPPER (measured on an AMD EPYC:
// XXH3, SSE2 in Debian's libxxhash, at 3.8 GB/s instead of 15): what ran
// after a tag on a loader or writer thread (the checksums, every scalar
// float loop the compiler vectorized with SSE) paid for it. Tags end with
// this.
#if defined(__x86_64__)
__attribute__((target("avx"))) void ZeroUpperHalves() { _mm256_zeroupper(); }
void ClearUpperVectorState() {
  static const bool avx = __builtin_cpu_supports("avx");
  if (avx) ZeroUpperHalves();
}
#else
void ClearUpperVectorState() {}
#endif

OSSL_PARAM OctetParam(const char* name, std::string_view bytes) {
  return OSSL_PARAM_construct_octet_string(
      name, const_cast<char*>(bytes.data()), bytes.size());
}

// HKDF-SHA256 of `secret` under kKdfSalt and `info` into `key`.
Status DeriveKey(std::string_view secret, std::string_view info,
                 std::span<uint8_t> key) {
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
      OctetParam(OSSL_KDF_PARAM_INFO, info), OSSL_PARAM_construct_end()};
  if (EVP_KDF_derive(ctx.get(), key.data(), key.size(), params) != 1) {
    return Status::Internal("HKDF-SHA256 failed");
  }
  return Status::OK();
}

// GMAC-AES-256 of `parts`, in order, under `key` and `nonce`.
Tag128 GmacTag(std::span<const uint8_t> key, const uint8_t* nonce,
               std::span<const std::span<const uint8_t>> parts) {
  const std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(EVP_MAC_CTX_new(Gmac()));
  KV_CHECK(ctx != nullptr);
  char cipher[] = "AES-256-GCM";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_CIPHER, cipher, 0),
      OSSL_PARAM_construct_octet_string(
          OSSL_MAC_PARAM_IV, const_cast<uint8_t*>(nonce), kObjectMacNonceBytes),
      OSSL_PARAM_construct_end()};
  KV_CHECK(EVP_MAC_init(ctx.get(), key.data(), key.size(), params) == 1);
  for (const std::span<const uint8_t> part : parts) {
    KV_CHECK(EVP_MAC_update(ctx.get(), part.data(), part.size()) == 1);
  }
  Tag128 tag{};
  size_t tag_bytes = 0;
  KV_CHECK(EVP_MAC_final(ctx.get(), tag.data(), &tag_bytes, tag.size()) == 1);
  KV_CHECK(tag_bytes == tag.size());
  ClearUpperVectorState();
  return tag;
}

// The ChaCha20-Poly1305 tag (RFC 8439, no plaintext) of additional data
// `parts`, in order, under `key` and `nonce`.
Tag128 ChaCha20Poly1305Tag(std::span<const uint8_t> key, const uint8_t* nonce,
                           std::span<const std::span<const uint8_t>> parts) {
  const std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(
      EVP_CIPHER_CTX_new());
  KV_CHECK(ctx != nullptr);
  KV_CHECK(EVP_EncryptInit_ex2(ctx.get(), ChaCha20Poly1305(), key.data(), nonce,
                               nullptr) == 1);
  // EVP_EncryptUpdate takes int lengths.
  constexpr size_t kMaxUpdate = size_t{1} << 30;
  int out_bytes = 0;
  for (std::span<const uint8_t> part : parts) {
    while (!part.empty()) {
      const size_t n = std::min(part.size(), kMaxUpdate);
      KV_CHECK(EVP_EncryptUpdate(ctx.get(), nullptr, &out_bytes, part.data(),
                                 int(n)) == 1);
      part = part.subspan(n);
    }
  }
  uint8_t no_ciphertext[1];
  KV_CHECK(EVP_EncryptFinal_ex(ctx.get(), no_ciphertext, &out_bytes) == 1);
  Tag128 tag{};
  KV_CHECK(EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG,
                               int(tag.size()), tag.data()) == 1);
  ClearUpperVectorState();
  return tag;
}

bool IsMac(MacAlgorithm algorithm) {
  return algorithm == MacAlgorithm::kGmacAes256 ||
         algorithm == MacAlgorithm::kChaCha20Poly1305;
}

}  // namespace

Result<ObjectAuthenticator> ObjectAuthenticator::FromSecret(
    std::string_view secret, std::optional<MacAlgorithm> seal_with) {
  if (secret.size() < kMinSecretBytes) {
    return Status::InvalidArgument(
        "a tier key needs a secret of at least " +
        std::to_string(kMinSecretBytes) + " bytes (this one has " +
        std::to_string(secret.size()) +
        "); make one with `openssl rand -hex 32 > tier.key && chmod 600 "
        "tier.key`");
  }
  if (seal_with.has_value() && !IsMac(*seal_with)) {
    return Status::InvalidArgument("MAC algorithm " +
                                   std::to_string(unsigned(*seal_with)) +
                                   " cannot seal tier objects");
  }
  ObjectAuthenticator out;
  KV_RETURN_IF_ERROR(
      DeriveKey(secret, KdfInfo(MacAlgorithm::kGmacAes256), out.gmac_key_));
  KV_RETURN_IF_ERROR(DeriveKey(secret, KdfInfo(MacAlgorithm::kChaCha20Poly1305),
                               out.chacha_key_));
  out.keyed_ = true;
  out.seal_with_ = seal_with.has_value() ? *seal_with : FastestMacAlgorithm();
  return out;
}

ObjectAuthenticator ObjectAuthenticator::SealingWith(
    MacAlgorithm algorithm) const {
  KV_CHECK(keyed_ && IsMac(algorithm));
  ObjectAuthenticator out = *this;
  out.seal_with_ = algorithm;
  return out;
}

MacAlgorithm ObjectAuthenticator::FastestMacAlgorithm() {
  static const MacAlgorithm fastest = [] {
    constexpr size_t kPayloadBytes = size_t{256} << 10;
    constexpr int kTagsPerTry = 4, kTries = 3;
    const std::string secret(kMinSecretBytes, 't');  // timing only
    Result<ObjectAuthenticator> a =
        FromSecret(secret, MacAlgorithm::kGmacAes256);
    KV_CHECK(a.ok());
    const std::vector<uint8_t> object(kObjectHeaderBytes + kPayloadBytes);
    const std::span<const uint8_t> payload[] = {
        std::span<const uint8_t>(object).subspan(kObjectHeaderBytes)};
    const MacAlgorithm candidates[] = {MacAlgorithm::kGmacAes256,
                                       MacAlgorithm::kChaCha20Poly1305};
    double best[2] = {1e30, 1e30};
    uint8_t sink = 0;
    for (int t = 0; t < kTries; ++t) {  // alternating, best of each
      for (int c = 0; c < 2; ++c) {
        const auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < kTagsPerTry; ++i) {
          sink ^= a->Tag(candidates[c], object, payload)[0];
        }
        best[c] =
            std::min(best[c], std::chrono::duration<double>(
                                  std::chrono::steady_clock::now() - start)
                                  .count());
      }
    }
    (void)sink;
    return candidates[best[1] < best[0] ? 1 : 0];
  }();
  return fastest;
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

Tag128 ObjectAuthenticator::Tag(
    MacAlgorithm algorithm, std::span<const uint8_t> header,
    std::span<const std::span<const uint8_t>> payload) const {
  // The MAC covers header bytes [0, kObjectMacTagAt) and the payload.
  std::vector<std::span<const uint8_t>> parts;
  parts.reserve(payload.size() + 1);
  parts.push_back(header.first(kObjectMacTagAt));
  parts.insert(parts.end(), payload.begin(), payload.end());
  const uint8_t* nonce = header.data() + kObjectMacNonceAt;
  switch (algorithm) {
    case MacAlgorithm::kGmacAes256:
      return GmacTag(gmac_key_, nonce, parts);
    case MacAlgorithm::kChaCha20Poly1305:
      return ChaCha20Poly1305Tag(chacha_key_, nonce, parts);
    case MacAlgorithm::kNone:
      break;
  }
  KV_CHECK(false);
  return {};
}

void ObjectAuthenticator::Seal(std::span<uint8_t> object) const {
  KV_CHECK(ParseObjectHeader(object).ok());
  if (!keyed_) return;
  uint8_t* nonce = object.data() + kObjectMacNonceAt;
  KV_CHECK(RAND_bytes(nonce, int(kObjectMacNonceBytes)) == 1);
  object[kObjectMacAlgorithmAt] = uint8_t(seal_with_);
  const std::span<const uint8_t> payload[] = {
      std::span<const uint8_t>(object).subspan(kObjectHeaderBytes)};
  const Tag128 tag = Tag(seal_with_, object, payload);
  std::copy(tag.begin(), tag.end(), object.begin() + kObjectMacTagAt);
}

Result<ObjectView> ObjectAuthenticator::Verify(
    std::span<const uint8_t> bytes) const {
  if (!keyed_) return ParseObject(bytes);
  KV_RETURN_IF_ERROR(ParseObjectHeader(bytes).status());
  const std::span<const uint8_t> payload[] = {
      bytes.subspan(kObjectHeaderBytes)};
  KV_ASSIGN_OR_RETURN(const ObjectHeader header,
                      VerifyGathered(bytes.first(kObjectHeaderBytes), payload));
  return ObjectView{header, payload[0]};
}

Result<ObjectHeader> ObjectAuthenticator::VerifyGathered(
    std::span<const uint8_t> header,
    std::span<const std::span<const uint8_t>> payload) const {
  KV_ASSIGN_OR_RETURN(const ObjectHeader h, ParseHeaderPrefix(header));
  uint64_t payload_bytes = 0;
  for (const std::span<const uint8_t> part : payload) {
    payload_bytes += part.size();
  }
  if (payload_bytes != h.payload_bytes) {
    return Status::Corruption("object payload length mismatch");
  }
  bool authentic = false;
  if (keyed_ && IsMac(h.mac)) {
    const Tag128 tag = Tag(h.mac, header, payload);
    authentic = CRYPTO_memcmp(tag.data(), header.data() + kObjectMacTagAt,
                              tag.size()) == 0;
  }
  if (authentic) return h;
  if (!ObjectChecksumHolds(header, payload)) {
    return Status::Corruption("object checksum mismatch");
  }
  if (!keyed_) return h;
  return Status::PermissionDenied(
      h.mac == MacAlgorithm::kNone
          ? "object is not sealed (written without a tier key)"
          : "object MAC does not verify under this tier key (forged, or "
            "written under another key)");
}

std::string_view MacAlgorithmName(MacAlgorithm algorithm) {
  switch (algorithm) {
    case MacAlgorithm::kNone:
      return "none";
    case MacAlgorithm::kGmacAes256:
      return "gmac-aes-256";
    case MacAlgorithm::kChaCha20Poly1305:
      return "chacha20-poly1305";
  }
  return "unknown";
}

Result<MacAlgorithm> ParseMacAlgorithm(std::string_view name) {
  for (const MacAlgorithm a :
       {MacAlgorithm::kGmacAes256, MacAlgorithm::kChaCha20Poly1305}) {
    if (name == MacAlgorithmName(a)) return a;
  }
  return Status::InvalidArgument(
      "MAC algorithm must be gmac-aes-256 or chacha20-poly1305, not '" +
      std::string(name) + "'");
}

}  // namespace kvstash::store
