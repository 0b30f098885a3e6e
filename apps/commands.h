// The subcommands of the `kvstash` binary. Each Options struct is filled by
// CLI11 in main.cc (the only place that reads argv); each Run* returns the
// process exit status and reports any failure as one line on stderr.
#pragma once

#include <cstdint>
#include <string>

#include "engine/sampler.h"

namespace kvstash::apps {

struct ModelOptions {
  std::string model_path;
  std::string tokenizer_path;  // llama2.c checkpoints only
};

// How a forward pass runs: threads and the KV cache's element type.
struct RunOptions {
  int threads = 0;              // 0: one per core
  std::string kv_type = "f16";  // f32, f16, bf16
};

struct GenerateCommandOptions {
  ModelOptions model;
  RunOptions run;
  std::string prompt;
  int n_predict = 128;
  SamplerOptions sampling;
  bool json = false;
};
int RunGenerate(const GenerateCommandOptions& options);

struct PerplexityCommandOptions {
  ModelOptions model;
  RunOptions run;
  std::string file;
  int ctx = 256;
  int windows = 0;  // 0: every full window of the file
  bool json = false;
};
int RunPerplexity(const PerplexityCommandOptions& options);

struct InfoCommandOptions {
  ModelOptions model;
};
int RunInfo(const InfoCommandOptions& options);

struct ConvertCommandOptions {
  ModelOptions model;
  std::string type = "f16";  // f32, f16, bf16, q8_0, q4_0
  std::string out_path;
};
int RunConvert(const ConvertCommandOptions& options);

struct GenModelCommandOptions {
  std::string preset = "110m";
  std::string type = "f16";
  std::string vocab_path;
  std::string out_path;
  uint64_t seed = 0;
  int threads = 0;  // 0: all cores
  // Overrides of the preset's shape; 0 keeps the preset's value.
  int dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, ctx = 0;
};
int RunGenModel(const GenModelCommandOptions& options);

struct BenchCommandOptions {
  ModelOptions model;
  RunOptions run;
  int prompt_tokens = 512;
  int gen_tokens = 128;
  int depth = 0;
  int repeat = 3;
  bool json = false;
};
int RunBench(const BenchCommandOptions& options);

// Prints "kvstash: error: <message>" on stderr and returns 1.
int Fail(const std::string& message);

}  // namespace kvstash::apps
