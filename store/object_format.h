// The object a tier stores: a fixed 128-byte little-endian header followed by
// the payload (the K/V bytes of one or more consecutive full blocks).
//
//   offset size  field
//        0    4  magic            'K' 'V' 'S' 'O'
//        4    4  format version   kObjectFormatVersion
//        8   16  fingerprint      h_0 of the namespace (lo, hi)
//       24   16  key              h_i of the LAST block held (lo, hi)
//       40    4  token count      a positive multiple of block_tokens
//       44   16  layout           n_layers, n_kv_heads, head_dim, block_tokens
//       60    1  K type           kernels::KvType (0 f32, 1 f16, 2 bf16, 3 q8,
//                                 4 q4, 5 q4h, 6 kivi2, 7 kivi4)
//       61    1  codec            0 raw, 1 zstd, 2 cachegen
//                                 (store/kv_codec.h)
//       62    1  V type           kernels::KvType
//       63    1  reserved         zero
//       64    8  payload length   bytes after the header
//       72   16  parent           h_{i-1} of the block before the FIRST block
//                                 held (lo, hi); h_0, i.e. the fingerprint,
//                                 when that block starts its chain
//       88    8  checksum         XXH3-64 of bytes [0, 88) || payload
//       96   12  MAC nonce        random per sealed object (zero: unsealed)
//      108    1  MAC algorithm    0 none (unsealed), 1 GMAC-AES-256,
//                                 2 ChaCha20-Poly1305
//      109    3  reserved         zero
//      112   16  MAC tag          over bytes [0, 112) || payload (zero:
//                                 unsealed); see store/object_mac.h
//      128       payload          raw: [block][layer][K|V][kv_head] runs;
//                                 else the codec's encoding of those bytes
//
// Versions: 2 added the parent key (a tier orders eviction along chains by
// it); 3 the V type (compressed KV types, each side its own); 4 the MAC
// (authenticated objects: the XXH3-128 checksum became a 64-bit XXH3
// checksum that tells damage from forgery; MAC algorithm 2 came later in
// version 4, and a reader without it drops such objects as Corruption, one
// recompute each in a fleet's rolling upgrade). Any other version is refused as
// Corruption: a tier is a cache, and an object it cannot read is
// recomputed.
//
// Sealing: EncodeObject makes an unsealed object (checksum set, MAC fields
// zero). A tier seals what it stores with its key (ObjectAuthenticator::Seal
// writes the nonce, the algorithm and the tag) and verifies what it reads;
// the checksum lets a reader whose MAC check failed say whether the bytes
// were damaged or forged.
//
// Keying: an object holds k >= 1 consecutive full blocks and is keyed by the
// hash of its last block. h_i commits to every token of the prefix up to block
// i, so the key names exactly the bytes the object holds (a key of the first
// block would not cover the tokens of the blocks after it, and two different
// continuations would collide). The KV cache writes chunks of a fixed number
// of blocks at chunk boundaries and the blocks after a request's last chunk
// one per object (kvcache/kv_manager.h, "Objects"), so a lookup along a hash
// chain is one batched Exists over the chunk keys and the block keys.
//
// Parse and Decode accept any byte string (no undefined behaviour, no
// allocation beyond the result) and separate two kinds of refusal:
//   Corruption       the bytes are not an intact object (magic, version,
//                    lengths, reserved bytes, MAC algorithm, checksum,
//                    header values):
//                    a tier drops such an object;
//   InvalidArgument  an intact object of another namespace, key or layout:
//                    the reader must not use it (a model mismatch is not
//                    damage); NotSupported for a codec this build lacks.
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/hash.h"
#include "base/status.h"
#include "kernels/block_layout.h"
#include "store/kv_codec.h"

