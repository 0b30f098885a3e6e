#include "store/kv_codec.h"

#include <zstd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "base/check.h"
#include "kernels/dtype.h"
#include "kernels/ops_fast.h"

namespace kvstash::store {
namespace {

using kernels::BlockLayout;
using kernels::KvSide;
using kernels::KvType;

constexpr int kZstdLevel = 1;
// Steps are 2^(e / kStepsPerOctave) for an int8 e; byte 0 marks a channel
// that is zero over the object's tokens.
constexpr int kStepsPerOctave = 4;
constexpr int kStepBias = 128;

// The element width byte planes are made of: the width of every element
// when both sides share one float width, else 1 (no regrouping).
size_t PlaneWidth(const BlockLayout& layout) {
  auto width = [](KvType t) -> size_t {
    switch (t) {
      case KvType::kF32:
        return 4;
      case KvType::kF16:
      case KvType::kBF16:
        return 2;
      default:
        return 1;
    }
  };
  const size_t k = width(layout.kv.k);
  return k == width(layout.kv.v) ? k : 1;
}

// Byte planes of an object's elements (W bytes each, W a constant so that
// the loops vectorize): byte j of element i (counted across the blocks, e
// elements a block) goes to planes[j * n + i], n the object's element
// count; and back.
template <size_t W>
void ShuffleBy(ConstBlocks blocks, size_t block_bytes, uint8_t* planes) {
  const size_t e = block_bytes / W;
  const size_t n = e * blocks.size();
  for (size_t b = 0; b < blocks.size(); ++b) {
    const uint8_t* src = blocks[b];
    uint8_t* dst = planes + b * e;
    for (size_t i = 0; i < e; ++i) {
      for (size_t j = 0; j < W; ++j) dst[j * n + i] = src[i * W + j];
    }
  }
}
template <size_t W>
void UnshuffleBy(const uint8_t* planes, size_t block_bytes,
                 MutableBlocks blocks) {
  const size_t e = block_bytes / W;
  const size_t n = e * blocks.size();
  for (size_t b = 0; b < blocks.size(); ++b) {
    const uint8_t* src = planes + b * e;
    uint8_t* dst = blocks[b];
    for (size_t i = 0; i < e; ++i) {
      for (size_t j = 0; j < W; ++j) dst[i * W + j] = src[j * n + i];
    }
  }
}

void Shuffle(ConstBlocks blocks, size_t block_bytes, size_t w,
             uint8_t* planes) {
  if (w == 2) return ShuffleBy<2>(blocks, block_bytes, planes);
  if (w == 4) return ShuffleBy<4>(blocks, block_bytes, planes);
  return ShuffleBy<1>(blocks, block_bytes, planes);
}

void Unshuffle(const uint8_t* planes, size_t block_bytes, size_t w,
               MutableBlocks blocks) {
  if (w == 2) return UnshuffleBy<2>(planes, block_bytes, blocks);
  if (w == 4) return UnshuffleBy<4>(planes, block_bytes, blocks);
  return UnshuffleBy<1>(planes, block_bytes, blocks);
}

// Pointers to the whole blocks of contiguous bytes (const or not).
template <typename Byte>
std::vector<Byte*> PointersTo(const BlockLayout& layout,
                              std::span<Byte> blocks) {
  KV_CHECK(blocks.size() % layout.block_bytes() == 0);
  std::vector<Byte*> pointers;
  for (size_t at = 0; at < blocks.size(); at += layout.block_bytes()) {
    pointers.push_back(blocks.data() + at);
  }
  return pointers;
}

struct ZstdFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// One compression and one decompression context per thread (creating one
// per object costs more than coding a small object).
std::vector<uint8_t> Compress(std::span<const uint8_t> bytes) {
  thread_local std::unique_ptr<ZSTD_CCtx, ZstdFree> ctx(ZSTD_createCCtx());
  KV_CHECK(ctx != nullptr);
  thread_local std::vector<uint8_t> out;
  out.resize(std::max(out.size(), ZSTD_compressBound(bytes.size())));
  const size_t n = ZSTD_compressCCtx(ctx.get(), out.data(), out.size(),
                                     bytes.data(), bytes.size(), kZstdLevel);
  KV_CHECK(!ZSTD_isError(n));  // only an undersized buffer can fail
  return {out.begin(), out.begin() + ptrdiff_t(n)};
}

// Decompresses `payload` into exactly dst.size() bytes.
Status Decompress(std::span<const uint8_t> payload, std::span<uint8_t> dst) {
  thread_local std::unique_ptr<ZSTD_DCtx, ZstdFree> ctx(ZSTD_createDCtx());
  KV_CHECK(ctx != nullptr);
  const unsigned long long size =
      ZSTD_getFrameContentSize(payload.data(), payload.size());
  if (size != dst.size()) {
    return Status::Corruption("tier codec: the payload does not hold " +
                              std::to_string(dst.size()) + " bytes");
  }
  const size_t n = ZSTD_decompressDCtx(ctx.get(), dst.data(), dst.size(),
                                       payload.data(), payload.size());
  if (ZSTD_isError(n) || n != dst.size()) {
    return Status::Corruption(
        std::string("tier codec: zstd: ") +
        (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame"));
  }
  return Status::OK();
}

// A float KV row (n elements of `t`) as f32, and back.
void RowToF32(KvType t, const uint8_t* row, size_t n, float* out) {
  if (t == KvType::kF32) {
    std::memcpy(out, row, n * sizeof(float));
  } else if (t == KvType::kF16) {
    kernels::F16RowToF32Fast(reinterpret_cast<const uint16_t*>(row), n, out);
  } else {
    const auto* h = reinterpret_cast<const uint16_t*>(row);
    for (size_t i = 0; i < n; ++i) out[i] = kernels::BF16ToF32(h[i]);
  }
}

void F32ToRow(KvType t, const float* x, size_t n, uint8_t* row) {
  if (t == KvType::kF32) {
    std::memcpy(row, x, n * sizeof(float));
  } else if (t == KvType::kF16) {
    kernels::F32RowToF16Fast(x, n, reinterpret_cast<uint16_t*>(row));
  } else {
    auto* h = reinterpret_cast<uint16_t*>(row);
    for (size_t i = 0; i < n; ++i) h[i] = kernels::F32ToBF16(x[i]);
  }
}

// A per-thread buffer of at least `n` bytes.
uint8_t* Scratch(std::vector<uint8_t>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// The (layer, side, head) runs of a block in the order of the layout.
struct RunRef {
  int layer;
  KvSide side;
  int head;
};
std::vector<RunRef> Runs(const BlockLayout& layout) {
  std::vector<RunRef> runs;
  for (int l = 0; l < layout.n_layers; ++l) {
    for (const KvSide side : {KvSide::kK, KvSide::kV}) {
      for (int h = 0; h < layout.n_kv_heads; ++h) runs.push_back({l, side, h});
    }
  }
  return runs;
}

// cachegen's uncompressed stream: [run][channel] step codes, then
// [run][token][channel] int8 symbols (token-major, so that differences and
// dequantization run along rows; zstd's entropy stage codes symbols one by
// one, so their order does not change its output's size).
size_t CacheGenStreamBytes(const BlockLayout& layout, size_t tokens) {
  const size_t channels = size_t(layout.n_layers) * 2 *
                          size_t(layout.n_kv_heads) * size_t(layout.head_dim);
  return channels * (1 + tokens);
}

// kSteps[code] = 2^((code - kStepBias) / kStepsPerOctave) for codes 1..255
// (kSteps[0] = 0: a zero channel), increasing.
const std::array<float, 256>& Steps() {
  static const std::array<float, 256> steps = [] {
    std::array<float, 256> s{};
    for (int code = 1; code < 256; ++code) {
      s[size_t(code)] =
          std::exp2(float(code - kStepBias) / float(kStepsPerOctave));
    }
    return s;
  }();
  return steps;
}

// The smallest code whose step is >= `step` (255 when none is).
uint8_t CodeAtLeast(float step) {
  const std::array<float, 256>& s = Steps();
  const auto it = std::lower_bound(s.begin() + 1, s.end(), step);
  return uint8_t(it == s.end() ? 255 : it - s.begin());
}

// The step codes of the d channels of x ([tokens][d], finite; one run: a
// (layer, side, kv head)): per channel the smallest step >= max(s / levels,
// amax / 127), so that every value's symbol fits in [-127, 127], where s is
// the root mean square of the run's channel standard deviations; code 0 for
// a channel that is zero throughout. One s for the head's channels spends
// bits where the variance is (the same absolute error in every channel, as
// reverse water-filling does for the MSE of the head's vector, which is what
// q.k and the weighted sum of values see), and does not trust a standard
// deviation taken over a few tokens per channel. Measured on stories260K
// (kvstash eval --ctx 512 --windows 16, one-block objects, levels {6, 4,
// 4}): KL mean 0.0063 at 0.307 of f16, where a step from each channel's own
// std gave 0.0050 at 0.340, 0.0076 at 0.321 and 0.0125 at 0.304 (levels
// scaled); with 256-token objects the two are even (0.249 of f16 at KL
// 0.00069 against 0.248 at 0.00073). Sums run along rows (vectorized over
// channels).
void StepCodes(const float* x, size_t tokens, size_t d, float levels,
               uint8_t* codes) {
  double sum[256] = {}, var[256] = {};
  float amax[256] = {};
  for (size_t t = 0; t < tokens; ++t) {
    const float* row = x + t * d;
    for (size_t c = 0; c < d; ++c) {
      sum[c] += row[c];
      const float a = std::fabs(row[c]);
      amax[c] = a > amax[c] ? a : amax[c];
    }
  }
  double mean[256];
  for (size_t c = 0; c < d; ++c) mean[c] = sum[c] / double(tokens);
  for (size_t t = 0; t < tokens; ++t) {
    const float* row = x + t * d;
    for (size_t c = 0; c < d; ++c) {
      const double dev = row[c] - mean[c];
      var[c] += dev * dev;
    }
  }
  double mean_var = 0;
  for (size_t c = 0; c < d; ++c) mean_var += var[c] / double(tokens);
  const double step = std::sqrt(mean_var / double(d)) / levels;
  for (size_t c = 0; c < d; ++c) {
    codes[c] =
        amax[c] == 0
            ? 0
            : CodeAtLeast(float(std::max(step, double(amax[c]) / 127.0)));
  }
}

// Key symbols are coded as differences between consecutive tokens
// (CacheGen's token-wise locality: a key channel drifts slowly around an
// offset, which the differences remove); value symbols are not (their
// differences measured larger than the values on stories260K: 4.4 against
// 4.0 bits, keys 4.3 against 5.2). Modulo 256, so lossless. q: [tokens][d].
void DeltaEncode(int8_t* q, size_t tokens, size_t d) {
  for (size_t t = tokens - 1; t > 0; --t) {
    for (size_t c = 0; c < d; ++c) {
      q[t * d + c] = int8_t(uint8_t(q[t * d + c] - q[(t - 1) * d + c]));
    }
  }
}
void DeltaDecode(int8_t* q, size_t tokens, size_t d) {
  for (size_t t = 1; t < tokens; ++t) {
    for (size_t c = 0; c < d; ++c) {
      q[t * d + c] = int8_t(uint8_t(q[t * d + c] + q[(t - 1) * d + c]));
    }
  }
}

// round(v) for |v| <= 127.5, to nearest even as nearbyint in the default
// rounding mode, in plain float arithmetic (so the loop vectorizes).
inline float RoundSmall(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// q[c] = round(x[c] * inv[c]) within [-127, 127]. (int8_t may alias
// anything: __restrict lets the loop vectorize.)
void QuantizeRow(const float* __restrict x, const float* __restrict inv,
                 size_t d, int8_t* __restrict q) {
  for (size_t c = 0; c < d; ++c) {
    float v = x[c] * inv[c];
    v = v < -127.0f ? -127.0f : v;  // the forms of minps / maxps
    v = v > 127.0f ? 127.0f : v;
    q[c] = int8_t(int32_t(RoundSmall(v)));
  }
}

std::vector<uint8_t> EncodeCacheGen(const BlockLayout& layout,
                                    ConstBlocks blocks) {
  const size_t n_blocks = blocks.size();
  const size_t bt = size_t(layout.block_tokens);
  const size_t tokens = n_blocks * bt;
  const size_t d = size_t(layout.head_dim);
  thread_local std::vector<uint8_t> stream_buffer;
  thread_local std::vector<float> values;  // [token][channel] of one run
  uint8_t* stream = Scratch(stream_buffer, CacheGenStreamBytes(layout, tokens));
  values.resize(tokens * d);
  const std::vector<RunRef> runs = Runs(layout);
  uint8_t* steps = stream;
  auto* symbols = reinterpret_cast<int8_t*>(stream + runs.size() * d);
  float inv[256];  // 1 / step of the run's channels (0: a zero channel)
  for (const RunRef& r : runs) {
    const KvType type = layout.kv.type(r.side);
    for (size_t b = 0; b < n_blocks; ++b) {
      const uint8_t* run =
          blocks[b] + layout.RunOffset(r.layer, r.side, r.head);
      // A float type's run is its rows back to back: one conversion.
      RowToF32(type, run, bt * d, &values[b * bt * d]);
    }
    for (float& v : values) {
      // A broken value (inf, NaN) codes as zero; branch-free, to vectorize.
      v = std::fabs(v) <= std::numeric_limits<float>::max() ? v : 0.0f;
    }
    StepCodes(values.data(), tokens, d,
              float(CacheGenLevels(r.layer, layout.n_layers)), steps);
    for (size_t c = 0; c < d; ++c) {
      inv[c] = steps[c] == 0 ? 0.0f : 1.0f / Steps()[steps[c]];
    }
    for (size_t t = 0; t < tokens; ++t) {
      QuantizeRow(&values[t * d], inv, d, symbols + t * d);
    }
    if (r.side == KvSide::kK) DeltaEncode(symbols, tokens, d);
    steps += d;
    symbols += tokens * d;
  }
  return Compress({stream, CacheGenStreamBytes(layout, tokens)});
}

Status DecodeCacheGen(const BlockLayout& layout,
                      std::span<const uint8_t> payload, MutableBlocks blocks) {
  const size_t n_blocks = blocks.size();
  const size_t bt = size_t(layout.block_tokens);
  const size_t tokens = n_blocks * bt;
  const size_t d = size_t(layout.head_dim);
  thread_local std::vector<uint8_t> stream_buffer;
  const size_t stream_bytes = CacheGenStreamBytes(layout, tokens);
  uint8_t* stream = Scratch(stream_buffer, stream_bytes);
  KV_RETURN_IF_ERROR(Decompress(payload, {stream, stream_bytes}));
  const std::vector<RunRef> runs = Runs(layout);
  const uint8_t* steps = stream;
  auto* symbols = reinterpret_cast<int8_t*>(stream + runs.size() * d);
  thread_local std::vector<float> values;  // one block's run, [bt][d]
  values.resize(bt * d);
  float step[256];  // of the run's channels; head_dim <= 256
  for (const RunRef& r : runs) {
    const KvType type = layout.kv.type(r.side);
    for (size_t c = 0; c < d; ++c) step[c] = Steps()[steps[c]];
    if (r.side == KvSide::kK) DeltaDecode(symbols, tokens, d);
    for (size_t b = 0; b < n_blocks; ++b) {
      for (size_t t = 0; t < bt; ++t) {
        const int8_t* q = symbols + (b * bt + t) * d;
        float* row = &values[t * d];
        for (size_t c = 0; c < d; ++c) row[c] = float(q[c]) * step[c];
      }
      F32ToRow(type, values.data(), bt * d,
               blocks[b] + layout.RunOffset(r.layer, r.side, r.head));
    }
    steps += d;
    symbols += tokens * d;
  }
  return Status::OK();
}

}  // namespace

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kRaw:
      return "none";
    case Codec::kZstd:
      return "zstd";
    case Codec::kCacheGen:
      return "cachegen";
  }
  return "unknown";
}

Result<Codec> ParseCodec(std::string_view name) {
  for (const Codec c : {Codec::kRaw, Codec::kZstd, Codec::kCacheGen}) {
    if (name == CodecName(c)) return c;
  }
  return Status::InvalidArgument(
      "tier codec must be none, zstd or cachegen, not '" + std::string(name) +
      "'");
}

bool CodecKnown(uint8_t value) { return value <= uint8_t(Codec::kCacheGen); }

bool CodecIsLossy(Codec codec) { return codec == Codec::kCacheGen; }

std::string CodecSupports(Codec codec, const BlockLayout& layout) {
  if (codec != Codec::kCacheGen) return "";
  for (const KvSide side : {KvSide::kK, KvSide::kV}) {
    if (!kernels::KvIsFloat(layout.kv.type(side))) {
      return std::string(
                 "tier codec cachegen codes float KV types (f32, "
                 "f16, bf16), not ") +
             std::string(kernels::KvTypeName(layout.kv.type(side))) +
             ": use --tier-codec zstd or none";
    }
  }
  if (layout.head_dim > 256) {
    return "tier codec cachegen supports head_dim <= 256";
  }
  return "";
}

int CacheGenLevels(int layer, int n_layers) {
  // Thirds of the depth. Measured on stories260K (kvstash eval --ctx 512
  // --windows 16, steps pooled per head as StepCodes takes them; one-block
  // objects, then 256-token ones): {6, 4, 4} KL 0.0063 at 0.307 of f16,
  // 0.249; {6, 5, 4} 0.0048 at 0.314, 0.257; {5, 5, 4} 0.0055 at 0.307,
  // 0.249; {8, 4, 4} 0.0057 at 0.321, 0.265; {6, 4, 3} 0.0080 at 0.304,
  // 0.246.
  static constexpr int kLevels[3] = {6, 4, 4};
  return kLevels[std::min(2, 3 * layer / std::max(1, n_layers))];
}

std::vector<uint8_t> EncodePayload(Codec codec, const BlockLayout& layout,
                                   ConstBlocks blocks) {
  KV_CHECK(CodecSupports(codec, layout).empty());
  KV_CHECK(!blocks.empty());
  const size_t block_bytes = layout.block_bytes();
  switch (codec) {
    case Codec::kRaw: {
      std::vector<uint8_t> out(blocks.size() * block_bytes);
      for (size_t b = 0; b < blocks.size(); ++b) {
        std::memcpy(out.data() + b * block_bytes, blocks[b], block_bytes);
      }
      return out;
    }
    case Codec::kZstd: {
      thread_local std::vector<uint8_t> planes;
      const size_t bytes = blocks.size() * block_bytes;
      uint8_t* p = Scratch(planes, bytes);
      Shuffle(blocks, block_bytes, PlaneWidth(layout), p);
      return Compress({p, bytes});
    }
    case Codec::kCacheGen:
      return EncodeCacheGen(layout, blocks);
  }
  KV_CHECK(false);
  return {};
}

std::vector<uint8_t> EncodePayload(Codec codec, const BlockLayout& layout,
                                   std::span<const uint8_t> blocks) {
  return EncodePayload(codec, layout, BlockPointers(layout, blocks));
}

Status DecodePayload(Codec codec, const BlockLayout& layout,
                     std::span<const uint8_t> payload, MutableBlocks blocks) {
  if (blocks.empty()) return Status::InvalidArgument("tier codec: no blocks");
  const size_t block_bytes = layout.block_bytes();
  const size_t bytes = blocks.size() * block_bytes;
  switch (codec) {
    case Codec::kRaw:
      if (payload.size() != bytes) {
        return Status::Corruption("tier codec: a raw payload of " +
                                  std::to_string(payload.size()) +
                                  " bytes is not " + std::to_string(bytes));
      }
      for (size_t b = 0; b < blocks.size(); ++b) {
        std::memcpy(blocks[b], payload.data() + b * block_bytes, block_bytes);
      }
      return Status::OK();
    case Codec::kZstd: {
      thread_local std::vector<uint8_t> planes;
      uint8_t* p = Scratch(planes, bytes);
      KV_RETURN_IF_ERROR(Decompress(payload, {p, bytes}));
      Unshuffle(p, block_bytes, PlaneWidth(layout), blocks);
      return Status::OK();
    }
    case Codec::kCacheGen: {
      const std::string why = CodecSupports(codec, layout);
      if (!why.empty()) return Status::InvalidArgument(why);
      return DecodeCacheGen(layout, payload, blocks);
    }
  }
  return Status::NotSupported("tier codec " + std::to_string(unsigned(codec)) +
                              " is unknown to this build");
}

Status DecodePayload(Codec codec, const BlockLayout& layout,
                     std::span<const uint8_t> payload,
                     std::span<uint8_t> blocks) {
  if (blocks.empty() || blocks.size() % layout.block_bytes() != 0) {
    return Status::InvalidArgument("tier codec: not whole blocks");
  }
  return DecodePayload(codec, layout, payload, PointersTo(layout, blocks));
}

std::vector<const uint8_t*> BlockPointers(const BlockLayout& layout,
                                          std::span<const uint8_t> blocks) {
  return PointersTo(layout, blocks);
}

Result<size_t> RoundTrip(Codec codec, const BlockLayout& layout,
                         MutableBlocks blocks) {
  const std::vector<const uint8_t*> in(blocks.begin(), blocks.end());
  const std::vector<uint8_t> payload = EncodePayload(codec, layout, in);
  KV_RETURN_IF_ERROR(DecodePayload(codec, layout, payload, blocks));
  return payload.size();
}

}  // namespace kvstash::store
