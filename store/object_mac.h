// ObjectAuthenticator: seals the objects a tier stores (store/object_format.h)
// with a keyed MAC and verifies the objects it reads, so that whoever can
// write to a cache directory or to the Redis a fleet shares, but does not
// hold the fleet's tier key, cannot make a server attend to keys and values
// of their choosing. An object that fails is a miss, never loaded.
//
// Construction: a standard MAC from OpenSSL's libcrypto, the library every
// Debian machine has, over header bytes [0, 112) and the payload, with a
// fresh random 96-bit nonce per sealed object and the full 128-bit tag. Two
// algorithms (the header's MAC algorithm byte says which); every keyed
// reader verifies both, and a writer seals with the one this CPU computes
// faster (FastestMacAlgorithm, timed once per process), because which is
// faster depends on the CPU:
//   GMAC-AES-256         NIST SP 800-38D: AES-256-GCM with the object as
//                        additional data and no plaintext. 9.4 GB/s on one
//                        core of a Xeon (AES-NI + VPCLMULQDQ on 512-bit
//                        registers), 4.7-6.1 GB/s on an AMD EPYC, where
//                        OpenSSL 3.0 runs GHASH on 128-bit registers.
//   ChaCha20-Poly1305    RFC 8439's AEAD with the object as additional data
//                        and no plaintext (the tag is Poly1305 under a
//                        one-time key from ChaCha20). 11.2-11.8 GB/s on that
//                        AMD EPYC.
// Against 1.3 GB/s for HMAC-SHA256 (SHA-NI) and 0.5 GB/s for BLAKE2b, either
// makes verifying a small fraction of a restore. The one hazard of both is a
// nonce repeated under one key; with random nonces the chance stays below
// 2^-32 up to 2^32 objects sealed under one key (about 2 PB of 1b-preset
// blocks): change the key well before that.
//
// Keys: one 256-bit key per algorithm, each HKDF-SHA256 of a secret of at
// least kMinSecretBytes bytes (a key file or KVSTASH_TIER_KEY; any text,
// e.g. `openssl rand -hex 32`) with its own info label (kKdfSalt and
// KdfInfo in object_mac.cc), so the servers of a fleet that share the
// secret share the keys, and no key serves two algorithms.
//
// Verify, keyed: framing (ParseObjectHeader), then the tag, compared in
// constant time. When the object is unsealed or its tag fails, the checksum
// says which refusal it is: Corruption when the bytes are damaged (a disk or
// a network did it; tiers count corrupt_dropped), PermissionDenied when
// they are intact but were not sealed with this key (forged, or written
// under another key; tiers count forged_dropped). So the XXH3 checksum
// earns its place as triage and costs nothing on the path of a good object.
// Unkeyed (ObjectAuthenticator()): Seal leaves objects unsealed and Verify
// checks framing and checksum only: integrity against damage, no trust.
//
// Copyable; every method is const and thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "store/object_format.h"

namespace kvstash::store {

class ObjectAuthenticator {
 public:
  static constexpr size_t kMinSecretBytes = 32;

  // Unkeyed: seals nothing, verifies checksums only.
  ObjectAuthenticator() = default;

  // Keyed by `secret` (at least kMinSecretBytes bytes); Seal uses
  // `seal_with` (GMAC or ChaCha20-Poly1305; FastestMacAlgorithm() when not
  // given). InvalidArgument saying how to make a secret when it is too
  // short, or for a `seal_with` that is no MAC; Internal when libcrypto
  // fails.
  static Result<ObjectAuthenticator> FromSecret(
      std::string_view secret,
      std::optional<MacAlgorithm> seal_with = std::nullopt);

  // The MAC algorithm this CPU computes faster, timed once per process (a
  // few milliseconds, the first time it is asked) over 256 KiB objects.
  static MacAlgorithm FastestMacAlgorithm();

  // A fresh secret: 32 random bytes from libcrypto as 64 hex digits (text,
  // so it can be kept in a key file). Internal when libcrypto fails.
  static Result<std::string> NewSecret();

  // Keyed by NewSecret(), which no other process knows: for a process that
  // reads back only what it wrote itself (a benchmark).
  static Result<ObjectAuthenticator> Ephemeral();

  bool keyed() const { return keyed_; }

  // What Seal writes: kNone when unkeyed.
  MacAlgorithm seal_with() const { return seal_with_; }

  // This key, sealing with `algorithm` (GMAC or ChaCha20-Poly1305).
  // REQUIRES (checked): keyed().
  ObjectAuthenticator SealingWith(MacAlgorithm algorithm) const;

  // Writes a fresh nonce, the algorithm (seal_with()) and the tag into
  // `object`; nothing when unkeyed. REQUIRES (checked): `object` is framed
  // (ParseObjectHeader).
  void Seal(std::span<uint8_t> object) const;

  // The object, when `bytes` is intact and (keyed) sealed with this key;
  // Corruption or PermissionDenied otherwise (see above).
  Result<ObjectView> Verify(std::span<const uint8_t> bytes) const;

  // Verify for an object gathered from pieces (a layer-ordered load reads
  // ranges of it into the blocks they belong in): its kObjectHeaderBytes
  // `header` and its payload as `payload`'s parts in order, which must add
  // up to the header's payload length (else Corruption). Its header, when
  // the object verifies.
  Result<ObjectHeader> VerifyGathered(
      std::span<const uint8_t> header,
      std::span<const std::span<const uint8_t>> payload) const;

 private:
  using Key = std::array<uint8_t, 32>;

  // The tag by `algorithm` (GMAC or ChaCha20-Poly1305) of an object's
  // `header` (its nonce) and `payload` (its parts in order).
  std::array<uint8_t, kObjectMacTagBytes> Tag(
      MacAlgorithm algorithm, std::span<const uint8_t> header,
      std::span<const std::span<const uint8_t>> payload) const;

  bool keyed_ = false;
  MacAlgorithm seal_with_ = MacAlgorithm::kNone;
  Key gmac_key_{};
  Key chacha_key_{};
};

// "none", "gmac-aes-256" or "chacha20-poly1305".
std::string_view MacAlgorithmName(MacAlgorithm algorithm);

// The algorithm of a name MacAlgorithmName gives (but "none");
// InvalidArgument listing the names otherwise.
Result<MacAlgorithm> ParseMacAlgorithm(std::string_view name);

}  // namespace kvstash::store