namespace kvstash::store {

// Bumped by any change that a build reading the previous version cannot
// read (a field, a codec, a MAC algorithm, a KV type code). It is part of
// a namespace's root h_0 (kvcache/block_hash.h), so builds of two versions
// sharing a tier look up different keys; an object of another version
// found under a key of this one is damaged or forged (Corruption).
inline constexpr uint32_t kObjectFormatVersion = 4;
inline constexpr size_t kObjectHeaderBytes = 128;

// How an object is authenticated (the MAC algorithm byte). Values are part
// of the format.
enum class MacAlgorithm : uint8_t {
  kNone = 0,              // unsealed: the checksum is all a reader can check
  kGmacAes256 = 1,        // see store/object_mac.h
  kChaCha20Poly1305 = 2,  // see store/object_mac.h
};

// Where the MAC fields lie in the header (see the table).
inline constexpr size_t kObjectMacNonceAt = 96;
inline constexpr size_t kObjectMacNonceBytes = 12;
inline constexpr size_t kObjectMacAlgorithmAt = 108;
inline constexpr size_t kObjectMacTagAt = 112;
inline constexpr size_t kObjectMacTagBytes = 16;

struct ObjectHeader {
  Hash128 fingerprint;  // h_0 of the namespace
  Hash128 key;          // h_i of the last block held
  Hash128 parent;       // h_{i-k} for k blocks held (h_0 starts a chain)
  uint32_t token_count = 0;
  kernels::BlockLayout layout;
  Codec codec = Codec::kRaw;  // may hold a value this build does not know
  MacAlgorithm mac = MacAlgorithm::kNone;
  uint64_t payload_bytes = 0;
};

// A parsed object; `payload` points into the parsed bytes.
struct ObjectView {
  ObjectHeader header;
  std::span<const uint8_t> payload;
};

// Header + payload of the `token_count / layout.block_tokens` blocks in
// `blocks` (as the pool holds them), encoded by `codec`, keyed by `key` and
// chained to `parent` (see the table).
// REQUIRES (checked): layout.Check() and CodecSupports(codec, layout) are
// empty; token_count a positive multiple of block_tokens;
// blocks.size() == token_count / block_tokens * layout.block_bytes().
std::vector<uint8_t> EncodeObject(const Hash128& fingerprint,
                                  const Hash128& parent, const Hash128& key,
                                  const kernels::BlockLayout& layout,
                                  uint32_t token_count,
                                  std::span<const uint8_t> blocks,
                                  Codec codec = Codec::kRaw);
// The same for blocks wherever they lie (the object holds blocks.size()
// blocks, in order). REQUIRES: blocks non-empty.
std::vector<uint8_t> EncodeObject(const Hash128& fingerprint,
                                  const Hash128& parent, const Hash128& key,
                                  const kernels::BlockLayout& layout,
                                  ConstBlocks blocks, Codec codec);

// Checks the framing only (magic, version, reserved bytes, header values, and
// that the payload length matches bytes.size()), not the checksum: cheap,
// for writers that validate what they are handed. Corruption otherwise.
Result<ObjectHeader> ParseObjectHeader(std::span<const uint8_t> bytes);

// The checks of ParseObjectHeader on the first kObjectHeaderBytes of `bytes`
// alone: the payload need not follow (header.payload_bytes says how long it
// is). For readers that look at headers without reading whole objects.
Result<ObjectHeader> ParseHeaderPrefix(std::span<const uint8_t> bytes);

// What a tier's Put checks before it queues `object`: that it is framed
// (ParseObjectHeader) and keyed `key`; returns its header. InvalidArgument
// naming `tier` (e.g. "disk cache") and the key otherwise.
Result<ObjectHeader> ParseObjectForPut(std::string_view tier,
                                       const Hash128& key,
                                       std::span<const uint8_t> object);

// ParseObjectHeader and the checksum: the bytes are an intact object (which
// says nothing of who made it: see ObjectAuthenticator::Verify).
Result<ObjectView> ParseObject(std::span<const uint8_t> bytes);

// Whether the checksum of framed `bytes` (ParseObjectHeader passed) holds.
bool ObjectChecksumHolds(std::span<const uint8_t> bytes);
// The same for an object gathered from pieces: its kObjectHeaderBytes-byte
// `header` (ParseHeaderPrefix passed) and its payload as `payload`'s parts
// in order.
bool ObjectChecksumHolds(std::span<const uint8_t> header,
                         std::span<const std::span<const uint8_t>> payload);

// ParseObject, then refuses an object that is not the one expected:
// InvalidArgument when the fingerprint, the key, any layout field or the
// codec differs, NotSupported for a codec this build does not know,
// Corruption when a raw payload's length is not whole blocks of the layout
// (or an encoded payload is empty). The payload stays encoded: see
// DecodeObjectBlocks.
Result<ObjectView> DecodeObject(std::span<const uint8_t> bytes,
                                const Hash128& fingerprint, const Hash128& key,
                                const kernels::BlockLayout& layout,
                                Codec codec = Codec::kRaw);

// The identity checks of DecodeObject on a header alone (fingerprint, key,
// layout, codec), for a reader that gathers an object's payload itself.
Status ExpectObjectHeader(const ObjectHeader& header,
                          const Hash128& fingerprint, const Hash128& key,
                          const kernels::BlockLayout& layout, Codec codec);

// DecodeObject without the checksum, for bytes whose checksum was just
// verified (what a Tier's Get returns): the framing and identity checks
// stay, the second pass over the payload goes.
Result<ObjectView> DecodeVerifiedObject(std::span<const uint8_t> bytes,
                                        const Hash128& fingerprint,
                                        const Hash128& key,
                                        const kernels::BlockLayout& layout,
                                        Codec codec = Codec::kRaw);

// The blocks of a view DecodeObject accepted, decoded by its codec into
// `blocks` (token_count / block_tokens blocks of `layout`, else
// InvalidArgument); Corruption when the payload does not decode to them.
Status DecodeObjectBlocks(const ObjectView& view,
                          const kernels::BlockLayout& layout,
                          std::span<uint8_t> blocks);
// The same into blocks wherever they lie (token_count / block_tokens of
// them, else InvalidArgument).
Status DecodeObjectBlocks(const ObjectView& view,
                          const kernels::BlockLayout& layout,
                          MutableBlocks blocks);

}  // namespace kvstash::store
