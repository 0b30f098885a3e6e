// Evaluate on the real stories260K model (head_dim 8) and the TinyStories
// validation text from ../shared.
#include "engine/eval.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "base/file.h"
#include "engine/generate.h"
#include "model/model.h"
#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

using kernels::KvFormat;
using kernels::KvType;

std::unique_ptr<Model> LoadStories() {
  auto m =
      Model::Load(testing::SharedPath("models/stories260K/stories260K.bin"),
                  testing::SharedPath("models/stories260K/tok512.bin"));
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? std::move(m).value() : nullptr;
}

// Tokens (no BOS) of a prefix of the validation text: about 4 characters a
// token, so 8000 characters hold well over 8 windows of 64.
std::vector<int32_t> TextTokens(const Model& model) {
  auto text = ReadFile(testing::SharedPath("data/tinystories_val.txt"));
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  if (!text.ok()) return {};
  return model.tokenizer().Encode(text->substr(0, 8000), /*add_bos=*/false);
}

// ctx 64, 4 windows, 2 prompts (BOS + 8 text tokens) x 16 greedy tokens.
EvalOptions SmallOptions(const Model& model, const std::vector<int32_t>& text) {
  EvalOptions o;
  o.ctx = 64;
  o.windows = 4;
  o.gen_tokens = 16;
  const int32_t bos = model.tokenizer().bos();
  for (size_t start : {size_t(0), size_t(300)}) {
    std::vector<int32_t> p = {bos};
    p.insert(p.end(), text.begin() + start, text.begin() + start + 8);
    o.gen_prompts.push_back(p);
  }
  return o;
}

class EvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = LoadStories();
    ASSERT_NE(model_, nullptr);
    text_ = TextTokens(*model_);
    ASSERT_GE(text_.size(), 8u * 63u);
  }

  std::unique_ptr<Model> model_;
  std::vector<int32_t> text_;
};

TEST_F(EvalTest, SameFormatGivesExactlyNoDifference) {
  Transformer tf(*model_);
  EvalOptions o = SmallOptions(*model_, text_);
  std::vector<std::string> lines;
  auto r =
      Evaluate(tf, text_, o, [&](const std::string& l) { lines.push_back(l); });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->windows, 4);
  EXPECT_EQ(r->tokens, 4 * 63);
  EXPECT_EQ(r->ppl_ratio, 1.0);
  EXPECT_EQ(r->baseline.nll, r->candidate.nll);
  EXPECT_EQ(r->baseline.top1, r->candidate.top1);
  EXPECT_EQ(r->kl_mean, 0.0);
  EXPECT_EQ(r->kl_p99, 0.0);
  EXPECT_EQ(r->kl_max, 0.0);
  EXPECT_EQ(r->top1_agreement, 1.0);
  EXPECT_EQ(r->rms_dp, 0.0);
  EXPECT_EQ(r->gen_prompts, 2);
  EXPECT_EQ(r->greedy_identical, 1.0);
  EXPECT_EQ(r->first_divergence, std::vector<int>({16, 16}));
  EXPECT_EQ(r->kv_bytes_ratio, 1.0);
  // f16 keys and values: 2 bytes per element.
  const ModelConfig& c = model_->config();
  EXPECT_EQ(r->baseline.kv_bytes_per_token,
            double(c.n_layers) * c.n_kv_heads * c.head_dim * 2 * 2);
  EXPECT_GT(r->baseline.ppl, 1.0);
  EXPECT_EQ(lines, std::vector<std::string>({"window 1/4", "window 2/4",
                                             "window 3/4", "window 4/4",
                                             "prompt 1/2", "prompt 2/2"}));
}

