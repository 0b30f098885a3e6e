#include "kernels/kv_format.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/check.h"
#include "kernels/dtype.h"

namespace kvstash::kernels {
namespace {

constexpr std::array<std::string_view, kKvTypeCount> kNames = {
    "f32", "f16", "bf16", "q8", "q4", "q4h", "kivi2", "kivi4"};

size_t LargestPow2Dividing(size_t n, size_t cap) {
  size_t p = 1;
  while (p * 2 <= cap && n % (p * 2) == 0) p *= 2;
  return p;
}

size_t NumGroups(size_t head_dim) { return head_dim / KvGroupSize(head_dim); }

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

void StoreU16(uint16_t v, uint8_t* p) { std::memcpy(p, &v, sizeof(v)); }

// Bytes of the packed codes of one row.
size_t PackedBytes(int bits, size_t head_dim) {
  return head_dim * size_t(bits) / 8;
}

// Packs codes[head_dim] (each < 2^bits) into dst (PackedBytes bytes) in the
// chunked layout of the header.
void PackCodes(int bits, const uint8_t* codes, size_t head_dim, uint8_t* dst) {
  if (bits == 8) {
    std::memcpy(dst, codes, head_dim);
    return;
  }
  const size_t per_byte = 8 / size_t(bits);
  const size_t stripe = KvPackStripe(bits, head_dim);
  const size_t chunk = stripe * per_byte;
  std::memset(dst, 0, PackedBytes(bits, head_dim));
  for (size_t i = 0; i < head_dim; ++i) {
    const size_t c = i / chunk, r = i % chunk;
    const size_t field = r / stripe, j = r % stripe;
    dst[c * stripe + j] |= uint8_t(codes[i] << (field * size_t(bits)));
  }
}

// Code of element i of a packed row.
uint8_t CodeAt(int bits, const uint8_t* packed, size_t head_dim, size_t i) {
  const size_t per_byte = 8 / size_t(bits);
  const size_t stripe = KvPackStripe(bits, head_dim);
  const size_t chunk = stripe * per_byte;
  const size_t c = i / chunk, r = i % chunk;
  const size_t field = r / stripe, j = r % stripe;
  return uint8_t((packed[c * stripe + j] >> (field * size_t(bits))) &
                 ((1u << bits) - 1));
}

// Asymmetric quantization of n values spaced `stride` apart to `bits` bits:
// writes the f16 scale and min and the codes (codes[i * stride]).
void QuantizeAsym(const float* x, size_t n, size_t stride, int bits,
                  uint16_t* scale16, uint16_t* min16, uint8_t* codes) {
  float lo = x[0], hi = x[0];
  for (size_t i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  const float levels = float((1 << bits) - 1);
  *scale16 = F32ToF16((hi - lo) / levels);
  *min16 = F32ToF16(lo);
  const float s = F16ToF32(*scale16), m = F16ToF32(*min16);
  for (size_t i = 0; i < n; ++i) {
    const float q = s > 0.0f ? std::nearbyint((x[i * stride] - m) / s) : 0.0f;
    codes[i * stride] = uint8_t(std::clamp(q, 0.0f, levels));
  }
}

// Symmetric per-group codes of a q8 / q4 row (scales first).
void EncodeSymmetric(KvType t, const float* x, size_t head_dim, uint8_t* row) {
  const size_t g = KvGroupSize(head_dim), ng = head_dim / g;
  uint8_t codes[512];
  KV_CHECK(head_dim <= sizeof(codes));
  for (size_t b = 0; b < ng; ++b) {
    const float* xb = x + b * g;
    float d;
    if (t == KvType::kQ8) {
      float amax = 0.0f;
      for (size_t i = 0; i < g; ++i) amax = std::max(amax, std::fabs(xb[i]));
      d = amax / 127.0f;
    } else {
      float m = 0.0f;  // value of largest magnitude
      for (size_t i = 0; i < g; ++i) {
        if (std::fabs(xb[i]) > std::fabs(m)) m = xb[i];
      }
      d = m / -8.0f;
    }
    const uint16_t d16 = F32ToF16(d);
    StoreU16(d16, row + 2 * b);
    const float df = F16ToF32(d16);
    const float id = df != 0.0f ? 1.0f / df : 0.0f;
    for (size_t i = 0; i < g; ++i) {
      if (t == KvType::kQ8) {
        const float q = std::clamp(std::nearbyint(xb[i] * id), -127.0f, 127.0f);
        codes[b * g + i] = uint8_t(int8_t(q));
      } else {
        const float q = std::trunc(xb[i] * id + 8.5f);
        codes[b * g + i] = uint8_t(std::clamp(q, 0.0f, 15.0f));
      }
    }
  }
  PackCodes(KvBits(t), codes, head_dim, row + 2 * ng);
}

}  // namespace

std::string_view KvTypeName(KvType t) { return kNames[size_t(t)]; }

bool ParseKvType(std::string_view name, KvType* out) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) {
      *out = KvType(i);
      return true;
    }
  }
  return false;
}

