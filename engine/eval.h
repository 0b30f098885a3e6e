// Evaluate: how much a KV storage format (the candidate) changes what the
// model computes, relative to a baseline format, on the same model and text.
// Teacher-forced part: `text_ids` (without BOS) is cut into the consecutive
// windows of Perplexity (BOS + ctx - 1 tokens, one forward pass with every
// logit, at most `windows` windows); each window runs once with a private
// cache of each format, and each predicted token is scored on both
// full-vocabulary distributions (softmax of the logits in double precision,
// the same log-softmax code for both sides, so identical logits give
// identical numbers and a KL of exactly 0). Per side: nll (mean negative
// log-likelihood of the target, nats), ppl = exp(nll), top1 (fraction of
// targets that were the argmax). Between sides: ppl_ratio = candidate /
// baseline ppl; KL(baseline || candidate) = sum_i p_b(i) (log p_b(i) - log
// p_c(i)) per token, reported as mean, 99th percentile (nearest rank) and
// max; top1_agreement, the fraction of tokens where both argmaxes (first
// index of the largest logit) are equal; rms_dp, the root mean square over
// tokens of p_c(target) - p_b(target). Greedy part: each prompt (token ids,
// BOS first as the caller tokenized it) is continued by exactly gen_tokens
// greedy tokens (temperature 0, no EOS stop) with each format;
// greedy_identical is the fraction of prompts whose two continuations are
// equal (0 without prompts) and first_divergence, per prompt, the index of
// the first differing token, or gen_tokens when none differs. kv_bytes_per_
// token is what a cache of the format stores per position over all layers,
// scales and run params included; kv_bytes_ratio = candidate / baseline.
// With a candidate block transform (e.g. a tier codec's round trip), the
// candidate also pays for storing its blocks: each window runs in passes of
// block_tokens tokens, and each object of candidate_chunk_blocks blocks that
// a pass completes is transformed before the next pass, so every token reads
// the earlier complete objects as restored from a store (the blocks of an
// incomplete object as computed); each greedy prompt's prefix is restored
// that way (GenerateOptions::prefix_transform, chunks of the same size).
// stored_bytes_per_token is what the transform stored per position, and
// stored_bytes_ratio that over the baseline's kv_bytes_per_token (0 without a
// transform). With a compressor (token eviction, compress/), each window's
// first compress_at positions are computed, the candidate's cache is
// compressed, and the rest is computed over what it kept; only the
// predictions made after the compression (rows compress_at .. ctx - 2) are
// scored, on both sides. A copy test then measures what the eviction lost
// for retrieval: per window, BOS + S (compress_at - 1 text tokens) is
// computed, compressed, and followed by S again (as much as the window
// holds); copy_accuracy is the fraction of the copy's tokens after its first
// that each side predicts (argmax). kept_fraction is the rows kept over the
// rows held before compression, averaged over windows. Greedy prompts are
// compressed as Generate compresses them (GenerateOptions::compressor: at
// their CompressionPoint).
// InvalidArgument when ctx < 2, windows < 0, gen_tokens < 0, a prompt is
// empty, compress_at is outside [2, ctx - 2], both a transform and a
// compressor are given, the model's heads cannot be stored in either format,
// the vocabulary has no BOS, or the text holds no full window.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/local_kv_cache.h"
#include "engine/transformer.h"
#include "kernels/kv_format.h"

namespace kvstash {

struct EvalOptions {
  int ctx = 256;     // window length in tokens, BOS first
  int windows = 32;  // teacher-forced windows at most (0: all that fit)
  kernels::KvFormat baseline;  // f16/f16 by default
  kernels::KvFormat candidate;
  // Empty: none. See the header comment.
  BlockTransform candidate_blocks;
  int candidate_chunk_blocks = 1;  // blocks per object through the transform
  // Greedy prompts: token ids, BOS first as the caller tokenized them.
  std::vector<std::vector<int32_t>> gen_prompts;
  int gen_tokens = 128;  // greedy tokens per prompt
  // Null: none. See the header comment. Not owned.
  KvCompressor* compressor = nullptr;
  int compress_at = 0;  // positions computed before compressing; 0: ctx / 2
};

// Teacher-forced scores of one format.
struct EvalSide {
  double ppl = 0;
  double nll = 0;   // nats per scored token
  double top1 = 0;  // fraction of targets that were the argmax
  double kv_bytes_per_token = 0;
  double stored_bytes_per_token = 0;  // through the block transform, or 0
  double copy_accuracy = 0;           // with a compressor, else 0
};

struct EvalResult {
  EvalSide baseline, candidate;
  double ppl_ratio = 0;  // candidate.ppl / baseline.ppl
  // KL(baseline || candidate) per scored token, nats.
  double kl_mean = 0, kl_p99 = 0, kl_max = 0;
  double top1_agreement = 0;  // candidate argmax == baseline argmax
  double rms_dp = 0;          // RMS of p_cand(target) - p_base(target)
  int64_t tokens = 0;         // scored tokens
  int windows = 0;
  // Greedy.
  int gen_prompts = 0;
  double greedy_identical = 0;        // fraction of prompts with equal outputs
  std::vector<int> first_divergence;  // per prompt; gen_tokens if none
  double kv_bytes_ratio = 0;          // candidate / baseline kv_bytes_per_token
  // candidate.stored_bytes_per_token / baseline.kv_bytes_per_token; 0
  // without a block transform.
  double stored_bytes_ratio = 0;
  // With a compressor: rows kept / rows before compression; copy tokens
  // scored.
  double kept_fraction = 0;
  int64_t copy_tokens = 0;
};

// Called with one short line per window ("window 3/32") and per greedy
// prompt ("prompt 1/4").
using EvalProgress = std::function<void(const std::string& line)>;

// See the header comment. `progress` may be empty.
Result<EvalResult> Evaluate(Transformer& transformer,
                            std::span<const int32_t> text_ids,
                            const EvalOptions& options,
                            const EvalProgress& progress);

}  // namespace kvstash
