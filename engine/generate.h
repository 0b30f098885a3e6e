// The generate loop and perplexity scoring for one sequence.
//
// Generate prefills the whole prompt in one batched forward pass, then
// decodes one token at a time with the Sampler, reporting each new token to a
// callback as it is produced (for streaming) and timing both phases.
// Perplexity scores consecutive windows of a token stream, each window
// starting with BOS, and reports mean negative log-likelihood per predicted
// token and greedy top-1 agreement.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "base/status.h"
#include "engine/local_kv_cache.h"
#include "engine/sampler.h"
#include "engine/transformer.h"

namespace kvstash {

struct GenerateOptions {
  int n_predict = 128;          // tokens to generate at most
  bool stop_at_eos = true;      // end early when the model emits EOS
  kernels::KvFormat kv_format;  // the types K and V are kept in
  SamplerOptions sampling;
  // Empty: none. Else the prompt is computed as a server computes a prompt
  // whose prefix it restored from a tier: its full blocks first (all of
  // them, but for KV types with a residual the one holding the last token),
  // stored as a tier stores them: chunks of prefix_chunk_blocks blocks, the
  // blocks after the last chunk one by one; those objects pass through the
  // transform; then the rest of the prompt is computed, at least its last
  // token (whose K/V is written again). Generated tokens' blocks are not
  // transformed.
  BlockTransform prefix_transform;
  int prefix_chunk_blocks = 1;
  // Null: none. Else it observes the prompt's forward passes and evicts
  // tokens of the prompt at its CompressionPoint: a prefix_only compressor
  // compresses the prompt before its last token, which is then computed
  // over the kept rows; others the whole prompt once it is computed (after
  // the first token's logits). Before the decode steps; it is Reset first.
  // With every() > 0 it observes the decode steps too and compresses again
  // every that many positions, back to the first compression's budget.
  KvCompressor* compressor = nullptr;
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> gen_ids;
  double prefill_seconds = 0;
  double decode_seconds = 0;    // total over gen_ids.size() - 1 decode steps
  double compress_seconds = 0;  // the compressor's steps, 0 without one
  int recompressions = 0;       // compressions after the first (every)
  int kv_blocks_held = 0;       // blocks the cache needed at the end
  double prefill_tokens_per_s() const;
  double decode_tokens_per_s() const;
};

// Called with each generated token; returning false stops generation.
using TokenCallback = std::function<bool(int32_t token)>;

// Generates up to options.n_predict tokens after `prompt` (non-empty). The KV
// cache is sized for prompt + n_predict positions.
Result<GenerateResult> Generate(Transformer& transformer,
                                std::span<const int32_t> prompt,
                                const GenerateOptions& options,
                                const TokenCallback& on_token);

struct PerplexityResult {
  double nll = 0;      // mean negative log-likelihood, nats per token
  double ppl = 0;      // exp(nll)
  double top1 = 0;     // fraction of tokens that were the argmax
  int64_t tokens = 0;  // predicted tokens scored
  int windows = 0;
};

// Called after each window with (windows done, windows total).
using ProgressCallback = std::function<void(int done, int total)>;

// Splits `text_ids` (without BOS) into consecutive windows of ctx - 1 tokens,
// scores each as BOS + window in one forward pass, and predicts every token
// of the window. At most `max_windows` windows (0: as many as fit). K/V are
// kept as `kv_format`. InvalidArgument when ctx < 2, there is not one full
// window, or the model's heads cannot be stored in `kv_format`.
Result<PerplexityResult> Perplexity(Transformer& transformer,
                                    std::span<const int32_t> text_ids, int ctx,
                                    int max_windows,
                                    kernels::KvFormat kv_format,
                                    const ProgressCallback& progress);

// OK when the heads of `config` can be stored in `format`, else
// InvalidArgument naming the type and why.
Status CheckKvFormat(const kernels::KvFormat& format,
                     const ModelConfig& config);

}  // namespace kvstash
