#include "engine/eval.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "engine/generate.h"
#include "engine/local_kv_cache.h"
#include "engine/logprobs.h"

namespace kvstash {
namespace {

// Checks that the model's heads can be stored in `format`, naming the side.
Status CheckSideFormat(const char* side, const kernels::KvFormat& format,
                       const ModelConfig& config) {
  return CheckKvFormat(format, config)
      .WithPrefix("eval: " + std::string(side) + " format " +
                  kernels::KvFormatName(format));
}

// The teacher-forced windows of Perplexity: window w is BOS followed by
// text_ids[w * (ctx - 1), (w + 1) * (ctx - 1)).
Result<int> CountWindows(size_t text_tokens, int ctx, int max_windows) {
  const size_t per_window = size_t(ctx) - 1;
  size_t windows = text_tokens / per_window;
  if (max_windows > 0) windows = std::min(windows, size_t(max_windows));
  if (windows == 0) {
    return Status::InvalidArgument(
        "eval: the text has " + std::to_string(text_tokens) +
        " tokens, fewer than one window of " + std::to_string(per_window));
  }
  return static_cast<int>(windows);
}

void FillWindow(std::span<const int32_t> text_ids, int w, int32_t bos,
                std::vector<int32_t>* window) {
  const size_t per_window = window->size() - 1;
  (*window)[0] = bos;
  std::copy_n(text_ids.begin() + size_t(w) * per_window, per_window,
              window->begin() + 1);
}

int Argmax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

// One format's cache, the logits of its last window, and its running scores.
struct Side {
  Side(const ModelConfig& c, int ctx, const kernels::KvFormat& format)
      : kv(c.n_layers, c.n_kv_heads, c.head_dim, ctx, format),
        logits(size_t(ctx) * c.vocab_size),
        log_probs(c.vocab_size) {}

  // Computes every logit of `window` (from position 0), compressing the
  // cache once `compress_at` positions are computed.
  Status RunCompressed(Transformer& transformer,
                       std::span<const int32_t> window,
                       KvCompressor& compressor, int compress_at) {
    const size_t vocab = size_t(transformer.model().config().vocab_size);
    kv.Clear();
    compressor.Reset();
    KV_RETURN_IF_ERROR(transformer.Forward(
        window.first(size_t(compress_at)), 0, kv, /*all_logits=*/true,
        logits.data(), compressor.observer()));
    KV_RETURN_IF_ERROR(compressor.Compress(kv, compress_at));
    kept_rows += kv.compaction().MeanKept();
    rows_before += compress_at;
    // The rest in one pass, or, compressing every N positions, in passes
    // of N with the cache compressed back to its budget after each.
    const int n = int(window.size());
    const int step = compressor.every() > 0 ? compressor.every() : n;
    for (int pos = compress_at; pos < n; pos += step) {
      if (RecompressDue(compressor, kv.compaction(), pos)) {
        KV_RETURN_IF_ERROR(
            compressor.Recompress(kv, pos, kv.compaction().kept));
      }
      const int end = std::min(n, pos + step);
      KV_RETURN_IF_ERROR(transformer.Forward(
          window.subspan(size_t(pos), size_t(end - pos)), pos, kv,
          /*all_logits=*/true, logits.data() + size_t(pos) * vocab,
          compressor.every() > 0 ? compressor.observer() : nullptr));
    }
    return Status::OK();
  }

  // Computes every logit of `window` (from position 0); with a transform,
  // in passes of one block, transforming the blocks each pass fills.
  Status Run(Transformer& transformer, std::span<const int32_t> window,
             const BlockTransform& transform, int chunk_blocks) {
    if (!transform) {
      return transformer.Forward(window, 0, kv, /*all_logits=*/true,
                                 logits.data());
    }
    const int n = static_cast<int>(window.size());
    const int b = kv.layout().block_tokens;
    const size_t vocab = logits.size() / window.size();
    for (int pos = 0; pos < n; pos += b) {
      const int end = std::min(n, pos + b);
      KV_RETURN_IF_ERROR(transformer.Forward(
          window.subspan(size_t(pos), size_t(end - pos)), pos, kv,
          /*all_logits=*/true, logits.data() + size_t(pos) * vocab));
      KV_ASSIGN_OR_RETURN(
          const size_t bytes,
          kv.TransformFilledBlocks(pos, end, chunk_blocks, transform));
      const int object = chunk_blocks * b;  // positions per object
      stored_bytes += bytes;
      stored_positions +=
          uint64_t(end / object * object - pos / object * object);
    }
    return Status::OK();
  }

  // Scores row t of the last window against `target`; fills log_probs and
  // returns the argmax.
  int Score(int t, int vocab, int32_t target) {
    const float* row = &logits[size_t(t) * vocab];
    LogSoftmax(std::span(row, size_t(vocab)), log_probs);
    const int top = Argmax(row, vocab);
    nll_sum -= log_probs[target];
    correct += top == target;
    return top;
  }

