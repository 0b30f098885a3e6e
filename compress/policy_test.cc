// Every policy on the real stories260K model (5 layers, 4 kv heads, head_dim
// 8): a 128-token prefill observed and compressed in a LocalKvCache; which
// rows each (layer, kv head) kept is read back from the compacted keys
// (each kept row is the bit-exact key of one original position).
#include "compress/policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/file.h"
#include "engine/eval.h"
#include "engine/generate.h"
#include "engine/local_kv_cache.h"
#include "engine/transformer.h"
#include "model/model.h"
#include "tests/testing/shared_data.h"

namespace kvstash::compress {
namespace {

using kernels::KvFormat;
using kernels::KvSide;
using kernels::KvType;

constexpr int kPrompt = 128;

class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m =
        Model::Load(testing::SharedPath("models/stories260K/stories260K.bin"),
                    testing::SharedPath("models/stories260K/tok512.bin"));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    model_ = std::move(m).value();
    auto text = ReadFile(testing::SharedPath("data/tinystories_val.txt"));
    ASSERT_TRUE(text.ok());
    tokens_ = model_->tokenizer().Encode(text->substr(0, 4000), true);
    ASSERT_GE(tokens_.size(), size_t(2 * kPrompt));
    tokens_.resize(2 * kPrompt);
    transformer_ = std::make_unique<Transformer>(*model_);
  }

  const ModelConfig& config() const { return model_->config(); }
  int pairs() const { return config().n_layers * config().n_kv_heads; }

  // Prefills kPrompt tokens into `kv` with `compressor` observing.
  void Prefill(LocalKvCache& kv, KvCompressor* compressor) {
    std::vector<float> logits(size_t(config().vocab_size));
    ASSERT_TRUE(transformer_
                    ->Forward(std::span(tokens_).first(kPrompt), 0, kv, false,
                              logits.data(),
                              compressor ? compressor->observer() : nullptr)
                    .ok());
  }

  // The keys of (pair) for a query at kPrompt - 1, [rows][head_dim].
  std::vector<float> Keys(const KvView& kv, int pair) {
    const int hd = config().head_dim, heads = config().n_kv_heads;
    std::vector<kernels::KvRun> runs;
    kv.Read(pair / heads, pair % heads, kPrompt, &runs);
    std::vector<float> out;
    for (const kernels::KvRun& run : runs) {
      for (size_t t = 0; t < run.n_tokens; ++t) {
        out.resize(out.size() + size_t(hd));
        kernels::KvDecodeRow(run.k_type, KvSide::kK,
                             static_cast<const uint8_t*>(run.k), t, size_t(hd),
                             &out[out.size() - size_t(hd)]);
      }
    }
    return out;
  }

  // Per pair, the original positions the compacted cache kept.
  std::vector<std::vector<int>> KeptPositions(const LocalKvCache& before,
                                              const LocalKvCache& after) {
    const size_t hd = size_t(config().head_dim);
    std::vector<std::vector<int>> kept(static_cast<size_t>(pairs()));
    for (int pair = 0; pair < pairs(); ++pair) {
      const std::vector<float> all = Keys(before, pair);
      const std::vector<float> rows = Keys(after, pair);
      size_t next = 0;  // kept rows are in position order
      for (size_t r = 0; r < rows.size() / hd; ++r) {
        while (next < all.size() / hd &&
               std::memcmp(&all[next * hd], &rows[r * hd], hd * 4) != 0) {
          ++next;
        }
        EXPECT_LT(next, all.size() / hd)
            << "row " << r << " of pair " << pair << " is no original key";
        kept[size_t(pair)].push_back(int(next++));
      }
    }
    return kept;
  }

  std::unique_ptr<Model> model_;
  std::vector<int32_t> tokens_;
  std::unique_ptr<Transformer> transformer_;
};

int Uniform(double ratio) {
  return std::max(1, int(std::lround((1 - ratio) * kPrompt)));
}