std::string KvTypeNames() {
  std::string s;
  for (std::string_view n : kNames) {
    if (!s.empty()) s += ", ";
    s += n;
  }
  return s;
}

std::string KvFormatName(const KvFormat& f) {
  if (f.k == f.v) return std::string(KvTypeName(f.k));
  return "k=" + std::string(KvTypeName(f.k)) +
         ",v=" + std::string(KvTypeName(f.v));
}

int KvBits(KvType t) {
  switch (t) {
    case KvType::kF32:
      return 32;
    case KvType::kF16:
    case KvType::kBF16:
      return 16;
    case KvType::kQ8:
      return 8;
    case KvType::kQ4:
    case KvType::kQ4H:
    case KvType::kKivi4:
      return 4;
    case KvType::kKivi2:
      return 2;
  }
  return 0;
}

std::string KvFormatSupports(KvType t, size_t head_dim) {
  if (head_dim == 0) return "head_dim is 0";
  if (KvIsFloat(t)) return "";
  if (head_dim % 8 != 0 || head_dim > 512) {
    return "KV type " + std::string(KvTypeName(t)) +
           " needs head_dim a multiple of 8 and at most 512 (the model's is " +
           std::to_string(head_dim) + ")";
  }
  return "";
}

size_t KvGroupSize(size_t head_dim) {
  return LargestPow2Dividing(head_dim, 32);
}

size_t KvPackStripe(int bits, size_t head_dim) {
  const size_t per_byte = 8 / size_t(bits);
  size_t s = 1;
  while (s * 2 <= 16 && head_dim % (s * 2 * per_byte) == 0) s *= 2;
  return s;
}

size_t KvRowBytes(KvType t, KvSide side, size_t head_dim) {
  switch (t) {
    case KvType::kF32:
      return 4 * head_dim;
    case KvType::kF16:
    case KvType::kBF16:
      return 2 * head_dim;
    case KvType::kQ8:
    case KvType::kQ4:
    case KvType::kQ4H:
      return 2 * NumGroups(head_dim) + PackedBytes(KvBits(t), head_dim);
    case KvType::kKivi2:
    case KvType::kKivi4:
      return (side == KvSide::kK ? 0 : 4 * NumGroups(head_dim)) +
             PackedBytes(KvBits(t), head_dim);
  }
  return 0;
}

size_t KvRunParamBytes(KvType t, KvSide side, size_t head_dim) {
  return KvIsKivi(t) && side == KvSide::kK ? 4 * head_dim : 0;
}

size_t KvRunBytes(KvType t, KvSide side, size_t head_dim, size_t block_tokens) {
  return KvRunParamBytes(t, side, head_dim) +
         block_tokens * KvRowBytes(t, side, head_dim);
}

void KvEncodeRow(KvType t, KvSide side, const float* x, size_t head_dim,
                 uint8_t* row) {
  KV_CHECK(KvFormatSupports(t, head_dim).empty());
  switch (t) {
    case KvType::kF32:
      std::memcpy(row, x, 4 * head_dim);
      return;
    case KvType::kF16:
      for (size_t i = 0; i < head_dim; ++i)
        StoreU16(F32ToF16(x[i]), row + 2 * i);
      return;
    case KvType::kBF16:
      for (size_t i = 0; i < head_dim; ++i) {
        StoreU16(F32ToBF16(x[i]), row + 2 * i);
      }
      return;
    case KvType::kQ8:
    case KvType::kQ4:
      return EncodeSymmetric(t, x, head_dim, row);
    case KvType::kQ4H: {
      float r[512];
      KV_CHECK(head_dim <= 512);
      std::memcpy(r, x, head_dim * sizeof(float));
      KvRotate(r, head_dim);
      return EncodeSymmetric(t, r, head_dim, row);
    }
    case KvType::kKivi2:
    case KvType::kKivi4: {
      KV_CHECK(side == KvSide::kV);
      const size_t g = KvGroupSize(head_dim), ng = head_dim / g;
      uint8_t codes[512];
      KV_CHECK(head_dim <= 512);
      for (size_t b = 0; b < ng; ++b) {
        uint16_t s16, m16;
        QuantizeAsym(x + b * g, g, 1, KvBits(t), &s16, &m16, codes + b * g);
        StoreU16(s16, row + 4 * b);
        StoreU16(m16, row + 4 * b + 2);
      }
      PackCodes(KvBits(t), codes, head_dim, row + 4 * ng);
      return;
    }
  }
}

