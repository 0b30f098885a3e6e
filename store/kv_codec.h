// Codecs for the payload of tier objects: how the K/V bytes of whole blocks
// are stored on disk and in Redis (--tier-codec). The block pool always holds
// blocks in their KV types (kernels/kv_format.h); a codec applies between the
// pool and a tier only: EncodePayload when a block is written behind,
// DecodePayload when it is loaded back.
//
//   none      the blocks' bytes as the pool holds them.
//   zstd      lossless: the bytes regrouped into byte planes (byte j of every
//             element together, for float types; "shuffle" as in Blosc) and
//             compressed by zstd at level 1 (libzstd). Any KV type.
//   cachegen  lossy, after CacheGen (Liu et al., SIGCOMM 2024): per (layer,
//             K|V, kv head, channel) over the object's tokens, values are
//             quantized uniformly (symbol = round(x / step)) with a step of
//             s / levels(layer), s the root mean square of the head's channel
//             standard deviations (at least amax / 127 per channel, so
//             symbols fit in int8), where earlier layers get more levels
//             (CacheGen's layer-wise sensitivity); the step is rounded up to
//             a power of 2^(1/4) and stored in one byte per channel. Key
//             symbols are coded as differences between consecutive tokens
//             (CacheGen's token-wise locality; lossless, modulo 256), value
//             symbols as they are. The symbols, grouped by channel (CacheGen's
//             per-channel distributions), go through zstd's entropy stage in
//             place of CacheGen's arithmetic coder. Float KV types (f32, f16,
//             bf16) only: a quantized type is already coded.
//
// The codec is part of the namespace (kvcache::RootHash), so objects of one
// codec are never looked up as another's, and the object header names it
// (store/object_format.h), so a reader refuses a mismatch. Every layout
// choice below is part of the format: changing one needs a new Codec value.
// How the encoder picks cachegen's steps (the levels table, the pooled
// standard deviation) is not: a reader takes each channel's step from the
// object.
//
// Decoding accepts any byte string: a payload that does not decode to
// exactly the expected blocks is Corruption (zstd bounds its output), never
// undefined behaviour. Pure functions; thread-safe (scratch buffers are per
// thread).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "kernels/block_layout.h"

namespace kvstash::store {

// How an object's payload encodes its blocks. Values are part of the object
// format (header byte 61).
enum class Codec : uint8_t {
  kRaw = 0,       // "none"
  kZstd = 1,      // "zstd", lossless
  kCacheGen = 2,  // "cachegen", lossy
};

// "none", "zstd", "cachegen"; "unknown" for other values.
const char* CodecName(Codec codec);
// Parses a CodecName; InvalidArgument listing the names otherwise.
Result<Codec> ParseCodec(std::string_view name);
// Whether this build can decode `value` (a header's codec byte).
bool CodecKnown(uint8_t value);
// Whether a decoded block can differ from the block encoded.
bool CodecIsLossy(Codec codec);

// Empty when `codec` can encode blocks of `layout`, else why not.
std::string CodecSupports(Codec codec, const kernels::BlockLayout& layout);

// cachegen's levels for `layer` of `n_layers`: a channel's step is its
// standard deviation over the object's tokens divided by this.
int CacheGenLevels(int layer, int n_layers);

// The n blocks of an object, each layout.block_bytes() long, wherever they
// lie (blocks of the pool are not contiguous).
using ConstBlocks = std::span<const uint8_t* const>;
using MutableBlocks = std::span<uint8_t* const>;

// Pointers to the whole blocks of contiguous `blocks`. REQUIRES: its size a
// multiple of layout.block_bytes().
std::vector<const uint8_t*> BlockPointers(const kernels::BlockLayout& layout,
                                          std::span<const uint8_t> blocks);

// Encodes `blocks` (as the pool holds them). REQUIRES: CodecSupports(codec,
// layout) is empty; blocks non-empty.
std::vector<uint8_t> EncodePayload(Codec codec,
                                   const kernels::BlockLayout& layout,
                                   ConstBlocks blocks);
// The same for contiguous blocks (a multiple of block_bytes()).
std::vector<uint8_t> EncodePayload(Codec codec,
                                   const kernels::BlockLayout& layout,
                                   std::span<const uint8_t> blocks);

// Decodes `payload` into `blocks` (the n blocks it must hold). Corruption
// when the payload does not decode to exactly n blocks of `layout`;
// NotSupported for an unknown codec.
Status DecodePayload(Codec codec, const kernels::BlockLayout& layout,
                     std::span<const uint8_t> payload, MutableBlocks blocks);
// The same into contiguous blocks (InvalidArgument unless a positive
// multiple of block_bytes()).
Status DecodePayload(Codec codec, const kernels::BlockLayout& layout,
                     std::span<const uint8_t> payload,
                     std::span<uint8_t> blocks);

// Encodes `blocks` and decodes the payload back into them: what a reader of
// the object gets (the same bytes, for a lossless codec). Returns the
// payload's size. For tools that measure a codec (kvstash eval).
Result<size_t> RoundTrip(Codec codec, const kernels::BlockLayout& layout,
                         MutableBlocks blocks);

}  // namespace kvstash::store