TEST_F(PolicyTest, EveryPolicyKeepsItsBudgetAndItsPromises) {
  const int window = kPrompt / 16;
  for (const PolicyInfo& info : Policies()) {
    for (double ratio : {0.25, 0.5, 0.875}) {
      SCOPED_TRACE(std::string(info.name) + " at " + std::to_string(ratio));
      auto compressor =
          MakeCompressor(config(), {std::string(info.name), ratio});
      ASSERT_TRUE(compressor.ok());
      LocalKvCache full(config().n_layers, config().n_kv_heads,
                        config().head_dim, kPrompt + 16);
      LocalKvCache kv(config().n_layers, config().n_kv_heads, config().head_dim,
                      kPrompt + 16);
      Prefill(full, nullptr);
      Prefill(kv, compressor->get());
      ASSERT_TRUE((*compressor)->Compress(kv, kPrompt).ok());
      const auto kept = KeptPositions(full, kv);
      int total = 0, most = 0;
      const std::string name(info.name);
      for (int pair = 0; pair < pairs(); ++pair) {
        const std::vector<int>& k = kept[size_t(pair)];
        total += int(k.size());
        most = std::max(most, int(k.size()));
        EXPECT_EQ(kv.Rows(pair / config().n_kv_heads,
                          pair % config().n_kv_heads, kPrompt),
                  int(k.size()));
        const bool budgeted =
            name == "pyramid" || name == "cake" || name == "adakv";
        if (!budgeted) {
          EXPECT_EQ(int(k.size()), Uniform(ratio)) << "pair " << pair;
        }
        auto holds = [&](int pos) {
          return std::find(k.begin(), k.end(), pos) != k.end();
        };
        if (name == "streaming" || name == "expected" || name == "lacache") {
          for (int s = 0; s < 4; ++s) EXPECT_TRUE(holds(s)) << "sink " << s;
        }
        if (name == "streaming") {
          for (int p = kPrompt - (Uniform(ratio) - 4); p < kPrompt; ++p) {
            EXPECT_TRUE(holds(p)) << p;
          }
        }
        if (name == "snapkv" || name == "pyramid" || name == "cake" ||
            name == "adakv") {
          for (int p = kPrompt - window; p < kPrompt; ++p) {
            EXPECT_TRUE(holds(p)) << "window position " << p;
          }
        }
        if (name == "h2o") {
          for (int p = kPrompt - Uniform(ratio) / 2; p < kPrompt; ++p) {
            EXPECT_TRUE(holds(p)) << "recent position " << p;
          }
        }
      }
      // A prefix_only policy keeps MaxRowsKept in every pair: what a
      // cache that reuses its rows relies on.
      EXPECT_EQ((*compressor)->prefix_only(), info.query_agnostic);
      if (info.query_agnostic) {
        EXPECT_EQ(most * pairs(), total);
        EXPECT_EQ(most, (*compressor)->MaxRowsKept(kPrompt));
      }
      // Budgets move across layers and heads, never in total.
      EXPECT_EQ(total, pairs() * Uniform(ratio));
      EXPECT_EQ(kv.BlocksHeld(kPrompt), (most + 15) / 16);
    }
  }
}

TEST_F(PolicyTest, BudgetedPoliciesMoveBudgetsAcrossLayersOrHeads) {
  for (const char* name : {"pyramid", "cake", "adakv"}) {
    SCOPED_TRACE(name);
    auto compressor = MakeCompressor(config(), {name, 0.5});
    ASSERT_TRUE(compressor.ok());
    LocalKvCache kv(config().n_layers, config().n_kv_heads, config().head_dim,
                    kPrompt);
    Prefill(kv, compressor->get());
    ASSERT_TRUE((*compressor)->Compress(kv, kPrompt).ok());
    std::map<int, int> counts;
    for (int pair = 0; pair < pairs(); ++pair) {
      ++counts[kv.Rows(pair / config().n_kv_heads, pair % config().n_kv_heads,
                       kPrompt)];
    }
    EXPECT_GT(counts.size(), 1u) << "every pair kept the same count";
  }
  // PyramidKV: the first layer keeps more than the last.
  auto pyramid = MakeCompressor(config(), {"pyramid", 0.5});
  LocalKvCache kv(config().n_layers, config().n_kv_heads, config().head_dim,
                  kPrompt);
  Prefill(kv, pyramid->get());
  ASSERT_TRUE((*pyramid)->Compress(kv, kPrompt).ok());
  EXPECT_GT(kv.Rows(0, 0, kPrompt), kv.Rows(config().n_layers - 1, 0, kPrompt));
}