void KvSealRun(KvType t, KvSide side, const uint16_t* f16_rows, size_t n_tokens,
               size_t head_dim, size_t block_tokens, uint8_t* run) {
  KV_CHECK(KvHasResidual(t) && n_tokens <= block_tokens && n_tokens > 0);
  KV_CHECK(KvFormatSupports(t, head_dim).empty());
  std::memset(run, 0, KvRunBytes(t, side, head_dim, block_tokens));
  const size_t row_bytes = KvRowBytes(t, side, head_dim);
  thread_local std::vector<float> x;
  x.resize(n_tokens * head_dim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = F16ToF32(f16_rows[i]);
  if (side == KvSide::kV) {
    const size_t params = KvRunParamBytes(t, side, head_dim);
    for (size_t tok = 0; tok < n_tokens; ++tok) {
      KvEncodeRow(t, side, &x[tok * head_dim], head_dim,
                  run + params + tok * row_bytes);
    }
    return;
  }
  // Keys: per channel over the tokens.
  thread_local std::vector<uint8_t> codes;
  codes.resize(n_tokens * head_dim);
  uint8_t* rows = run + KvRunParamBytes(t, side, head_dim);
  for (size_t c = 0; c < head_dim; ++c) {
    uint16_t s16, m16;
    QuantizeAsym(&x[c], n_tokens, head_dim, KvBits(t), &s16, &m16, &codes[c]);
    StoreU16(s16, run + 2 * c);
    StoreU16(m16, run + 2 * (head_dim + c));
  }
  for (size_t tok = 0; tok < n_tokens; ++tok) {
    PackCodes(KvBits(t), &codes[tok * head_dim], head_dim,
              rows + tok * row_bytes);
  }
}

void KvDecodeRow(KvType t, KvSide side, const uint8_t* run, size_t token,
                 size_t head_dim, float* out) {
  KV_CHECK(KvFormatSupports(t, head_dim).empty());
  const uint8_t* row = run + KvRunParamBytes(t, side, head_dim) +
                       token * KvRowBytes(t, side, head_dim);
  switch (t) {
    case KvType::kF32:
      std::memcpy(out, row, 4 * head_dim);
      return;
    case KvType::kF16:
      for (size_t i = 0; i < head_dim; ++i)
        out[i] = F16ToF32(LoadU16(row + 2 * i));
      return;
    case KvType::kBF16:
      for (size_t i = 0; i < head_dim; ++i) {
        out[i] = BF16ToF32(LoadU16(row + 2 * i));
      }
      return;
    case KvType::kQ8:
    case KvType::kQ4:
    case KvType::kQ4H: {
      const size_t g = KvGroupSize(head_dim), ng = head_dim / g;
      const uint8_t* packed = row + 2 * ng;
      for (size_t i = 0; i < head_dim; ++i) {
        const float d = F16ToF32(LoadU16(row + 2 * (i / g)));
        if (t == KvType::kQ8) {
          out[i] = d * float(int8_t(packed[i]));
        } else {
          out[i] = d * float(int(CodeAt(4, packed, head_dim, i)) - 8);
        }
      }
      return;
    }
    case KvType::kKivi2:
    case KvType::kKivi4: {
      const int bits = KvBits(t);
      if (side == KvSide::kK) {
        for (size_t i = 0; i < head_dim; ++i) {
          const float s = F16ToF32(LoadU16(run + 2 * i));
          const float m = F16ToF32(LoadU16(run + 2 * (head_dim + i)));
          out[i] = std::fma(s, float(CodeAt(bits, row, head_dim, i)), m);
        }
      } else {
        const size_t g = KvGroupSize(head_dim), ng = head_dim / g;
        for (size_t i = 0; i < head_dim; ++i) {
          const float s = F16ToF32(LoadU16(row + 4 * (i / g)));
          const float m = F16ToF32(LoadU16(row + 4 * (i / g) + 2));
          out[i] =
              std::fma(s, float(CodeAt(bits, row + 4 * ng, head_dim, i)), m);
        }
      }
      return;
    }
  }
}

void KvRotate(float* x, size_t head_dim) {
  const size_t n = LargestPow2Dividing(head_dim, head_dim);
  const float norm = 1.0f / std::sqrt(float(n));
  for (size_t b = 0; b < head_dim; b += n) {
    float* y = x + b;
    for (size_t h = 1; h < n; h *= 2) {
      for (size_t i = 0; i < n; i += 2 * h) {
        for (size_t j = i; j < i + h; ++j) {
          const float a = y[j], c = y[j + h];
          y[j] = a + c;
          y[j + h] = a - c;
        }
      }
    }
    for (size_t i = 0; i < n; ++i) y[i] *= norm;
  }
}

}  // namespace kvstash::kernels
