#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "engine/logprobs.h"

namespace kvstash {
namespace {

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

double GenerateResult::prefill_tokens_per_s() const {
  return prefill_seconds > 0 ? prompt_ids.size() / prefill_seconds : 0;
}

double GenerateResult::decode_tokens_per_s() const {
  const size_t steps = gen_ids.empty() ? 0 : gen_ids.size() - 1;
  return decode_seconds > 0 ? steps / decode_seconds : 0;
}

Status CheckKvFormat(const kernels::KvFormat& format,
                     const ModelConfig& config) {
  for (const kernels::KvType t : {format.k, format.v}) {
    const std::string why =
        kernels::KvFormatSupports(t, size_t(config.head_dim));
    if (!why.empty()) return Status::InvalidArgument(why);
  }
  return Status::OK();
}

Result<GenerateResult> Generate(Transformer& transformer,
                                std::span<const int32_t> prompt,
                                const GenerateOptions& options,
                                const TokenCallback& on_token) {
  if (prompt.empty()) return Status::InvalidArgument("generate: empty prompt");
  if (options.n_predict < 0) {
    return Status::InvalidArgument("generate: n_predict must be >= 0");
  }
  if (options.prefix_chunk_blocks < 1) {
    return Status::InvalidArgument(
        "generate: prefix_chunk_blocks must be >= 1");
  }
  KV_RETURN_IF_ERROR(options.sampling.Validate());
  const Model& model = transformer.model();
  const ModelConfig& c = model.config();
  KV_RETURN_IF_ERROR(CheckKvFormat(options.kv_format, c));
  GenerateResult result;
  result.prompt_ids.assign(prompt.begin(), prompt.end());
  if (options.n_predict == 0) return result;

  const int capacity = static_cast<int>(prompt.size()) + options.n_predict;
  LocalKvCache kv(c.n_layers, c.n_kv_heads, c.head_dim, capacity,
                  options.kv_format);
  Sampler sampler(options.sampling);
  std::vector<float> logits(c.vocab_size);
  std::vector<int32_t> history(prompt.begin(), prompt.end());

  QueryObserver* observer = nullptr;
  if (options.compressor != nullptr) {
    options.compressor->Reset();
    observer = options.compressor->observer();
  }
  auto start = std::chrono::steady_clock::now();
  const int n = static_cast<int>(prompt.size());
  int restored = 0;  // positions of the prefix passed through the transform
  if (options.prefix_transform) {
    const int b = kv.layout().block_tokens;
    restored = (kernels::KvHasResidual(options.kv_format) ? n - 1 : n) / b * b;
  }
  if (restored > 0) {
    KV_RETURN_IF_ERROR(transformer.Forward(prompt.first(size_t(restored)), 0,
                                           kv, /*all_logits=*/false,
                                           logits.data(), observer));
    const int chunk =
        options.prefix_chunk_blocks * kv.layout().block_tokens;  // positions
    const int chunked = restored / chunk * chunk;
    KV_RETURN_IF_ERROR(kv.TransformFilledBlocks(0, chunked,
                                                options.prefix_chunk_blocks,
                                                options.prefix_transform)
                           .status());
    KV_RETURN_IF_ERROR(
        kv.TransformFilledBlocks(chunked, restored, 1, options.prefix_transform)
            .status());
  }
  int computed_from = std::min(restored, n - 1);
  auto compress = [&](int at) -> Status {
    const auto compress_start = std::chrono::steady_clock::now();
    KV_RETURN_IF_ERROR(options.compressor->Compress(kv, at));
    result.compress_seconds += SecondsSince(compress_start);
    return Status::OK();
  };
  const int compress_at = options.compressor != nullptr
                              ? CompressionPoint(*options.compressor, n)
                              : n;
  if (compress_at < n) {
    // The document first, compressed; the rest over its kept rows.
    computed_from = std::min(computed_from, compress_at);
    if (computed_from < compress_at) {
      KV_RETURN_IF_ERROR(transformer.Forward(
          prompt.subspan(size_t(computed_from),
                         size_t(compress_at - computed_from)),
          computed_from, kv, /*all_logits=*/false, logits.data(), observer));
    }
    KV_RETURN_IF_ERROR(compress(compress_at));
    computed_from = compress_at;
  }
  KV_RETURN_IF_ERROR(transformer.Forward(
      prompt.subspan(size_t(computed_from)), computed_from, kv,
      /*all_logits=*/false, logits.data(), observer));
  result.prefill_seconds = SecondsSince(start) - result.compress_seconds;
  if (compress_at == n && options.compressor != nullptr) {
    KV_RETURN_IF_ERROR(compress(n));
  }

  start = std::chrono::steady_clock::now();
  double recompress_seconds = 0;
  int pos = static_cast<int>(prompt.size());
  while (true) {
    const int32_t next = sampler.Sample(logits, history, prompt.size());
    result.gen_ids.push_back(next);
    history.push_back(next);
    if (on_token && !on_token(next)) break;
    if (options.stop_at_eos && next == model.tokenizer().eos()) break;
    if (static_cast<int>(result.gen_ids.size()) >= options.n_predict) break;
    if (options.compressor != nullptr &&
        RecompressDue(*options.compressor, kv.compaction(), pos)) {
      // A fixed budget: back to the rows the first compression kept.
      const auto compress_start = std::chrono::steady_clock::now();
      KV_RETURN_IF_ERROR(
          options.compressor->Recompress(kv, pos, kv.compaction().kept));
      recompress_seconds += SecondsSince(compress_start);
      ++result.recompressions;
    }
    KV_RETURN_IF_ERROR(transformer.Forward({&next, 1}, pos, kv,
                                           /*all_logits=*/false, logits.data(),
                                           observer));
    ++pos;
  }
  result.decode_seconds = SecondsSince(start) - recompress_seconds;
  result.compress_seconds += recompress_seconds;
  result.kv_blocks_held = kv.BlocksHeld(pos);
  return result;
}

Result<PerplexityResult> Perplexity(Transformer& transformer,
                                    std::span<const int32_t> text_ids, int ctx,
                                    int max_windows,
                                    kernels::KvFormat kv_format,
                                    const ProgressCallback& progress) {
  if (ctx < 2) return Status::InvalidArgument("perplexity: ctx must be >= 2");
  KV_RETURN_IF_ERROR(CheckKvFormat(kv_format, transformer.model().config()));
  const size_t per_window = ctx - 1;
  int windows = static_cast<int>(text_ids.size() / per_window);
  if (max_windows > 0) windows = std::min(windows, max_windows);
  if (windows == 0) {
    return Status::InvalidArgument(
        "perplexity: the text has " + std::to_string(text_ids.size()) +
        " tokens, fewer than one window of " + std::to_string(per_window));
  }
  const ModelConfig& c = transformer.model().config();
  const int32_t bos = transformer.model().tokenizer().bos();
  if (bos < 0) {
    return Status::InvalidArgument("perplexity: the vocabulary has no BOS");
  }
  LocalKvCache kv(c.n_layers, c.n_kv_heads, c.head_dim, ctx, kv_format);
  std::vector<float> logits(size_t(ctx) * c.vocab_size);
  std::vector<int32_t> window(ctx);
  double nll_sum = 0;
  int64_t correct = 0, scored = 0;
  for (int w = 0; w < windows; ++w) {
    window[0] = bos;
    std::copy_n(text_ids.begin() + w * per_window, per_window,
                window.begin() + 1);
    KV_RETURN_IF_ERROR(
        transformer.Forward(window, 0, kv, /*all_logits=*/true, logits.data()));
    for (int t = 0; t + 1 < ctx; ++t) {
      const float* row = &logits[size_t(t) * c.vocab_size];
      const int32_t target = window[t + 1];
      nll_sum -= TokenLogprob(std::span(row, size_t(c.vocab_size)), target);
      correct += std::max_element(row, row + c.vocab_size) - row == target;
      ++scored;
    }
    if (progress) progress(w + 1, windows);
  }
  PerplexityResult r;
  r.nll = nll_sum / scored;
  r.ppl = std::exp(r.nll);
  r.top1 = double(correct) / scored;
  r.tokens = scored;
  r.windows = windows;
  return r;
}

}  // namespace kvstash