TEST_F(PolicyTest, LadderMovesTheKeptSpanTowardsNewerTokensWithDepth) {
  auto compressor = MakeCompressor(config(), {"lacache", 0.75});
  LocalKvCache full(config().n_layers, config().n_kv_heads, config().head_dim,
                    kPrompt);
  LocalKvCache kv(config().n_layers, config().n_kv_heads, config().head_dim,
                  kPrompt);
  Prefill(full, nullptr);
  Prefill(kv, compressor->get());
  ASSERT_TRUE((*compressor)->Compress(kv, kPrompt).ok());
  const auto kept = KeptPositions(full, kv);
  // Row 4 (after the sinks) of the first and of the last layer.
  const int first = kept[0][4];
  const int last =
      kept[size_t((config().n_layers - 1) * config().n_kv_heads)][4];
  EXPECT_LT(first, last);
}

TEST_F(PolicyTest, RatioZeroChangesNothing) {
  for (const PolicyInfo& info : Policies()) {
    SCOPED_TRACE(info.name);
    auto compressor = MakeCompressor(config(), {std::string(info.name), 0.0});
    ASSERT_TRUE(compressor.ok());
    GenerateOptions plain;
    plain.n_predict = 24;
    plain.stop_at_eos = false;
    plain.sampling.temperature = 0;
    GenerateOptions compressed = plain;
    compressed.compressor = compressor->get();
    const std::span prompt = std::span(tokens_).first(64);
    auto a = Generate(*transformer_, prompt, plain, nullptr);
    auto b = Generate(*transformer_, prompt, compressed, nullptr);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->gen_ids, b->gen_ids);
  }
}

TEST_F(PolicyTest, CompressedGenerationFreesBlocksAndStillSpeaks) {
  auto compressor = MakeCompressor(config(), {"snapkv", 0.75});
  ASSERT_TRUE(compressor.ok());
  GenerateOptions o;
  o.n_predict = 32;
  o.stop_at_eos = false;
  o.sampling.temperature = 0;
  o.compressor = compressor->get();
  auto r =
      Generate(*transformer_, std::span(tokens_).first(kPrompt), o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->gen_ids.size(), 32u);
  // 32 rows kept of the prompt, 31 generated tokens written.
  EXPECT_EQ(r->kv_blocks_held, (kPrompt / 4 + 31 + 15) / 16);
}

// Every N positions the cache goes back to the first compaction's budget,
// per pair (budgeted policies too), keeping what each policy promises.
TEST_F(PolicyTest, RecompressionKeepsAFixedBudget) {
  for (const char* name : {"streaming", "h2o", "snapkv", "adakv"}) {
    SCOPED_TRACE(name);
    auto compressor = MakeCompressor(config(), {name, 0.5, false, 16});
    ASSERT_TRUE(compressor.ok());
    EXPECT_EQ((*compressor)->every(), 16);
    LocalKvCache kv(config().n_layers, config().n_kv_heads, config().head_dim,
                    2 * kPrompt);
    Prefill(kv, compressor->get());
    ASSERT_TRUE((*compressor)->Compress(kv, kPrompt).ok());
    const std::vector<int32_t> budgets = kv.compaction().kept;
    EXPECT_FALSE(RecompressDue(**compressor, kv.compaction(), kPrompt + 15));
    EXPECT_TRUE(RecompressDue(**compressor, kv.compaction(), kPrompt + 16));
    // 16 more positions, observed, then back to the budget.
    std::vector<float> logits(size_t(config().vocab_size));
    ASSERT_TRUE(transformer_
                    ->Forward(std::span(tokens_).subspan(kPrompt, 16), kPrompt,
                              kv, false, logits.data(),
                              (*compressor)->observer())
                    .ok());
    ASSERT_TRUE((*compressor)->Recompress(kv, kPrompt + 16, budgets).ok());
    EXPECT_EQ(kv.compaction().end, kPrompt + 16);
    EXPECT_EQ(kv.compaction().kept, budgets);
    if (std::string(name) == "streaming") {
      // Sinks and the newest rows: the 16 new positions are all kept.
      for (int pair = 0; pair < pairs(); ++pair) {
        EXPECT_EQ(kv.Rows(pair / config().n_kv_heads,
                          pair % config().n_kv_heads, kPrompt + 16),
                  budgets[size_t(pair)]);
      }
    }
    EXPECT_FALSE(RecompressDue(**compressor, kv.compaction(), kPrompt + 16));
    EXPECT_EQ((*compressor)
                  ->Recompress(kv, kPrompt + 16, std::vector<int32_t>(3, 1))
                  .code(),
              StatusCode::kInvalidArgument);
  }
}