TEST_F(EvalTest, BaselineScoresMatchPerplexity) {
  Transformer tf(*model_);
  EvalOptions o = SmallOptions(*model_, text_);
  o.gen_prompts.clear();
  auto r = Evaluate(tf, text_, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto p = Perplexity(tf, text_, o.ctx, o.windows, o.baseline, nullptr);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(r->tokens, p->tokens);
  EXPECT_EQ(r->windows, p->windows);
  EXPECT_NEAR(r->baseline.nll, p->nll, 1e-5);  // float vs double softmax
  EXPECT_EQ(r->baseline.top1, p->top1);
  EXPECT_EQ(r->gen_prompts, 0);
  EXPECT_TRUE(r->first_divergence.empty());
}

TEST_F(EvalTest, Q8IsCloseToF16ButMeasurablyDifferent) {
  Transformer tf(*model_);
  EvalOptions o = SmallOptions(*model_, text_);
  o.windows = 8;
  o.candidate = {KvType::kQ8, KvType::kQ8};
  auto r = Evaluate(tf, text_, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->tokens, 8 * 63);
  EXPECT_GE(r->ppl_ratio, 0.99);
  EXPECT_LE(r->ppl_ratio, 1.02);
  EXPECT_GE(r->top1_agreement, 0.9);
  EXPECT_GT(r->kl_mean, 0.0);
  EXPECT_LE(r->kl_mean, r->kl_max);
  EXPECT_LE(r->kl_p99, r->kl_max);
  EXPECT_GT(r->rms_dp, 0.0);
  EXPECT_LT(r->kv_bytes_ratio, 1.0);
  // head_dim 8 is one q8 group: an f16 scale + 8 bytes per row, against 16.
  EXPECT_DOUBLE_EQ(r->kv_bytes_ratio, 10.0 / 16.0);
  EXPECT_EQ(r->first_divergence.size(), 2u);
  for (int d : r->first_divergence) {
    EXPECT_GE(d, 0);
    EXPECT_LE(d, 16);
  }
  RecordProperty(
      "summary",
      "ppl_ratio=" + std::to_string(r->ppl_ratio) + " kl_mean=" +
          std::to_string(r->kl_mean) + " kl_p99=" + std::to_string(r->kl_p99) +
          " kl_max=" + std::to_string(r->kl_max) +
          " top1_agreement=" + std::to_string(r->top1_agreement) +
          " rms_dp=" + std::to_string(r->rms_dp) +
          " greedy_identical=" + std::to_string(r->greedy_identical));
}

// A block transform that gives every block back unchanged changes nothing:
// the candidate's windows run in passes of one block and its greedy prompts
// restore their prefix first, and both give the bits of one pass (the
// forward pass is chunking-invariant). Every full block passes through it
// once per window and once per prompt prefix.
TEST_F(EvalTest, IdentityBlockTransformChangesNothing) {
  Transformer tf(*model_);
  EvalOptions o = SmallOptions(*model_, text_);
  for (std::vector<int32_t>& p : o.gen_prompts) {
    p.insert(p.end(), text_.begin() + 1000, text_.begin() + 1030);  // 39
  }
  int calls = 0;
  o.candidate_blocks = [&](std::span<uint8_t* const> blocks) -> Result<size_t> {
    ++calls;
    return blocks.size() * 1000;
  };
  auto r = Evaluate(tf, text_, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->ppl_ratio, 1.0);
  EXPECT_EQ(r->kl_max, 0.0);
  EXPECT_EQ(r->top1_agreement, 1.0);
  EXPECT_EQ(r->greedy_identical, 1.0);
  // ctx 64 = 4 blocks per window; 39-token prompts restore 2 blocks.
  EXPECT_EQ(calls, 4 * 4 + 2 * 2);
  EXPECT_EQ(r->candidate.stored_bytes_per_token, 1000.0 / 16);
  EXPECT_EQ(r->baseline.stored_bytes_per_token, 0.0);

  // Objects of 2 blocks: half the calls; the same numbers.
  calls = 0;
  o.candidate_chunk_blocks = 2;
  auto r2 = Evaluate(tf, text_, o, nullptr);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ(r2->kl_max, 0.0);
  EXPECT_EQ(r2->greedy_identical, 1.0);
  EXPECT_EQ(calls, 4 * 2 + 2 * 1);
  EXPECT_EQ(r2->candidate.stored_bytes_per_token, 1000.0 / 16);
}

// A lossy transform (f16 values with the low 7 of their 10 mantissa bits
// cleared) is measured like a lossy KV type, and what it says it stored is
// reported against the baseline's bytes.
TEST_F(EvalTest, LossyBlockTransformIsMeasured) {
  Transformer tf(*model_);
  EvalOptions o = SmallOptions(*model_, text_);
  const size_t block_bytes =
      LocalKvCache(model_->config().n_layers, model_->config().n_kv_heads,
                   model_->config().head_dim, 16)
          .layout()
          .block_bytes();
  o.candidate_blocks = [&](std::span<uint8_t* const> blocks) -> Result<size_t> {
    for (uint8_t* block : blocks) {
      for (size_t i = 0; i + 1 < block_bytes; i += 2) block[i] &= 0x80;
    }
    return blocks.size() * block_bytes / 4;
  };
  auto r = Evaluate(tf, text_, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(r->ppl_ratio, 1.0);
  EXPECT_GT(r->kl_mean, 0.0);
  EXPECT_LT(r->top1_agreement, 1.0);
  EXPECT_EQ(r->kv_bytes_ratio, 1.0);  // the pool's format is unchanged
  EXPECT_EQ(r->stored_bytes_ratio, 0.25);
}

TEST_F(EvalTest, ZeroWindowsScoresAllThatFit) {
  Transformer tf(*model_);
  EvalOptions o = SmallOptions(*model_, text_);
  o.windows = 0;
  o.gen_prompts.clear();
  const std::vector<int32_t> text(text_.begin(), text_.begin() + 300);
  auto r = Evaluate(tf, text, o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->windows, 300 / 63);
  EXPECT_EQ(r->tokens, (300 / 63) * 63);
}

TEST_F(EvalTest, RejectsBadInput) {
  Transformer tf(*model_);
  const EvalOptions good = SmallOptions(*model_, text_);

  EvalOptions o = good;
  o.ctx = 1;
  EXPECT_EQ(Evaluate(tf, text_, o, nullptr).status().code(),
            StatusCode::kInvalidArgument);

  // 62 tokens: not one window of 63.
  const std::vector<int32_t> short_text(text_.begin(), text_.begin() + 62);
  auto r = Evaluate(tf, short_text, good, nullptr);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("fewer than one window"),
            std::string::npos)
      << r.status().ToString();

  o = good;
  o.gen_tokens = -1;
  EXPECT_EQ(Evaluate(tf, text_, o, nullptr).status().code(),
            StatusCode::kInvalidArgument);

  o = good;
  o.windows = -1;
  EXPECT_EQ(Evaluate(tf, text_, o, nullptr).status().code(),
            StatusCode::kInvalidArgument);

  o = good;
  o.gen_prompts.push_back({});
  EXPECT_EQ(Evaluate(tf, text_, o, nullptr).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstash
