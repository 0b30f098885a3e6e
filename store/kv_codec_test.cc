#include "store/kv_codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/kv_format_testing.h"
#include "store/object_format.h"

namespace kvstash::store {
namespace {

using kernels::BlockLayout;
using kernels::KvFormat;
using kernels::KvSide;
using kernels::KvType;
using Bytes = std::vector<uint8_t>;

constexpr Codec kAllCodecs[] = {Codec::kRaw, Codec::kZstd, Codec::kCacheGen};

BlockLayout Layout(KvFormat kv = {}, int n_layers = 6) {
  BlockLayout l;
  l.n_layers = n_layers;
  l.n_kv_heads = 2;
  l.head_dim = 16;
  l.block_tokens = 16;
  l.kv = kv;
  return l;
}

// `n` blocks whose rows hold KV-like values: per channel a scale spanning
// three orders of magnitude (outlier channels, as keys have) and a smooth
// drift along the tokens, plus noise; encoded by each side's type.
Bytes Blocks(const BlockLayout& l, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  Bytes out(size_t(n) * l.block_bytes());
  std::vector<float> row(size_t(l.head_dim));
  for (int b = 0; b < n; ++b) {
    uint8_t* block = out.data() + size_t(b) * l.block_bytes();
    for (int layer = 0; layer < l.n_layers; ++layer) {
      for (const KvSide side : {KvSide::kK, KvSide::kV}) {
        for (int h = 0; h < l.n_kv_heads; ++h) {
          uint8_t* run = block + l.RunOffset(layer, side, h);
          if (kernels::KvIsKivi(l.kv.type(side)) && side == KvSide::kK) {
            // Per-channel runs are sealed whole; any bytes will do for
            // the lossless codecs.
            for (size_t i = 0; i < l.run_bytes(side); ++i) {
              run[i] = uint8_t(rng());
            }
            continue;
          }
          for (int t = 0; t < l.block_tokens; ++t) {
            const int pos = b * l.block_tokens + t;
            for (int c = 0; c < l.head_dim; ++c) {
              const float scale = std::pow(10.0f, float(c % 4) - 2.0f);
              row[size_t(c)] =
                  scale * (std::sin(0.05f * float(pos) * float(c + 1)) +
                           0.3f * noise(rng));
            }
            kernels::KvEncodeRow(l.kv.type(side), side, row.data(),
                                 size_t(l.head_dim),
                                 run + l.RowOffset(side, t));
          }
        }
      }
    }
  }
  return out;
}

Bytes RoundTrip(Codec codec, const BlockLayout& l, const Bytes& blocks) {
  const Bytes payload = EncodePayload(codec, l, blocks);
  Bytes back(blocks.size(), 0xEE);
  const Status s = DecodePayload(codec, l, payload, back);
  EXPECT_TRUE(s.ok()) << CodecName(codec) << ": " << s.ToString();
  return back;
}

TEST(KvCodecTest, NamesParse) {
  for (const Codec c : kAllCodecs) {
    Result<Codec> parsed = ParseCodec(CodecName(c));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, c);
    EXPECT_TRUE(CodecKnown(uint8_t(c)));
  }
  EXPECT_EQ(ParseCodec("lz4").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(CodecKnown(3));
  EXPECT_FALSE(CodecIsLossy(Codec::kZstd));
  EXPECT_TRUE(CodecIsLossy(Codec::kCacheGen));
}

// none and zstd give back every byte, for every pair of KV types, one block
// or several.
TEST(KvCodecTest, LosslessCodecsRoundTripEveryKvFormat) {
  for (const KvFormat& f : kernels::testing::AllKvFormats()) {
    const BlockLayout l = Layout(f);
    for (const int n : {1, 3}) {
      const Bytes blocks = Blocks(l, n, 7);
      for (const Codec c : {Codec::kRaw, Codec::kZstd}) {
        EXPECT_TRUE(CodecSupports(c, l).empty());
        EXPECT_EQ(RoundTrip(c, l, blocks), blocks)
            << CodecName(c) << " " << kernels::KvFormatName(f) << " x" << n;
      }
    }
  }
}

TEST(KvCodecTest, CacheGenCodesFloatTypesOnly) {
  for (const KvFormat& f : kernels::testing::AllKvFormats()) {
    const bool floats = kernels::KvIsFloat(f.k) && kernels::KvIsFloat(f.v);
    EXPECT_EQ(CodecSupports(Codec::kCacheGen, Layout(f)).empty(), floats)
        << kernels::KvFormatName(f);
  }
  EXPECT_NE(CodecSupports(Codec::kCacheGen, Layout({KvType::kQ8, KvType::kQ8}))
                .find("float KV types"),
            std::string::npos);
}

TEST(KvCodecTest, CacheGenGivesMoreLevelsToEarlierLayers) {
  EXPECT_GT(CacheGenLevels(0, 24), CacheGenLevels(23, 24));
  for (int l = 0; l < 23; ++l) {
    EXPECT_GE(CacheGenLevels(l, 24), CacheGenLevels(l + 1, 24));
    EXPECT_GE(CacheGenLevels(l, 24), 1);
  }
}

// Each decoded value lies within half a step of the value encoded (plus the
// rounding of the KV type), where a channel's step is at most 2^(1/4) *
// max(s / levels(layer), amax / 127) over the object's tokens, s the root
// mean square of the head's channel standard deviations: the bound is
// derived from the format, not measured.
TEST(KvCodecTest, CacheGenErrorIsWithinHalfAStepPerChannel) {
  for (const KvType t : {KvType::kF32, KvType::kF16, KvType::kBF16}) {
    const BlockLayout l = Layout({t, t});
    for (const int n : {1, 4}) {
      const Bytes blocks = Blocks(l, n, 11);
      const Bytes back = RoundTrip(Codec::kCacheGen, l, blocks);
      const size_t d = size_t(l.head_dim);
      const float type_eps = t == KvType::kF32   ? 1e-7f
                             : t == KvType::kF16 ? 1e-3f
                                                 : 8e-3f;
      std::vector<float> a(d), b(d);
      for (int layer = 0; layer < l.n_layers; ++layer) {
        for (const KvSide side : {KvSide::kK, KvSide::kV}) {
          for (int h = 0; h < l.n_kv_heads; ++h) {
            // amax and std per channel over all n * block_tokens tokens.
            std::vector<float> amax(d, 0.0f);
            std::vector<double> sum(d, 0.0), sum_sq(d, 0.0);
            std::vector<std::vector<float>> orig, got;
            for (int blk = 0; blk < n; ++blk) {
              const size_t at =
                  size_t(blk) * l.block_bytes() + l.RunOffset(layer, side, h);
              for (int tok = 0; tok < l.block_tokens; ++tok) {
                kernels::KvDecodeRow(t, side, blocks.data() + at, size_t(tok),
                                     d, a.data());
                kernels::KvDecodeRow(t, side, back.data() + at, size_t(tok), d,
                                     b.data());
                orig.push_back(a);
                got.push_back(b);
                for (size_t c = 0; c < d; ++c) {
                  amax[c] = std::max(amax[c], std::fabs(a[c]));
                  sum[c] += a[c];
                  sum_sq[c] += double(a[c]) * a[c];
                }
              }
            }
            const float levels = float(CacheGenLevels(layer, l.n_layers));
            const double count = double(orig.size());
            double mean_var = 0;
            for (size_t c = 0; c < d; ++c) {
              const double mean = sum[c] / count;
              mean_var += std::max(0.0, sum_sq[c] / count - mean * mean);
            }
            const double sd = std::sqrt(mean_var / double(d));
            for (size_t i = 0; i < orig.size(); ++i) {
              for (size_t c = 0; c < d; ++c) {
                const float step =
                    std::pow(2.0f, 0.25f) *
                    float(std::max(sd / levels, double(amax[c]) / 127.0));
                const float bound = 0.5f * step * 1.001f +
                                    type_eps * std::fabs(orig[i][c]) + 1e-7f;
                ASSERT_LE(std::fabs(got[i][c] - orig[i][c]), bound)
                    << kernels::KvTypeName(t) << " layer " << layer
                    << " channel " << c << " token " << i;
              }
            }
          }
        }
      }
    }
  }
}

// The entropy stage earns its place: an object is smaller than its int8
// symbols alone would be (half of f16), and a zero block is tiny.
TEST(KvCodecTest, CacheGenIsSmallerThanItsSymbols) {
  const BlockLayout l = Layout({KvType::kF16, KvType::kF16});
  const Bytes blocks = Blocks(l, 4, 5);
  const Bytes payload = EncodePayload(Codec::kCacheGen, l, blocks);
  EXPECT_LT(double(payload.size()), 0.45 * double(blocks.size()));
  const Bytes zeros(l.block_bytes(), 0);
  EXPECT_LT(EncodePayload(Codec::kCacheGen, l, zeros).size(),
            l.block_bytes() / 20);
  EXPECT_EQ(RoundTrip(Codec::kCacheGen, l, zeros), zeros);
}

TEST(KvCodecTest, EncodingIsDeterministic) {
  const BlockLayout l = Layout({KvType::kF16, KvType::kF16});
  const Bytes blocks = Blocks(l, 2, 3);
  for (const Codec c : kAllCodecs) {
    EXPECT_EQ(EncodePayload(c, l, blocks), EncodePayload(c, l, blocks))
        << CodecName(c);
  }
}

// Damaged payloads are refused (or, where a flip lands in the entropy-coded
// symbols and still decodes, decode to some values), never undefined
// behaviour; a payload decoded as the wrong number of blocks is refused.
TEST(KvCodecTest, DamagedPayloadsAreRefused) {
  const BlockLayout l = Layout({KvType::kF16, KvType::kF16});
  const Bytes blocks = Blocks(l, 2, 9);
  for (const Codec c : {Codec::kZstd, Codec::kCacheGen}) {
    const Bytes payload = EncodePayload(c, l, blocks);
    Bytes out(blocks.size());
    for (const size_t keep :
         {size_t{0}, size_t{4}, payload.size() / 2, payload.size() - 1}) {
      EXPECT_EQ(DecodePayload(c, l, std::span(payload).first(keep), out).code(),
                StatusCode::kCorruption)
          << CodecName(c) << " truncated to " << keep;
    }
    Bytes one_block(l.block_bytes());
    EXPECT_EQ(DecodePayload(c, l, payload, one_block).code(),
              StatusCode::kCorruption)
        << CodecName(c);
    std::mt19937 rng(1);
    for (int i = 0; i < 200; ++i) {
      Bytes bad = payload;
      bad[rng() % bad.size()] ^= uint8_t(1u << (rng() % 8));
      (void)DecodePayload(c, l, bad, out);  // must not crash
    }
  }
  Bytes out(l.block_bytes() + 1);
  EXPECT_EQ(DecodePayload(Codec::kRaw, l, blocks, out).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      DecodePayload(Codec(7), l, blocks, std::span(out).first(l.block_bytes()))
          .code(),
      StatusCode::kNotSupported);
}

// Through the object format: the header names the codec, a reader expecting
// another codec refuses the object, and DecodeObjectBlocks gives the blocks
// back.
TEST(KvCodecTest, ObjectsNameTheirCodecAndAreNeverReadAsAnother) {
  const BlockLayout l = Layout({KvType::kF16, KvType::kF16});
  const Bytes blocks = Blocks(l, 2, 13);
  const Hash128 fp = HashBytes("fp", 2), key = HashBytes("k", 1);
  for (const Codec c : kAllCodecs) {
    const Bytes object =
        EncodeObject(fp, fp, key, l, uint32_t(2 * l.block_tokens), blocks, c);
    Result<ObjectView> view = DecodeObject(object, fp, key, l, c);
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    EXPECT_EQ(view->header.codec, c);
    Bytes back(blocks.size());
    ASSERT_TRUE(DecodeObjectBlocks(*view, l, back).ok());
    if (!CodecIsLossy(c)) {
      EXPECT_EQ(back, blocks);
    }
    EXPECT_EQ(
        DecodeObjectBlocks(*view, l, std::span(back).first(l.block_bytes()))
            .code(),
        StatusCode::kInvalidArgument);
    for (const Codec other : kAllCodecs) {
      if (other == c) continue;
      EXPECT_EQ(DecodeObject(object, fp, key, l, other).status().code(),
                StatusCode::kInvalidArgument)
          << CodecName(c) << " read as " << CodecName(other);
    }
  }
}

}  // namespace
}  // namespace kvstash::store