// Generation with a fixed budget holds at most budget + N rows per pair,
// however long it runs; without `every` the cache grows with the output.
TEST_F(PolicyTest, FixedBudgetGenerationHoldsItsBlocks) {
  auto once = MakeCompressor(config(), {"h2o", 0.75});
  auto every = MakeCompressor(config(), {"h2o", 0.75, false, 16});
  GenerateOptions o;
  o.n_predict = 100;
  o.stop_at_eos = false;
  o.sampling.temperature = 0;
  o.compressor = once->get();
  auto grows =
      Generate(*transformer_, std::span(tokens_).first(kPrompt), o, nullptr);
  o.compressor = every->get();
  auto fixed =
      Generate(*transformer_, std::span(tokens_).first(kPrompt), o, nullptr);
  ASSERT_TRUE(grows.ok() && fixed.ok());
  EXPECT_EQ(grows->recompressions, 0);
  EXPECT_EQ(grows->kv_blocks_held, (32 + 99 + 15) / 16);  // 9
  // 99 decode positions after the prompt: compressed before positions
  // 144, 160, ... 224 (6 times); at most 32 + 16 rows, 3 blocks.
  EXPECT_EQ(fixed->recompressions, 6);
  EXPECT_EQ(fixed->kv_blocks_held, 3);  // 32 + 3 rows at the end
  EXPECT_EQ(fixed->gen_ids.size(), 100u);
}

TEST_F(PolicyTest, MergeFoldsEvictedRowsIntoKeptOnes) {
  auto plain = MakeCompressor(config(), {"knorm", 0.5});
  auto merging = MakeCompressor(config(), {"knorm", 0.5, /*merge=*/true});
  LocalKvCache a(config().n_layers, config().n_kv_heads, config().head_dim,
                 kPrompt);
  LocalKvCache b(config().n_layers, config().n_kv_heads, config().head_dim,
                 kPrompt);
  Prefill(a, plain->get());
  Prefill(b, merging->get());
  ASSERT_TRUE((*plain)->Compress(a, kPrompt).ok());
  ASSERT_TRUE((*merging)->Compress(b, kPrompt).ok());
  int changed = 0;
  for (int pair = 0; pair < pairs(); ++pair) {
    const std::vector<float> ka = Keys(a, pair), kb = Keys(b, pair);
    ASSERT_EQ(ka.size(), kb.size());  // same rows kept
    for (size_t i = 0; i < ka.size(); ++i) {
      ASSERT_TRUE(std::isfinite(kb[i]));
      changed += ka[i] != kb[i];
    }
  }
  EXPECT_GT(changed, 0);
}

