// KV storage formats: how the keys or the values of one (layer, kv head) are
// stored inside a KV block, for every type the cache offers, and the scalar
// codecs (encode, seal, decode) that define them.
//
// K and V each have a type (KvFormat). A block holds, per (layer, K|V,
// kv head), one *run*: [run params][block_tokens rows], where a row is one
// token's head_dim values (with its inline scales) and the run params exist
// only for per-channel types. The types:
//
//   f32, f16, bf16   row = head_dim elements, no scales.
//   q8               symmetric int8 per token in groups of G = KvGroupSize
//                    (<= 32, sized to the head): row = [f16 d x n_groups]
//                    [int8 x head_dim]; x = d * q, d = amax / 127 (ggml
//                    q8_0 rounding, with d rounded to f16 before q).
//   q4               int4 per token group with ggml q4_0 rounding: d = m / -8
//                    (m the value of largest magnitude), q = min(15,
//                    trunc(x / d + 8.5)), x = d * (q - 8): row = [f16 d x
//                    n_groups][packed nibbles].
//   q4h              q4 after a normalized block Hadamard rotation of the
//                    head (KvRotated): the stored row is q4(H x).
//   kivi2, kivi4     KIVI (Liu et al. 2024). For K, per channel over the
//                    block's tokens: run params = [f16 scale x head_dim][f16
//                    min x head_dim], row = packed codes, x = min_c + scale_c *
//                    q. For V, per token group: row = [(f16 scale, f16 min) x
//                    n_groups][packed codes]. Asymmetric, q in [0, 2^bits).
//                    These types keep a full-precision residual
//                    (KvHasResidual): the block being filled is held as f16
//                    outside the block and sealed (KvSealRun) when full.
//
// Packed codes of `bits` (2, 4) bits: a row is cut into chunks of
// KvPackStripe(bits, head_dim) * (8 / bits) consecutive elements; byte j of a
// chunk holds elements j, j + S, j + 2S, ... (S the stripe) in bits
// [0, bits), [bits, 2 bits), ... so that S consecutive elements are one
// field of S consecutive bytes (what a SIMD loader wants). The byte layout is
// the same on every machine: blocks are shared through the tiers.
//
// Quantized types need head_dim % 8 == 0 and head_dim <= 512
// (KvFormatSupports says why not).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvstash::kernels {

enum class KvType : uint8_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kQ8 = 3,
  kQ4 = 4,
  kQ4H = 5,
  kKivi2 = 6,
  kKivi4 = 7,
};
inline constexpr int kKvTypeCount = 8;

// 0 for K, 1 for V (the block layout's K|V index).
enum class KvSide : uint8_t { kK = 0, kV = 1 };

// "f32", "f16", "bf16", "q8", "q4", "q4h", "kivi2", "kivi4".
std::string_view KvTypeName(KvType t);
// Parses a KvTypeName; false for an unknown name.
bool ParseKvType(std::string_view name, KvType* out);
// Every name, comma separated, for help texts and errors.
std::string KvTypeNames();

// The types of the keys and of the values.
struct KvFormat {
  KvType k = KvType::kF16;
  KvType v = KvType::kF16;

  KvType type(KvSide side) const { return side == KvSide::kK ? k : v; }
  bool operator==(const KvFormat&) const = default;
};
// "f16" when both are the same, else "k=q8,v=q4h".
std::string KvFormatName(const KvFormat& f);

constexpr bool KvIsFloat(KvType t) {
  return t == KvType::kF32 || t == KvType::kF16 || t == KvType::kBF16;
}
constexpr bool KvIsKivi(KvType t) {
  return t == KvType::kKivi2 || t == KvType::kKivi4;
}
// Stored after a Hadamard rotation of the head (queries / outputs are
// rotated by the caller of the attention kernels, see KvRotate).
constexpr bool KvRotated(KvType t) { return t == KvType::kQ4H; }
// Written to a full-precision (f16) residual block first and quantized whole
// when the block is full.
constexpr bool KvHasResidual(KvType t) { return KvIsKivi(t); }
constexpr bool KvHasResidual(const KvFormat& f) {
  return KvHasResidual(f.k) || KvHasResidual(f.v);
}
// Bits per stored code (32 / 16 for floats).
int KvBits(KvType t);

// Empty when `t` can store heads of `head_dim`, else why not.
std::string KvFormatSupports(KvType t, size_t head_dim);

// Elements per scale group of the per-token quantized types: the largest
// power of two <= 32 that divides head_dim.
size_t KvGroupSize(size_t head_dim);
// Elements of one field of packed `bits`-bit codes (see the header comment):
// the largest power of two S <= 16 with S * (8 / bits) dividing head_dim.
size_t KvPackStripe(int bits, size_t head_dim);

// Bytes of one token's row, scales included.
size_t KvRowBytes(KvType t, KvSide side, size_t head_dim);
// Bytes of a run's params (before its rows): 4 * head_dim for KIVI keys,
// else 0.
size_t KvRunParamBytes(KvType t, KvSide side, size_t head_dim);
// KvRunParamBytes + block_tokens * KvRowBytes.
size_t KvRunBytes(KvType t, KvSide side, size_t head_dim, size_t block_tokens);

// Encodes one token of a per-token type (every type but KIVI keys; a KIVI
// value row is encoded the same way when its block is sealed) from x
// ([head_dim] f32) into `row` (KvRowBytes bytes). q4h rotates x first.
// REQUIRES: x finite; !(KvIsKivi(t) && side == kK).
void KvEncodeRow(KvType t, KvSide side, const float* x, size_t head_dim,
                 uint8_t* row);

// Seals a full run of a residual type from its f16 rows ([n_tokens][head_dim]
// IEEE halves): writes the run params and every row into `run`
// (KvRunBytes(t, side, head_dim, block_tokens) bytes; rows past n_tokens are
// zero). Deterministic: the same f16 rows give the same bytes.
// REQUIRES: KvHasResidual(t); n_tokens <= block_tokens.
void KvSealRun(KvType t, KvSide side, const uint16_t* f16_rows, size_t n_tokens,
               size_t head_dim, size_t block_tokens, uint8_t* run);

// Decodes row `token` of a run into out ([head_dim] f32), in the stored
// (rotated, for q4h) basis: the values the attention kernels compute with.
void KvDecodeRow(KvType t, KvSide side, const uint8_t* run, size_t token,
                 size_t head_dim, float* out);

// Applies the normalized block Hadamard rotation of KvRotated types to x
// ([head_dim]) in place: blocks of the largest power of two dividing
// head_dim (at most head_dim), each multiplied by H / sqrt(n). The rotation
// is its own inverse.
void KvRotate(float* x, size_t head_dim);

}  // namespace kvstash::kernels
