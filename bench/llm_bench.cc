#include "bench/llm_bench.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "engine/generate.h"
#include "engine/local_kv_cache.h"
#include "engine/transformer.h"
#include "kernels/matmul_fast.h"

namespace kvstash::bench {

Spread SpreadOf(std::vector<double> v) {
  KV_CHECK(!v.empty());
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

namespace {

using Clock = std::chrono::steady_clock;

// Passes of the read-bandwidth probe before and after each decode run.
constexpr int kProbePasses = 3;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The bytes a product with m reads: as stored, or interleaved.
double MatrixBytes(const WeightMatrix& m) {
  if (m.interleaved != nullptr) {
    return double(kernels::InterleavedBytes(m.type, m.rows, m.cols));
  }
  return double(kernels::RowBytes(m.type, m.cols)) * m.rows;
}

// Bytes of every matrix a decode step streams, and the type that holds most.
double WeightBytesPerToken(const Model& model, kernels::DType* main_type) {
  const ModelWeights& w = model.weights();
  std::map<kernels::DType, double> by_type;
  auto add = [&](const WeightMatrix& m) { by_type[m.type] += MatrixBytes(m); };
  for (const LayerWeights& l : w.layers) {
    for (const WeightMatrix* m :
         {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      add(*m);
    }
  }
  add(w.output);
  double total = 0, best = -1;
  for (const auto& [type, bytes] : by_type) {
    total += bytes;
    if (bytes > best) {
      best = bytes;
      *main_type = type;
    }
  }
  // One row of the token embedding.
  total += kernels::RowBytes(w.token_embedding.type, w.token_embedding.cols);
  return total;
}

// Multiply-adds of the weight matrices per token (embedding excluded).
double MatrixParams(const Model& model) {
  const ModelWeights& w = model.weights();
  double p = double(w.output.rows) * w.output.cols;
  for (const LayerWeights& l : w.layers) {
    for (const WeightMatrix* m :
         {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      p += double(m->rows) * m->cols;
    }
  }
  return p;
}

}  // namespace

Result<LlmBenchResult> RunLlmBench(const Model& model, ThreadPool& pool,
                                   const LlmBenchOptions& o,
                                   const BenchProgress& progress) {
  if (o.prompt_tokens < 1 || o.gen_tokens < 1 || o.depth < 0 || o.repeat < 1) {
    return Status::InvalidArgument(
        "bench: prompt and gen tokens and repeat must be >= 1, depth >= 0");
  }
  const ModelConfig& c = model.config();
  KV_RETURN_IF_ERROR(CheckKvFormat(o.kv_format, c));
  const int capacity = o.depth + std::max(o.prompt_tokens, o.gen_tokens);
  std::mt19937 rng(o.seed);
  std::uniform_int_distribution<int32_t> token(0, c.vocab_size - 1);
  std::vector<int32_t> prompt(size_t(o.depth) + o.prompt_tokens);
  for (int32_t& t : prompt) t = token(rng);

  LlmBenchResult r;
  r.weight_bytes_per_token = WeightBytesPerToken(model, &r.weight_type);
  progress("probe: memory read bandwidth (" +
           std::to_string(pool.NumWorkers()) +
           " threads), measured before and after each decode run");
  ReadBandwidthProbe probe(pool, o.probe_bytes);
  progress("probe: compute peak");
  r.peak = MeasureComputePeak(pool, r.weight_type, 3);

  LocalKvCache kv(c.n_layers, c.n_kv_heads, c.head_dim, capacity, o.kv_format);
  r.kv_bytes_per_position = kv.bytes_per_position();
  r.kv_cache_bytes = double(kv.arena_bytes());
  std::unique_ptr<LocalKvCache> base_kv;
  std::optional<kernels::KvFormat> baseline = o.baseline;
  if (o.compressor != nullptr) {
    if (o.depth < 2) {
      return Status::InvalidArgument(
          "bench: a KV policy compresses the --depth context: give a depth");
    }
    const std::string why = KvCompactionSupports(o.kv_format);
    if (!why.empty()) return Status::InvalidArgument("bench: " + why);
    if (!baseline) baseline = o.kv_format;
  }
  if (baseline) {
    base_kv = std::make_unique<LocalKvCache>(c.n_layers, c.n_kv_heads,
                                             c.head_dim, capacity, *baseline);
  }
  std::vector<double> fill_seconds, compress_seconds, compress_over_fill;
  Transformer transformer(model, &pool);
  std::vector<float> logits(c.vocab_size);
  // One run on `cache`: fill the context up to `depth` (untimed), time the
  // prefill after it, then decode from `depth` on (over the prefill's
  // positions); appends tokens/s to `pp` and `tg`.
  auto measure = [&](LocalKvCache& cache, const std::string& what,
                     KvCompressor* compressor, std::vector<double>* pp,
                     std::vector<double>* tg,
                     std::vector<double>* probes) -> Status {
    cache.Clear();
    if (compressor != nullptr) compressor->Reset();
    QueryObserver* observer =
        compressor != nullptr ? compressor->observer() : nullptr;
    auto start = Clock::now();
    for (int pos = 0; pos < o.depth; pos += o.prompt_tokens) {
      const int n = std::min(o.prompt_tokens, o.depth - pos);
      KV_RETURN_IF_ERROR(transformer.Forward(std::span(prompt).subspan(pos, n),
                                             pos, cache, false, logits.data(),
                                             observer));
    }
    if (compressor != nullptr) {
      const double fill = Seconds(start);
      progress(what + "compressing the depth context");
      start = Clock::now();
      KV_RETURN_IF_ERROR(compressor->Compress(cache, o.depth));
      const double compress = Seconds(start);
      fill_seconds.push_back(fill);
      compress_seconds.push_back(compress);
      compress_over_fill.push_back(compress / fill);
      r.kept_fraction = cache.compaction().MeanKept() / double(o.depth);
    }
    progress(what + "prefill: " + std::to_string(o.prompt_tokens) +
             " tokens at depth " + std::to_string(o.depth));
    start = Clock::now();
    KV_RETURN_IF_ERROR(
        transformer.Forward(std::span(prompt).subspan(o.depth, o.prompt_tokens),
                            o.depth, cache, false, logits.data()));
    pp->push_back(o.prompt_tokens /
                  std::chrono::duration<double>(Clock::now() - start).count());
    progress(what + "decode: " + std::to_string(o.gen_tokens) +
             " tokens at depth " + std::to_string(o.depth));
    int32_t next = prompt[0];
    const double probe_before =
        probes != nullptr ? probe.Measure(kProbePasses) : 0;
    start = Clock::now();
    for (int i = 0; i < o.gen_tokens; ++i) {
      KV_RETURN_IF_ERROR(transformer.Forward({&next, 1}, o.depth + i, cache,
                                             false, logits.data()));
      next = static_cast<int32_t>(
          std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    tg->push_back(o.gen_tokens /
                  std::chrono::duration<double>(Clock::now() - start).count());
    if (probes != nullptr) {
      probes->push_back((probe_before + probe.Measure(kProbePasses)) / 2);
    }
    return Status::OK();
  };
  std::vector<double> prefill, decode, base_prefill, base_decode, probes;
  for (int run = 0; run < o.repeat; ++run) {
    const std::string of = "run " + std::to_string(run + 1) + "/" +
                           std::to_string(o.repeat) + ", ";
    // The baseline and the candidate alternate, so that both see the same
    // machine.
    if (base_kv) {
      KV_RETURN_IF_ERROR(
          measure(*base_kv, of + kernels::KvFormatName(*baseline) + " KV, ",
                  nullptr, &base_prefill, &base_decode, nullptr));
    }
    KV_RETURN_IF_ERROR(
        measure(kv,
                of + kernels::KvFormatName(o.kv_format) +
                    (o.compressor != nullptr ? " KV compressed, " : " KV, "),
                o.compressor, &prefill, &decode, &probes));
  }
  if (base_kv) {
    r.baseline_prefill_tokens_per_s = SpreadOf(base_prefill);
    r.baseline_decode_tokens_per_s = SpreadOf(base_decode);
    std::vector<double> pp_ratio, tg_ratio;
    for (int run = 0; run < o.repeat; ++run) {
      pp_ratio.push_back(prefill[run] / base_prefill[run]);
      tg_ratio.push_back(decode[run] / base_decode[run]);
    }
    r.prefill_over_baseline = SpreadOf(pp_ratio);
    r.decode_over_baseline = SpreadOf(tg_ratio);
  }
  r.prefill_tokens_per_s = SpreadOf(prefill);
  r.decode_tokens_per_s = SpreadOf(decode);
  if (o.compressor != nullptr) {
    r.fill_seconds = SpreadOf(fill_seconds);
    r.compress_seconds = SpreadOf(compress_seconds);
    r.compress_over_fill = SpreadOf(compress_over_fill);
  }

  // Decode step i reads the K/V of the rows of positions [0, depth + i]:
  // the kept rows of the depth context when it was compressed.
  const double depth_rows =
      o.compressor != nullptr ? o.depth * r.kept_fraction : o.depth;
  r.kv_bytes_per_token =
      r.kv_bytes_per_position * (depth_rows + (o.gen_tokens + 1) / 2.0);
  // Attention of prompt token t: 4 * head_dim FLOP per query head and
  // position for QK^T and PV, over depth + t + 1 positions.
  const double mean_ctx = o.depth + (o.prompt_tokens + 1) / 2.0;
  r.prefill_flop_per_token =
      2 * MatrixParams(model) +
      4.0 * c.n_heads * c.head_dim * mean_ctx * c.n_layers;
  std::vector<double> decode_over_probe;
  for (int run = 0; run < o.repeat; ++run) {
    decode_over_probe.push_back(
        decode[run] * (r.weight_bytes_per_token + r.kv_bytes_per_token) /
        probes[run]);
  }
  r.read_bandwidth = SpreadOf(probes);
  r.decode_over_probe = SpreadOf(decode_over_probe);
  r.prefill_peak_ratio = r.prefill_tokens_per_s.median *
                         r.prefill_flop_per_token / r.peak.ops_per_s;
  return r;
}

}  // namespace kvstash::bench