// Evaluate with a compressor: ctx 64, compressed at 32, 4 windows.
TEST_F(PolicyTest, EvalScoresWhatEvictionCosts) {
  auto text = ReadFile(testing::SharedPath("data/tinystories_val.txt"));
  ASSERT_TRUE(text.ok());
  const std::vector<int32_t> ids =
      model_->tokenizer().Encode(text->substr(0, 8000), false);
  EvalOptions o;
  o.ctx = 64;
  o.windows = 4;
  o.gen_tokens = 0;
  auto none = MakeCompressor(config(), {"snapkv", 0.0});
  o.compressor = none->get();
  auto same = Evaluate(*transformer_, ids, o, nullptr);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_EQ(same->kl_mean, 0.0);
  EXPECT_EQ(same->top1_agreement, 1.0);
  EXPECT_EQ(same->kept_fraction, 1.0);
  EXPECT_EQ(same->tokens, 4 * (64 - 32 - 1));  // rows 32 .. 62 scored
  EXPECT_EQ(same->copy_tokens, 4 * (31 - 1));  // the copy holds 31 tokens
  EXPECT_EQ(same->baseline.copy_accuracy, same->candidate.copy_accuracy);

  auto half = MakeCompressor(config(), {"snapkv", 0.5});
  o.compressor = half->get();
  auto r = Evaluate(*transformer_, ids, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kept_fraction, 0.5);
  EXPECT_GT(r->kl_mean, 0.0);
  EXPECT_LT(r->top1_agreement, 1.0);
  EXPECT_GT(r->top1_agreement, 0.8);
  EXPECT_GT(r->candidate.copy_accuracy, 0.0);

  o.compress_at = 63;
  EXPECT_EQ(Evaluate(*transformer_, ids, o, nullptr).status().code(),
            StatusCode::kInvalidArgument);
  o.compress_at = 0;
  o.candidate_blocks = [](std::span<uint8_t* const>) -> Result<size_t> {
    return size_t(0);
  };
  EXPECT_EQ(Evaluate(*transformer_, ids, o, nullptr).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(PolicyOptionsTest, BadInputNamesTheField) {
  auto unknown = CheckPolicyOptions({"nope", 0.5});
  EXPECT_FALSE(unknown.ok());
  EXPECT_NE(unknown.message().find("policy"), std::string::npos);
  for (double ratio : {-0.1, 1.0, 1.5, std::nan("")}) {
    auto bad = CheckPolicyOptions({"snapkv", ratio});
    EXPECT_FALSE(bad.ok());
    EXPECT_NE(bad.message().find("ratio"), std::string::npos);
  }
  EXPECT_TRUE(CheckPolicyOptions({"snapkv", 0.0}).ok());
  auto every = CheckPolicyOptions({"snapkv", 0.5, false, -1});
  EXPECT_FALSE(every.ok());
  EXPECT_EQ(every.message().rfind("every:", 0), 0u) << every.message();
}

// Prefix-only policies compress the document before the last token (or the
// caller's context boundary); the others the whole prompt.
TEST_F(PolicyTest, CompressionPointAndNamespace) {
  auto knorm = MakeCompressor(config(), {"knorm", 0.5});
  auto snapkv = MakeCompressor(config(), {"snapkv", 0.5});
  EXPECT_EQ(CompressionPoint(**knorm, 100), 99);
  EXPECT_EQ(CompressionPoint(**knorm, 100, 60), 60);
  EXPECT_EQ(CompressionPoint(**knorm, 100, 100), 99);
  EXPECT_EQ(CompressionPoint(**knorm, 1), 1);
  EXPECT_EQ(CompressionPoint(**snapkv, 100, 60), 100);

  EXPECT_EQ(PolicyNamespace({"knorm", 0.5}), "policy=knorm;ratio=0.5;merge=0");
  EXPECT_EQ(PolicyNamespace({"expected", 0.1, true}),
            "policy=expected;ratio=0.1;merge=1");
  EXPECT_NE(PolicyNamespace({"knorm", 0.5}),
            PolicyNamespace({"knorm", 0.5000000000000001}));
}

TEST_F(PolicyTest, KiviCachesAreRefused) {
  auto compressor = MakeCompressor(config(), {"knorm", 0.5});
  LocalKvCache kv(config().n_layers, config().n_kv_heads, config().head_dim,
                  kPrompt, KvFormat{KvType::kKivi4, KvType::kKivi4});
  Prefill(kv, compressor->get());
  const Status s = (*compressor)->Compress(kv, kPrompt);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("KIVI"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace kvstash::compress
