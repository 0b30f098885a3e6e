// Random-weight Llama models for benchmarks and tests: WriteRandomModel writes
// a GGUF of a given shape and weight type whose weights are drawn from
// N(0, std) (norm weights 1), with a real vocabulary copied from a
// vocabulary-only GGUF, so that the model loads, tokenizes and runs like a
// trained one (its text is noise). Weights are produced row by row while the
// file streams to disk, in parallel on a pool, and are the same for a given
// seed whatever the number of threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/dtype.h"
#include "model/weight_mix.h"

namespace kvstash {

struct RandomModelOptions {
  int dim = 768;
  int n_layers = 12;
  int n_heads = 12;
  int n_kv_heads = 4;
  int ffn_dim = 2048;
  int context_length = 8192;
  float rope_base = 10000.0f;
  bool tied_output = true;
  // The matrices' types: one type (a DType converts) or a mixture; a matrix
  // whose rows are not whole blocks of its type falls back (FallbackType).
  WeightMix type = kernels::DType::kF16;
  float weight_std = 0.02f;
  uint64_t seed = 0;
  // A GGUF holding `tokenizer.ggml.*` metadata; its token count is the
  // model's vocabulary size.
  std::string vocab_path;
};

// Fills `options` with a named shape: "110m" (dim 768, 12 layers, 12 heads, 4
// KV heads, FFN 2048, tied output) or "1b" (dim 2048, 16 layers, 32 heads, 8
// KV heads, FFN 8192, RoPE base 500000, separate output). Other fields are
// kept. InvalidArgument for another name.
Status ApplyRandomModelPreset(const std::string& preset,
                              RandomModelOptions* options);

// `fallbacks`, when given, receives the matrices written in a fallback type.
Status WriteRandomModel(const RandomModelOptions& options,
                        const std::string& path, ThreadPool* pool,
                        std::vector<WeightFallback>* fallbacks = nullptr);

}  // namespace kvstash
