#include "bench/llm_bench.h"

#include <gtest/gtest.h>

#include <cmath>

#include "model/random_model.h"
#include "tests/testing/shared_data.h"

namespace kvstash::bench {
namespace {

TEST(LlmBenchTest, ReportsSpeedsBytesAndRatios) {
  RandomModelOptions o;
  o.dim = 64;
  o.n_layers = 2;
  o.n_heads = 4;
  o.n_kv_heads = 2;
  o.ffn_dim = 128;
  o.context_length = 256;
  o.tied_output = false;
  o.type = kernels::DType::kQ8_0;
  o.vocab_path = testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf");
  const std::string path = testing::TempDir("llm_bench") + "/m.gguf";
  ASSERT_TRUE(WriteRandomModel(o, path, nullptr).ok());
  auto model = Model::Load(path, "");
  ASSERT_TRUE(model.ok()) << model.status().ToString();

  ThreadPool pool({.num_threads = 2});
  LlmBenchOptions b;
  b.prompt_tokens = 16;
  b.gen_tokens = 4;
  b.depth = 20;
  b.repeat = 2;
  b.probe_bytes = 8 << 20;
  int lines = 0;
  auto r = RunLlmBench(**model, pool, b, [&](const std::string&) { ++lines; });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(lines, 2 + 2 * b.repeat);
  EXPECT_EQ(r->weight_type, kernels::DType::kQ8_0);
  // Per layer q, k, v, o, gate, up, down; then the output matrix; then one
  // embedding row.
  const double row64 = kernels::RowBytes(kernels::DType::kQ8_0, 64);
  const double row128 = kernels::RowBytes(kernels::DType::kQ8_0, 128);
  const double layer = row64 * (64 + 32 + 32 + 64 + 128 + 128) + row128 * 64;
  EXPECT_DOUBLE_EQ(r->weight_bytes_per_token,
                   2 * layer + row64 * 32000 + row64);
  // Decode steps read the K/V of depth + 1 .. depth + 4 positions (f16).
  EXPECT_DOUBLE_EQ(r->kv_bytes_per_token, (20 + 2.5) * (16 * 2 * 2 * 2 * 2));
  for (const Spread& s : {r->prefill_tokens_per_s, r->decode_tokens_per_s}) {
    EXPECT_GT(s.min, 0);
    EXPECT_LE(s.min, s.median);
    EXPECT_LE(s.median, s.max);
  }
  EXPECT_GT(r->read_bandwidth.min, 0);
  EXPECT_GT(r->peak.ops_per_s, 0);
  EXPECT_FALSE(r->peak.instruction.empty());
  // Each run's ratio is its decode bytes/s over its own probe.
  EXPECT_TRUE(std::isfinite(r->decode_over_probe.max) &&
              r->decode_over_probe.min > 0);
  EXPECT_LE(r->decode_over_probe.min, r->decode_over_probe.median);
  EXPECT_LE(r->decode_over_probe.median, r->decode_over_probe.max);
  EXPECT_TRUE(std::isfinite(r->prefill_peak_ratio) &&
              r->prefill_peak_ratio > 0);
}

TEST(LlmBenchTest, RejectsBadOptions) {
  auto model = Model::Load(
      testing::SharedPath("models/stories260K/stories260K.gguf"), "");
  ASSERT_TRUE(model.ok());
  ThreadPool pool({.num_threads = 1});
  LlmBenchOptions b;
  b.repeat = 0;
  EXPECT_FALSE(RunLlmBench(**model, pool, b, [](const std::string&) {}).ok());
}

}  // namespace
}  // namespace kvstash::bench