  EvalSide Finish(int64_t scored, int64_t copy_tokens) const {
    EvalSide s;
    s.copy_accuracy =
        copy_tokens > 0 ? double(copied) / double(copy_tokens) : 0.0;
    s.nll = nll_sum / double(scored);
    s.ppl = std::exp(s.nll);
    s.top1 = double(correct) / double(scored);
    s.kv_bytes_per_token = kv.bytes_per_position();
    s.stored_bytes_per_token =
        stored_positions == 0 ? 0
                              : double(stored_bytes) / double(stored_positions);
    return s;
  }

  LocalKvCache kv;
  std::vector<float> logits;      // [ctx][vocab]
  std::vector<double> log_probs;  // [vocab], of the row last scored
  double nll_sum = 0;
  int64_t correct = 0;
  uint64_t stored_bytes = 0;      // returned by the block transform
  uint64_t stored_positions = 0;  // in the blocks it transformed
  // Over compressions: rows kept per (layer, head), and positions before.
  double kept_rows = 0, rows_before = 0;
  int64_t copied = 0;  // copy tokens predicted
};

// KL(p || q) from log-probabilities; exactly 0 when they are equal.
double KlDivergence(const std::vector<double>& log_p,
                    const std::vector<double>& log_q) {
  double kl = 0;
  for (size_t i = 0; i < log_p.size(); ++i) {
    kl += std::exp(log_p[i]) * (log_p[i] - log_q[i]);
  }
  return kl;
}

// The nearest-rank percentile `q` (in (0, 1]) of `values` (reordered).
double NearestRank(std::vector<double>& values, double q) {
  const size_t rank = std::max<size_t>(
      1, static_cast<size_t>(std::ceil(q * double(values.size()))));
  auto nth = values.begin() + (rank - 1);
  std::nth_element(values.begin(), nth, values.end());
  return *nth;
}

Result<std::vector<int32_t>> Greedy(Transformer& transformer,
                                    std::span<const int32_t> prompt, int n,
                                    const kernels::KvFormat& format,
                                    const BlockTransform& prefix_transform,
                                    int chunk_blocks,
                                    KvCompressor* compressor) {
  GenerateOptions o;
  o.compressor = compressor;
  o.n_predict = n;
  o.stop_at_eos = false;
  o.kv_format = format;
  o.prefix_transform = prefix_transform;
  o.prefix_chunk_blocks = chunk_blocks;
  o.sampling.temperature = 0;
  KV_ASSIGN_OR_RETURN(GenerateResult r,
                      Generate(transformer, prompt, o, nullptr));
  return std::move(r.gen_ids);
}

}  // namespace

Result<EvalResult> Evaluate(Transformer& transformer,
                            std::span<const int32_t> text_ids,
                            const EvalOptions& options,
                            const EvalProgress& progress) {
  const int ctx = options.ctx;
  if (ctx < 2) return Status::InvalidArgument("eval: ctx must be >= 2");
  if (options.windows < 0) {
    return Status::InvalidArgument("eval: windows must be >= 0");
  }
  if (options.gen_tokens < 0) {
    return Status::InvalidArgument("eval: gen_tokens must be >= 0");
  }
  if (options.candidate_chunk_blocks < 1) {
    return Status::InvalidArgument("eval: candidate_chunk_blocks must be >= 1");
  }
  const int compress_at =
      options.compress_at > 0 ? options.compress_at : ctx / 2;
  KvCompressor* const compressor = options.compressor;
  if (compressor != nullptr) {
    if (compress_at < 2 || compress_at > ctx - 2) {
      return Status::InvalidArgument(
          "eval: compress_at " + std::to_string(compress_at) +
          " must be in [2, ctx - 2] = [2, " + std::to_string(ctx - 2) + "]");
    }
    if (options.candidate_blocks) {
      return Status::InvalidArgument(
          "eval: a block transform (tier codec) and a KV compression policy "
          "cannot be measured in one run");
    }
  }
  for (size_t i = 0; i < options.gen_prompts.size(); ++i) {
    if (options.gen_prompts[i].empty()) {
      return Status::InvalidArgument("eval: prompt " + std::to_string(i + 1) +
                                     " is empty");
    }
  }
  const ModelConfig& c = transformer.model().config();
  KV_RETURN_IF_ERROR(CheckSideFormat("baseline", options.baseline, c));
  KV_RETURN_IF_ERROR(CheckSideFormat("candidate", options.candidate, c));
  const int32_t bos = transformer.model().tokenizer().bos();
  if (bos < 0) {
    return Status::InvalidArgument("eval: the vocabulary has no BOS");
  }
  KV_ASSIGN_OR_RETURN(const int windows,
                      CountWindows(text_ids.size(), ctx, options.windows));

  // Teacher-forced windows.
  const int vocab = c.vocab_size;
  Side base(c, ctx, options.baseline);
  Side cand(c, ctx, options.candidate);
  std::vector<int32_t> window(ctx);
  std::vector<double> kls;
  kls.reserve(size_t(windows) * (ctx - 1));
  int64_t agree = 0;
  double dp_sq_sum = 0;
  for (int w = 0; w < windows; ++w) {
    FillWindow(text_ids, w, bos, &window);
    KV_RETURN_IF_ERROR(base.Run(transformer, window, {}, 1));
    if (compressor != nullptr) {
      KV_RETURN_IF_ERROR(
          cand.RunCompressed(transformer, window, *compressor, compress_at));
    } else {
      KV_RETURN_IF_ERROR(cand.Run(transformer, window, options.candidate_blocks,
                                  options.candidate_chunk_blocks));
    }
    for (int t = compressor != nullptr ? compress_at : 0; t + 1 < ctx; ++t) {
      const int32_t target = window[t + 1];
      const int top_base = base.Score(t, vocab, target);
      const int top_cand = cand.Score(t, vocab, target);
      agree += top_base == top_cand;
      kls.push_back(KlDivergence(base.log_probs, cand.log_probs));
      const double dp =
          std::exp(cand.log_probs[target]) - std::exp(base.log_probs[target]);
      dp_sq_sum += dp * dp;
    }
    if (progress) {
      progress("window " + std::to_string(w + 1) + "/" +
               std::to_string(windows));
    }
  }

  EvalResult r;
  if (compressor != nullptr) {
    // The copy test: BOS + S, compression, S again.
    const int copy = std::min(ctx - compress_at, compress_at - 1);
    std::vector<int32_t> copy_window(size_t(compress_at + copy));
    for (int w = 0; w < windows; ++w) {
      FillWindow(text_ids, w, bos, &window);
      std::copy_n(window.begin(), compress_at, copy_window.begin());
      std::copy_n(window.begin() + 1, copy, copy_window.begin() + compress_at);
      KV_RETURN_IF_ERROR(base.Run(transformer, copy_window, {}, 1));
      KV_RETURN_IF_ERROR(cand.RunCompressed(transformer, copy_window,
                                            *compressor, compress_at));
      for (int i = 0; i + 1 < copy; ++i) {
        const int t = compress_at + i;
        const int32_t target = copy_window[size_t(t + 1)];
        for (Side* side : {&base, &cand}) {
          side->copied +=
              Argmax(&side->logits[size_t(t) * vocab], vocab) == target;
        }
      }
      r.copy_tokens += copy - 1;
      if (progress) {
        progress("copy window " + std::to_string(w + 1) + "/" +
                 std::to_string(windows));
      }
    }
  }
  r.tokens = static_cast<int64_t>(kls.size());
  r.windows = windows;
  r.baseline = base.Finish(r.tokens, r.copy_tokens);
  r.candidate = cand.Finish(r.tokens, r.copy_tokens);
  if (cand.rows_before > 0) {
    r.kept_fraction = double(cand.kept_rows) / double(cand.rows_before);
  }
  r.ppl_ratio = r.candidate.ppl / r.baseline.ppl;
  double kl_sum = 0;
  for (double kl : kls) kl_sum += kl;
  r.kl_mean = kl_sum / double(r.tokens);
  r.kl_max = *std::max_element(kls.begin(), kls.end());
  r.kl_p99 = NearestRank(kls, 0.99);
  r.top1_agreement = double(agree) / double(r.tokens);
  r.rms_dp = std::sqrt(dp_sq_sum / double(r.tokens));
  r.kv_bytes_ratio =
      r.candidate.kv_bytes_per_token / r.baseline.kv_bytes_per_token;
  r.stored_bytes_ratio =
      r.candidate.stored_bytes_per_token / r.baseline.kv_bytes_per_token;

  // Greedy continuations.
  const int n_prompts = static_cast<int>(options.gen_prompts.size());
  int identical = 0;
  for (int i = 0; i < n_prompts; ++i) {
    const std::vector<int32_t>& prompt = options.gen_prompts[i];
    KV_ASSIGN_OR_RETURN(const std::vector<int32_t> out_base,
                        Greedy(transformer, prompt, options.gen_tokens,
                               options.baseline, {}, 1, nullptr));
    KV_ASSIGN_OR_RETURN(
        const std::vector<int32_t> out_cand,
        Greedy(transformer, prompt, options.gen_tokens, options.candidate,
               options.candidate_blocks, options.candidate_chunk_blocks,
               options.compressor));
    const auto diff = std::mismatch(out_base.begin(), out_base.end(),
                                    out_cand.begin(), out_cand.end());
    const int first = static_cast<int>(diff.first - out_base.begin());
    r.first_divergence.push_back(first);
    identical += out_base == out_cand;
    if (progress) {
      progress("prompt " + std::to_string(i + 1) + "/" +
               std::to_string(n_prompts));
    }
  }
  r.gen_prompts = n_prompts;
  r.greedy_identical = n_prompts > 0 ? double(identical) / n_prompts : 0;
  return r;
}

}  // namespace kvstash
