#include "store/object_format.h"

#include <cstring>
#include <limits>
#include <string>

#include "base/check.h"

namespace kvstash::store {
namespace {

using kernels::KvType;

// Byte offsets of the header fields (see object_format.h).
constexpr size_t kMagicAt = 0;
constexpr size_t kVersionAt = 4;
constexpr size_t kFingerprintAt = 8;
constexpr size_t kKeyAt = 24;
constexpr size_t kTokenCountAt = 40;
constexpr size_t kNLayersAt = 44;
constexpr size_t kNKvHeadsAt = 48;
constexpr size_t kHeadDimAt = 52;
constexpr size_t kBlockTokensAt = 56;
constexpr size_t kKTypeAt = 60;
constexpr size_t kCodecAt = 61;
constexpr size_t kVTypeAt = 62;
constexpr size_t kReserved1At = 63;
constexpr size_t kPayloadBytesAt = 64;
constexpr size_t kParentAt = 72;
constexpr size_t kChecksumAt = 88;
constexpr size_t kReserved2At = kObjectMacAlgorithmAt + 1;
static_assert(kChecksumAt + 8 == kObjectMacNonceAt);
static_assert(kObjectMacNonceAt + kObjectMacNonceBytes ==
              kObjectMacAlgorithmAt);
static_assert(kObjectMacTagAt + kObjectMacTagBytes == kObjectHeaderBytes);

// The largest block an object may describe: far above any model's (a
// 16-token block of a 405B Llama's f32 K/V is 62 MiB), and small enough that
// sizes computed from a layout (block, object and payload bytes) cannot
// overflow. Found by fuzz/tier_object_fuzz.cc: dimensions of 2^24..2^28
// multiplied to exactly 0 bytes, and a division by it.
constexpr uint64_t kMaxBlockBytes = uint64_t{1} << 30;
constexpr int kMaxHeadDim = 1 << 16;
constexpr int kMaxBlockTokens = 1 << 16;

// "KVSO" as a little-endian u32.
constexpr uint32_t kMagic = uint32_t('K') | uint32_t('V') << 8 |
                            uint32_t('S') << 16 | uint32_t('O') << 24;

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
void PutHash(uint8_t* p, const Hash128& h) {
  PutU64(p, h.lo);
  PutU64(p + 8, h.hi);
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(p[i]) << (8 * i);
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}
Hash128 GetHash(const uint8_t* p) { return {GetU64(p), GetU64(p + 8)}; }

// The KV type of a wire code: KvType's values are part of the format.
bool CodeToKvType(uint8_t code, KvType* t) {
  if (code >= kernels::kKvTypeCount) return false;
  *t = KvType(code);
  return true;
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// The low half of XXH3-128: 64 bits are plenty to catch damage, and
// forgery is the MAC's job.
uint64_t Checksum(const uint8_t* header,
                  std::span<const std::span<const uint8_t>> payload) {
  Hasher128 h;
  h.Add(header, kChecksumAt);
  for (const std::span<const uint8_t> part : payload) {
    h.Add(part.data(), part.size());
  }
  return h.Finish().lo;
}

// A layout dimension read from the header: 1 .. INT32_MAX.
bool ReadDim(const uint8_t* header, size_t at, int* out) {
  const uint32_t v = GetU32(header + at);
  if (v == 0 || v > uint32_t(std::numeric_limits<int32_t>::max())) return false;
  *out = int(v);
  return true;
}

Status Mismatch(const char* field, const std::string& got,
                const std::string& want) {
  return Status::InvalidArgument("object " + std::string(field) + " " + got +
                                 " does not match the expected " + want);
}

}  // namespace

std::vector<uint8_t> EncodeObject(const Hash128& fingerprint,
                                  const Hash128& parent, const Hash128& key,
                                  const kernels::BlockLayout& layout,
                                  ConstBlocks blocks, Codec codec) {
  KV_CHECK(layout.Check().empty());
  KV_CHECK(!blocks.empty());
  const size_t block_bytes = layout.block_bytes();
  const std::vector<uint8_t> encoded =
      codec == Codec::kRaw ? std::vector<uint8_t>()
                           : EncodePayload(codec, layout, blocks);
  const size_t payload_bytes =
      codec == Codec::kRaw ? blocks.size() * block_bytes : encoded.size();

  std::vector<uint8_t> out(kObjectHeaderBytes + payload_bytes, 0);
  uint8_t* h = out.data();
  PutU32(h + kMagicAt, kMagic);
  PutU32(h + kVersionAt, kObjectFormatVersion);
  PutHash(h + kFingerprintAt, fingerprint);
  PutHash(h + kKeyAt, key);
  PutU32(h + kTokenCountAt,
         uint32_t(blocks.size() * size_t(layout.block_tokens)));
  PutU32(h + kNLayersAt, uint32_t(layout.n_layers));
  PutU32(h + kNKvHeadsAt, uint32_t(layout.n_kv_heads));
  PutU32(h + kHeadDimAt, uint32_t(layout.head_dim));
  PutU32(h + kBlockTokensAt, uint32_t(layout.block_tokens));
  h[kKTypeAt] = uint8_t(layout.kv.k);
  h[kVTypeAt] = uint8_t(layout.kv.v);
  h[kCodecAt] = uint8_t(codec);
  PutU64(h + kPayloadBytesAt, payload_bytes);
  PutHash(h + kParentAt, parent);
  uint8_t* payload = h + kObjectHeaderBytes;
  if (codec == Codec::kRaw) {
    for (size_t b = 0; b < blocks.size(); ++b) {
      std::memcpy(payload + b * block_bytes, blocks[b], block_bytes);
    }
  } else {
    std::memcpy(payload, encoded.data(), encoded.size());
  }
  const std::span<const uint8_t> parts[] = {{payload, payload_bytes}};
  PutU64(h + kChecksumAt, Checksum(h, parts));
  return out;
}

std::vector<uint8_t> EncodeObject(const Hash128& fingerprint,
                                  const Hash128& parent, const Hash128& key,
                                  const kernels::BlockLayout& layout,
                                  uint32_t token_count,
                                  std::span<const uint8_t> blocks,
                                  Codec codec) {
  KV_CHECK(layout.Check().empty());
  KV_CHECK(token_count > 0 && token_count % uint32_t(layout.block_tokens) == 0);
  KV_CHECK(blocks.size() ==
           token_count / uint32_t(layout.block_tokens) * layout.block_bytes());
  return EncodeObject(fingerprint, parent, key, layout,
                      BlockPointers(layout, blocks), codec);
}

Result<ObjectHeader> ParseHeaderPrefix(std::span<const uint8_t> bytes) {
  if (bytes.size() < kObjectHeaderBytes) {
    return Status::Corruption("object of " + std::to_string(bytes.size()) +
                              " bytes is shorter than its header (" +
                              std::to_string(kObjectHeaderBytes) + ")");
  }
  const uint8_t* h = bytes.data();
  if (GetU32(h + kMagicAt) != kMagic) {
    return Status::Corruption("bad object magic");
  }
  const uint32_t version = GetU32(h + kVersionAt);
  if (version != kObjectFormatVersion) {
    return Status::Corruption("object format version " +
                              std::to_string(version) + ", this build reads " +
                              std::to_string(kObjectFormatVersion));
  }
  if (!AllZero(h + kReserved1At, kPayloadBytesAt - kReserved1At) ||
      !AllZero(h + kReserved2At, kObjectMacTagAt - kReserved2At)) {
    return Status::Corruption("object header reserved bytes are not zero");
  }
  const uint8_t mac = h[kObjectMacAlgorithmAt];
  if (mac > uint8_t(MacAlgorithm::kChaCha20Poly1305)) {
    return Status::Corruption("unknown object MAC algorithm " +
                              std::to_string(mac));
  }
  if (MacAlgorithm(mac) == MacAlgorithm::kNone &&
      (!AllZero(h + kObjectMacNonceAt, kObjectMacNonceBytes) ||
       !AllZero(h + kObjectMacTagAt, kObjectMacTagBytes))) {
    return Status::Corruption("unsealed object with a MAC nonce or tag");
  }
  ObjectHeader header;
  header.fingerprint = GetHash(h + kFingerprintAt);
  header.key = GetHash(h + kKeyAt);
  header.parent = GetHash(h + kParentAt);
  header.payload_bytes = GetU64(h + kPayloadBytesAt);
  kernels::BlockLayout& layout = header.layout;
  if (!ReadDim(h, kNLayersAt, &layout.n_layers) ||
      !ReadDim(h, kNKvHeadsAt, &layout.n_kv_heads) ||
      !ReadDim(h, kHeadDimAt, &layout.head_dim) ||
      !ReadDim(h, kBlockTokensAt, &layout.block_tokens)) {
    return Status::Corruption("object layout has a zero or oversized field");
  }
  if (!CodeToKvType(h[kKTypeAt], &layout.kv.k) ||
      !CodeToKvType(h[kVTypeAt], &layout.kv.v)) {
    return Status::Corruption("unknown object kv type codes " +
                              std::to_string(h[kKTypeAt]) + ", " +
                              std::to_string(h[kVTypeAt]));
  }
  if (!layout.Check().empty()) {
    return Status::Corruption("object layout: " + layout.Check());
  }
  // head_dim and block_tokens bound each run's bytes (< 2^40), so the
  // product below is exact in 128 bits.
  if (layout.head_dim > kMaxHeadDim || layout.block_tokens > kMaxBlockTokens ||
      static_cast<unsigned __int128>(layout.n_layers) *
              static_cast<unsigned __int128>(layout.n_kv_heads) *
              layout.pair_bytes() >
          kMaxBlockBytes) {
    return Status::Corruption("object layout describes blocks over " +
                              std::to_string(kMaxBlockBytes >> 20) + " MiB");
  }
  header.token_count = GetU32(h + kTokenCountAt);
  if (header.token_count == 0 ||
      header.token_count % uint32_t(layout.block_tokens) != 0) {
    return Status::Corruption("object token count " +
                              std::to_string(header.token_count) +
                              " is not a positive multiple of its block size " +
                              std::to_string(layout.block_tokens));
  }
  header.codec = Codec(h[kCodecAt]);
  header.mac = MacAlgorithm(mac);
  return header;
}

Result<ObjectHeader> ParseObjectHeader(std::span<const uint8_t> bytes) {
  KV_ASSIGN_OR_RETURN(ObjectHeader header, ParseHeaderPrefix(bytes));
  if (header.payload_bytes != bytes.size() - kObjectHeaderBytes) {
    return Status::Corruption(
        "object header says " + std::to_string(header.payload_bytes) +
        " payload bytes, " + std::to_string(bytes.size() - kObjectHeaderBytes) +
        " follow it");
  }
  return header;
}

Result<ObjectHeader> ParseObjectForPut(std::string_view tier,
                                       const Hash128& key,
                                       std::span<const uint8_t> object) {
  const std::string what = std::string(tier) + " Put of " + key.Hex();
  Result<ObjectHeader> header = ParseObjectHeader(object);
  if (!header.ok()) {
    return Status::InvalidArgument(
        what + ": not an object: " + header.status().message());
  }
  if (header->key != key) {
    return Status::InvalidArgument(what + ": the object's key is " +
                                   header->key.Hex());
  }
  return header;
}

Result<ObjectView> ParseObject(std::span<const uint8_t> bytes) {
  KV_ASSIGN_OR_RETURN(ObjectHeader header, ParseObjectHeader(bytes));
  if (!ObjectChecksumHolds(bytes)) {
    return Status::Corruption("object checksum mismatch");
  }
  return ObjectView{header, bytes.subspan(kObjectHeaderBytes)};
}

bool ObjectChecksumHolds(std::span<const uint8_t> bytes) {
  const std::span<const uint8_t> payload[] = {
      bytes.subspan(kObjectHeaderBytes)};
  return ObjectChecksumHolds(bytes.first(kObjectHeaderBytes), payload);
}

bool ObjectChecksumHolds(std::span<const uint8_t> header,
                         std::span<const std::span<const uint8_t>> payload) {
  return Checksum(header.data(), payload) ==
         GetU64(header.data() + kChecksumAt);
}

Status ExpectObjectHeader(const ObjectHeader& h, const Hash128& fingerprint,
                          const Hash128& key,
                          const kernels::BlockLayout& layout, Codec codec) {
  if (h.fingerprint != fingerprint) {
    return Mismatch(
        "fingerprint", h.fingerprint.Hex(),
        fingerprint.Hex() + " (another model, layout or namespace)");
  }
  if (h.key != key) return Mismatch("key", h.key.Hex(), key.Hex());
  const struct {
    const char* name;
    int got, want;
  } dims[] = {{"n_layers", h.layout.n_layers, layout.n_layers},
              {"n_kv_heads", h.layout.n_kv_heads, layout.n_kv_heads},
              {"head_dim", h.layout.head_dim, layout.head_dim},
              {"block_tokens", h.layout.block_tokens, layout.block_tokens}};
  for (const auto& d : dims) {
    if (d.got != d.want) {
      return Mismatch(d.name, std::to_string(d.got), std::to_string(d.want));
    }
  }
  if (h.layout.kv != layout.kv) {
    return Mismatch("kv types", kernels::KvFormatName(h.layout.kv),
                    kernels::KvFormatName(layout.kv));
  }
  if (!CodecKnown(uint8_t(h.codec))) {
    return Status::NotSupported("object codec " +
                                std::to_string(unsigned(h.codec)) +
                                " is not supported by this build");
  }
  if (h.codec != codec) {
    return Mismatch("codec", CodecName(h.codec), CodecName(codec));
  }
  return Status::OK();
}

namespace {

// The checks DecodeObject adds to parsing: `view` is the object expected.
Result<ObjectView> Expect(ObjectView view, const Hash128& fingerprint,
                          const Hash128& key,
                          const kernels::BlockLayout& layout, Codec codec) {
  const ObjectHeader& h = view.header;
  KV_RETURN_IF_ERROR(ExpectObjectHeader(h, fingerprint, key, layout, codec));
  if (h.codec != Codec::kRaw) {
    if (view.payload.empty()) {
      return Status::Corruption("encoded object payload is empty");
    }
    return view;  // its length is checked by DecodeObjectBlocks
  }
  // The layout now equals the caller's, so block_bytes() cannot overflow.
  const uint64_t blocks = h.token_count / uint32_t(layout.block_tokens);
  if (view.payload.size() / layout.block_bytes() != blocks ||
      view.payload.size() % layout.block_bytes() != 0) {
    return Status::Corruption(
        "raw object payload of " + std::to_string(view.payload.size()) +
        " bytes is not " + std::to_string(blocks) + " blocks of " +
        std::to_string(layout.block_bytes()) + " bytes");
  }
  return view;
}

}  // namespace

Result<ObjectView> DecodeObject(std::span<const uint8_t> bytes,
                                const Hash128& fingerprint, const Hash128& key,
                                const kernels::BlockLayout& layout,
                                Codec codec) {
  KV_ASSIGN_OR_RETURN(ObjectView view, ParseObject(bytes));
  return Expect(view, fingerprint, key, layout, codec);
}

Result<ObjectView> DecodeVerifiedObject(std::span<const uint8_t> bytes,
                                        const Hash128& fingerprint,
                                        const Hash128& key,
                                        const kernels::BlockLayout& layout,
                                        Codec codec) {
  KV_ASSIGN_OR_RETURN(ObjectHeader header, ParseObjectHeader(bytes));
  return Expect(ObjectView{header, bytes.subspan(kObjectHeaderBytes)},
                fingerprint, key, layout, codec);
}

Status DecodeObjectBlocks(const ObjectView& view,
                          const kernels::BlockLayout& layout,
                          std::span<uint8_t> blocks) {
  const uint64_t n = view.header.token_count / uint32_t(layout.block_tokens);
  if (blocks.size() != n * layout.block_bytes()) {
    return Status::InvalidArgument("object of " + std::to_string(n) +
                                   " blocks decoded into " +
                                   std::to_string(blocks.size()) + " bytes");
  }
  return DecodePayload(view.header.codec, layout, view.payload, blocks);
}

Status DecodeObjectBlocks(const ObjectView& view,
                          const kernels::BlockLayout& layout,
                          MutableBlocks blocks) {
  const uint64_t n = view.header.token_count / uint32_t(layout.block_tokens);
  if (blocks.size() != n) {
    return Status::InvalidArgument("object of " + std::to_string(n) +
                                   " blocks decoded into " +
                                   std::to_string(blocks.size()));
  }
  return DecodePayload(view.header.codec, layout, view.payload, blocks);
}

}  // namespace kvstash::store
