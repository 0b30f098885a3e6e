#include "engine/local_kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "engine/paged_kv_view.h"
#include "kernels/attention_fast.h"
#include "kernels/dtype.h"
#include "kernels/kv_format.h"
#include "kernels/kv_format_testing.h"

namespace kvstash {
namespace {

using kernels::BlockLayout;
using kernels::KvFormat;
using kernels::KvRun;
using kernels::KvSide;
using kernels::KvType;

constexpr int kLayers = 2, kHeads = 3, kHd = 8, kBt = 16;

using kernels::testing::AllKvFormats;

std::string FormatParamName(const KvFormat& f) {
  return kernels::testing::KvFormatTestName(f);
}

std::vector<KvFormat> ResidualFormats() {
  std::vector<KvFormat> f;
  for (const KvFormat& x : AllKvFormats()) {
    if (kernels::KvHasResidual(x)) f.push_back(x);
  }
  return f;
}

// The value written for (layer, position, head, dim) of K (or V): varied
// reals of magnitude <= 3 (not exact in any type but f32).
float Value(int l, int p, int h, int d, KvSide side) {
  const float s = side == KvSide::kK ? 1.0f : -0.7f;
  return s * (std::sin(0.37f * float(p) + 1.3f * float(d) + 0.11f * float(h)) *
                  (1.0f + 0.5f * float(l)) +
              0.05f * float(d % 3));
}

std::vector<float> Row(int l, int p, KvSide side) {
  std::vector<float> x(size_t(kHeads) * kHd);
  for (int h = 0; h < kHeads; ++h) {
    for (int d = 0; d < kHd; ++d)
      x[size_t(h * kHd + d)] = Value(l, p, h, d, side);
  }
  return x;
}

// One forward pass over [begin, end) as the transformer drives a view:
// BeginWrite, then per layer the Writes and the Seal.
void Pass(KvView& kv, int begin, int end) {
  kv.BeginWrite(begin, end);
  for (int l = 0; l < kLayers; ++l) {
    for (int p = begin; p < end; ++p) {
      const std::vector<float> k = Row(l, p, KvSide::kK);
      const std::vector<float> v = Row(l, p, KvSide::kV);
      kv.Write(l, p, k.data(), v.data());
    }
    kv.Seal(l, begin, end);
  }
}

// Row `token` of a run decoded to f32, in the model's basis.
std::vector<float> Decode(KvType t, KvSide side, const void* run, int token) {
  std::vector<float> x(kHd);
  kernels::KvDecodeRow(t, side, static_cast<const uint8_t*>(run), size_t(token),
                       kHd, x.data());
  if (kernels::KvRotated(t)) kernels::KvRotate(x.data(), kHd);
  return x;
}

// The largest decode error a type allows for values of magnitude <= r.
float Tolerance(KvType t, float r) {
  switch (t) {
    case KvType::kF32:
      return 0.0f;
    case KvType::kF16:
      return r * 1e-3f;
    case KvType::kBF16:
      return r * 8e-3f;
    case KvType::kQ8:
      return r * 0.012f;
    case KvType::kQ4:
      return r * 0.13f;
    case KvType::kQ4H:  // q4 of the rotated head, rotated back
      return r * 0.13f * std::sqrt(float(kHd));
    case KvType::kKivi4:  // asymmetric over a range of up to 2r
      return r * 2.0f / 15.0f * 0.55f + r * 2e-3f;
    case KvType::kKivi2:
      return r * 2.0f / 3.0f * 0.55f + r * 2e-3f;
  }
  return 0.0f;
}

// The bytes a query reads of a run: run params and the first n_tokens rows.
std::vector<uint8_t> RunBytes(const KvRun& run, KvSide side) {
  const KvType t = side == KvSide::kK ? run.k_type : run.v_type;
  const void* base = side == KvSide::kK ? run.k : run.v;
  const size_t n = kernels::KvRunParamBytes(t, side, kHd) +
                   run.n_tokens * kernels::KvRowBytes(t, side, kHd);
  const uint8_t* b = static_cast<const uint8_t*>(base);
  return {b, b + n};
}

// ---------------------------------------------------------------------------
// LocalKvCache in every type.

class LocalKvCacheTest : public ::testing::TestWithParam<KvFormat> {};

INSTANTIATE_TEST_SUITE_P(KvTypes, LocalKvCacheTest,
                         ::testing::ValuesIn(AllKvFormats()),
                         [](const auto& info) {
                           return FormatParamName(info.param);
                         });

TEST_P(LocalKvCacheTest, ReadReturnsOneRunPerBlockOfWhatWasWritten) {
  const KvFormat f = GetParam();
  const int cap = 40;  // 2.5 blocks
  LocalKvCache kv(kLayers, kHeads, kHd, cap, f);
  EXPECT_EQ(kv.capacity(), cap);
  EXPECT_EQ(kv.format(), f);
  EXPECT_EQ(kv.layout().block_tokens, kBt);
  EXPECT_EQ(kv.read_window(), kernels::KvHasResidual(f) ? kBt : 0);
  EXPECT_EQ(kv.bytes_per_position(), kv.layout().bytes_per_token());
  if (f == KvFormat{}) {
    EXPECT_EQ(kv.bytes_per_position(), 2.0 * kLayers * kHeads * kHd * 2);
  }
  Pass(kv, 0, cap);
  std::vector<KvRun> runs;
  for (const int n : {1, 16, 17, 33, 40}) {
    const int own = (n - 1) / kBt;
    for (int l = 0; l < kLayers; ++l) {
      for (int h = 0; h < kHeads; ++h) {
        kv.Read(l, h, n, &runs);
        ASSERT_EQ(runs.size(), size_t(own + 1)) << n;
        for (int i = 0; i <= own; ++i) {
          const KvRun& run = runs[size_t(i)];
          ASSERT_EQ(run.n_tokens, size_t(std::min(kBt, n - i * kBt)));
          for (const KvSide side : {KvSide::kK, KvSide::kV}) {
            const KvType stored = f.type(side);
            const KvType t = side == KvSide::kK ? run.k_type : run.v_type;
            // A KIVI query sees its own block at full precision (f16) and
            // every earlier block quantized.
            EXPECT_EQ(t, kernels::KvHasResidual(stored) && i == own
                             ? KvType::kF16
                             : stored)
                << "n " << n << " block " << i;
            const void* base = side == KvSide::kK ? run.k : run.v;
            float r = 0.0f;
            for (size_t p = 0; p < run.n_tokens; ++p) {
              for (int d = 0; d < kHd; ++d) {
                r = std::max(r,
                             std::fabs(Value(l, i * kBt + int(p), h, d, side)));
              }
            }
            for (size_t p = 0; p < run.n_tokens; ++p) {
              const int pos = i * kBt + int(p);
              const std::vector<float> got = Decode(t, side, base, int(p));
              for (int d = 0; d < kHd; ++d) {
                const float want = Value(l, pos, h, d, side);
                ASSERT_LE(std::fabs(got[size_t(d)] - want), Tolerance(t, r))
                    << kernels::KvTypeName(t) << " layer " << l << " head " << h
                    << " position " << pos << " dim " << d;
                if (t == KvType::kF16) {
                  // Exactly the f16 of the written value.
                  ASSERT_EQ(got[size_t(d)],
                            kernels::F16ToF32(kernels::F32ToF16(want)));
                }
              }
            }
          }
        }
      }
    }
  }
}

// The fused attention kernel over the runs a query reads (quantized blocks,
// and for KIVI the f16 own block after them) equals attention computed in
// double over the rows KvDecodeRow decodes from the same runs.
TEST_P(LocalKvCacheTest, FastAttentionOverReadRunsMatchesDecodedRows) {
  const KvFormat f = GetParam();
  const int cap = 40;
  LocalKvCache kv(kLayers, kHeads, kHd, cap, f);
  Pass(kv, 0, cap);
  constexpr int kNq = 2;
  std::vector<float> q(kNq * kHd), out(kNq * kHd);
  for (int i = 0; i < kNq * kHd; ++i) q[size_t(i)] = std::cos(0.7f * i) * 2.0f;
  const float scale = 1.0f / std::sqrt(float(kHd));
  std::vector<KvRun> runs;
  for (const int n : {1, 15, 16, 17, 31, 33, 40}) {
    for (int l = 0; l < kLayers; ++l) {
      for (int h = 0; h < kHeads; ++h) {
        kv.Read(l, h, n, &runs);
        kernels::AttentionFast(q.data(), kNq, kHd, runs, size_t(n), scale,
                               out.data());
        // Rows in the stored basis, as the kernel sees them.
        std::vector<std::vector<float>> k, v;
        for (const KvRun& run : runs) {
          for (size_t p = 0; p < run.n_tokens; ++p) {
            std::vector<float> x(kHd);
            kernels::KvDecodeRow(run.k_type, KvSide::kK,
                                 static_cast<const uint8_t*>(run.k), p, kHd,
                                 x.data());
            k.push_back(x);
            kernels::KvDecodeRow(run.v_type, KvSide::kV,
                                 static_cast<const uint8_t*>(run.v), p, kHd,
                                 x.data());
            v.push_back(x);
          }
        }
        ASSERT_EQ(k.size(), size_t(n));
        for (int qh = 0; qh < kNq; ++qh) {
          std::vector<double> s(static_cast<size_t>(n));
          double max = -1e300, sum = 0.0, vmax = 0.0;
          for (int t = 0; t < n; ++t) {
            double d = 0.0;
            for (int i = 0; i < kHd; ++i) {
              d += double(q[size_t(qh * kHd + i)]) * k[size_t(t)][size_t(i)];
              vmax = std::max(vmax, std::fabs(double(v[size_t(t)][size_t(i)])));
            }
            s[size_t(t)] = d * scale;
            max = std::max(max, s[size_t(t)]);
          }
          for (double& e : s) sum += (e = std::exp(e - max));
          for (int i = 0; i < kHd; ++i) {
            double want = 0.0;
            for (int t = 0; t < n; ++t) {
              want += s[size_t(t)] / sum * v[size_t(t)][size_t(i)];
            }
            ASSERT_NEAR(out[size_t(qh * kHd + i)], want, 1e-5 * vmax)
                << "n " << n << " layer " << l << " head " << h << " q " << qh
                << " dim " << i;
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Chunking invariance through PagedKvView: the same positions written one
// token per pass, in uneven chunks, or in one pass give the same block bytes
// and the same runs for every query.

// A sequence's view over its own arena (block table reversed, so blocks are
// not in position order) and residual.
struct Paged {
  BlockLayout layout;
  std::vector<uint8_t> arena;
  std::vector<int32_t> table;
  KvResidual residual;
  std::unique_ptr<PagedKvView> view;

  Paged(const KvFormat& f, int n_blocks)
      : layout{kLayers, kHeads, kHd, kBt, f},
        arena(size_t(n_blocks + 1) * layout.block_bytes(), 0xcd) {
    for (int i = 0; i < n_blocks; ++i) table.push_back(n_blocks - i);
    view =
        std::make_unique<PagedKvView>(layout, arena.data(), table, &residual);
  }
  std::vector<uint8_t> BlockBytes(int index) const {
    const uint8_t* b =
        arena.data() + size_t(table[size_t(index)]) * layout.block_bytes();
    return {b, b + layout.block_bytes()};
  }
};

// (layer, head, n) -> the K and V bytes of every run the query reads.
using Reads = std::map<std::tuple<int, int, int>, std::vector<uint8_t>>;

// Writes [0, end) in passes split at `cuts`; after each pass, records what
// each query of the pass reads.
Reads WriteInPasses(Paged& s, const std::vector<int>& cuts, int end) {
  Reads reads;
  std::vector<KvRun> runs;
  int begin = 0;
  std::vector<int> stops = cuts;
  stops.push_back(end);
  for (const int stop : stops) {
    if (stop <= begin) continue;
    Pass(*s.view, begin, stop);
    for (int n = begin + 1; n <= stop; ++n) {
      for (int l = 0; l < kLayers; ++l) {
        for (int h = 0; h < kHeads; ++h) {
          s.view->Read(l, h, n, &runs);
          std::vector<uint8_t>& bytes = reads[{l, h, n}];
          for (const KvRun& run : runs) {
            for (const KvSide side : {KvSide::kK, KvSide::kV}) {
              const std::vector<uint8_t> b = RunBytes(run, side);
              bytes.insert(bytes.end(), b.begin(), b.end());
              bytes.push_back(
                  uint8_t(side == KvSide::kK ? run.k_type : run.v_type));
            }
          }
        }
      }
    }
    begin = stop;
  }
  return reads;
}

class PagedKvViewTest : public ::testing::TestWithParam<KvFormat> {};

INSTANTIATE_TEST_SUITE_P(KvTypes, PagedKvViewTest,
                         ::testing::ValuesIn(AllKvFormats()),
                         [](const auto& info) {
                           return FormatParamName(info.param);
                         });

TEST_P(PagedKvViewTest, ChunkingDoesNotChangeBlocksOrReads) {
  const KvFormat f = GetParam();
  constexpr int kBlocks = 4, kEnd = 56;  // 3.5 blocks
  Paged whole(f, kBlocks);
  const Reads want = WriteInPasses(whole, {}, kEnd);
  std::vector<int> one_by_one;
  for (int p = 1; p < kEnd; ++p) one_by_one.push_back(p);
  const std::vector<std::vector<int>> schedules = {
      one_by_one,
      {5, 16, 17, 40, 41},    // a partial block carried over three passes
      {3, 35},                // a pass spanning two block boundaries
      {16, 32, 48},           // block-aligned passes
      {7, 9, 10, 29, 31, 50}  // uneven
  };
  for (const std::vector<int>& cuts : schedules) {
    SCOPED_TRACE("cuts at " + ::testing::PrintToString(cuts));
    Paged chunked(f, kBlocks);
    const Reads got = WriteInPasses(chunked, cuts, kEnd);
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [key, bytes] : want) {
      const auto& [l, h, n] = key;
      ASSERT_EQ(got.at(key), bytes)
          << "layer " << l << " head " << h << " query at " << n - 1;
    }
    // Full blocks are sealed to the same bytes (the partial last block is
    // not compared: its unwritten rows are whatever the arena held, and a
    // residual type keeps it outside the block until it is full).
    for (int i = 0; i < kEnd / kBt; ++i) {
      EXPECT_EQ(chunked.BlockBytes(i), whole.BlockBytes(i)) << "block " << i;
    }
  }
}

// Residual (KIVI) types only.
class ResidualKvViewTest : public ::testing::TestWithParam<KvFormat> {};

INSTANTIATE_TEST_SUITE_P(KiviTypes, ResidualKvViewTest,
                         ::testing::ValuesIn(ResidualFormats()),
                         [](const auto& info) {
                           return FormatParamName(info.param);
                         });

// A query reads the f16 residual for its own block and the sealed, quantized
// blocks of the pool before it; a sealed block holds what KvSealRun makes of
// the f16 rows.
TEST_P(ResidualKvViewTest, OwnBlockIsTheResidualEarlierBlocksAreSealed) {
  const KvFormat f = GetParam();
  Paged s(f, 3);
  EXPECT_EQ(s.view->read_window(), kBt);
  Pass(*s.view, 0, 40);
  std::vector<KvRun> runs;
  for (int l = 0; l < kLayers; ++l) {
    for (int h = 0; h < kHeads; ++h) {
      s.view->Read(l, h, 40, &runs);
      ASSERT_EQ(runs.size(), 3u);
      for (const KvSide side : {KvSide::kK, KvSide::kV}) {
        const KvType t = f.type(side);
        const size_t run_offset = s.layout.RunOffset(l, side, h);
        for (int i = 0; i < 3; ++i) {
          const KvRun& run = runs[size_t(i)];
          const void* got = side == KvSide::kK ? run.k : run.v;
          const KvType got_type = side == KvSide::kK ? run.k_type : run.v_type;
          const uint8_t* in_block =
              s.arena.data() +
              size_t(s.table[size_t(i)]) * s.layout.block_bytes() + run_offset;
          if (i < 2 || !kernels::KvHasResidual(t)) {
            EXPECT_EQ(got, in_block) << "block " << i;
            EXPECT_EQ(got_type, t);
          } else {
            // The own block of a residual side: f16, outside the pool.
            EXPECT_EQ(got_type, KvType::kF16);
            EXPECT_NE(got, in_block);
            const uint8_t* g = static_cast<const uint8_t*>(got);
            EXPECT_FALSE(g >= s.arena.data() &&
                         g < s.arena.data() + s.arena.size());
          }
          if (i == 2 || !kernels::KvHasResidual(t)) continue;
          // The sealed run equals KvSealRun of the f16 rows.
          std::vector<uint16_t> f16(size_t(kBt) * kHd);
          for (int p = 0; p < kBt; ++p) {
            for (int d = 0; d < kHd; ++d) {
              f16[size_t(p * kHd + d)] =
                  kernels::F32ToF16(Value(l, i * kBt + p, h, d, side));
            }
          }
          std::vector<uint8_t> sealed(kernels::KvRunBytes(t, side, kHd, kBt));
          kernels::KvSealRun(t, side, f16.data(), kBt, kHd, kBt, sealed.data());
          EXPECT_EQ(std::memcmp(got, sealed.data(), sealed.size()), 0)
              << "layer " << l << " head " << h << " block " << i;
        }
      }
    }
  }
  // A query in block 1 of the same pass sees block 1 at full precision.
  s.view->Read(0, 0, 20, &runs);
  ASSERT_EQ(runs.size(), 2u);
  if (kernels::KvHasResidual(f.k)) {
    EXPECT_EQ(runs[0].k_type, f.k);
    EXPECT_EQ(runs[1].k_type, KvType::kF16);
    EXPECT_EQ(
        Decode(KvType::kF16, KvSide::kK, runs[1].k, 3)[5],
        kernels::F16ToF32(kernels::F32ToF16(Value(0, 19, 0, 5, KvSide::kK))));
  }
}

// A block filled over several passes keeps the rows of the earlier passes:
// BeginWrite carries the residual of a partial block forward.
TEST_P(ResidualKvViewTest, BeginWriteKeepsAPartialBlockAcrossPasses) {
  const KvFormat f = GetParam();
  Paged s(f, 3);
  std::vector<KvRun> runs;
  // Passes [0, 5), [5, 9), [9, 10): block 0 is partial throughout.
  for (const auto& [begin, end] :
       std::vector<std::pair<int, int>>{{0, 5}, {5, 9}, {9, 10}, {10, 20}}) {
    Pass(*s.view, begin, end);
    s.view->Read(1, 2, end, &runs);
    const int own = (end - 1) / kBt;
    ASSERT_EQ(runs.size(), size_t(own + 1));
    for (const KvSide side : {KvSide::kK, KvSide::kV}) {
      if (!kernels::KvHasResidual(f.type(side))) continue;
      const KvRun& run = runs[size_t(own)];
      ASSERT_EQ(side == KvSide::kK ? run.k_type : run.v_type, KvType::kF16);
      for (int p = 0; p < int(run.n_tokens); ++p) {
        const std::vector<float> got =
            Decode(KvType::kF16, side, side == KvSide::kK ? run.k : run.v, p);
        for (int d = 0; d < kHd; ++d) {
          ASSERT_EQ(got[size_t(d)], kernels::F16ToF32(kernels::F32ToF16(
                                        Value(1, own * kBt + p, 2, d, side))))
              << "after the pass [" << begin << ", " << end << "): position "
              << own * kBt + p << " dim " << d;
        }
      }
    }
  }
  // Block 0 was sealed by the pass that filled it, from all 16 rows.
  Paged whole(f, 3);
  Pass(*whole.view, 0, 20);
  EXPECT_EQ(s.BlockBytes(0), whole.BlockBytes(0));
}

}  // namespace
}  // namespace kvstash
