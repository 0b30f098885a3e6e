#include "bench/codec_bench.h"

#include <chrono>
#include <random>

#include "engine/local_kv_cache.h"
#include "engine/transformer.h"
#include "store/object_format.h"

namespace kvstash::bench {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

Result<CodecBenchResult> RunCodecBench(const Model& model, ThreadPool& pool,
                                       const CodecBenchOptions& o,
                                       const BenchProgress& progress) {
  if (o.object_blocks < 1 || o.block_tokens < 1 || o.repeat < 1) {
    return Status::InvalidArgument(
        "bench codec: object blocks, block tokens and repeat must be >= 1");
  }
  const ModelConfig& c = model.config();
  const kernels::BlockLayout layout{c.n_layers, c.n_kv_heads, c.head_dim,
                                    o.block_tokens, o.kv_format};
  if (const std::string why = layout.Check(); !why.empty()) {
    return Status::InvalidArgument("bench codec: " + why);
  }
  std::vector<int32_t> tokens = o.tokens;
  if (tokens.empty()) {
    std::mt19937 rng(uint32_t(o.seed));
    std::uniform_int_distribution<int32_t> id(0, c.vocab_size - 1);
    tokens.resize(size_t(std::max(o.prompt_tokens, 0)));
    for (int32_t& t : tokens) t = id(rng);
  }
  if (int(tokens.size()) > o.prompt_tokens) tokens.resize(o.prompt_tokens);
  const int object_tokens = o.object_blocks * o.block_tokens;
  const int objects = int(tokens.size()) / object_tokens;
  if (objects == 0) {
    return Status::InvalidArgument(
        "bench codec: " + std::to_string(tokens.size()) +
        " prompt tokens hold no object of " + std::to_string(object_tokens));
  }

  progress("prefill: " + std::to_string(tokens.size()) + " tokens");
  LocalKvCache kv(layout, int(tokens.size()));
  Transformer transformer(model, &pool);
  std::vector<float> logits(c.vocab_size);
  KV_RETURN_IF_ERROR(
      transformer.Forward(tokens, 0, kv, /*all_logits=*/false, logits.data()));
  // The objects' blocks, each object's blocks consecutive.
  const size_t object_bytes = size_t(o.object_blocks) * layout.block_bytes();
  std::vector<uint8_t> raw;
  raw.reserve(size_t(objects) * object_bytes);
  KV_RETURN_IF_ERROR(
      kv.TransformFilledBlocks(
            0, objects * object_tokens, 1,
            [&](std::span<uint8_t* const> blocks) -> Result<size_t> {
              raw.insert(raw.end(), blocks[0],
                         blocks[0] + layout.block_bytes());
              return layout.block_bytes();
            })
          .status());

  kernels::BlockLayout f16 = layout;
  f16.kv = {kernels::KvType::kF16, kernels::KvType::kF16};
  CodecBenchResult r;
  r.objects = objects;
  r.raw_bytes = double(raw.size());
  std::vector<uint8_t> decoded(object_bytes);
  for (const store::Codec codec :
       {store::Codec::kRaw, store::Codec::kZstd, store::Codec::kCacheGen}) {
    CodecRow row;
    row.codec = codec;
    row.why = store::CodecSupports(codec, layout);
    row.supported = row.why.empty();
    if (!row.supported) {
      r.rows.push_back(row);
      continue;
    }
    std::vector<double> enc, dec;
    std::vector<std::vector<uint8_t>> payloads(static_cast<size_t>(objects));
    for (int run = 0; run < o.repeat; ++run) {
      progress(std::string("codec ") + store::CodecName(codec) + ": run " +
               std::to_string(run + 1) + "/" + std::to_string(o.repeat));
      auto start = Clock::now();
      for (int i = 0; i < objects; ++i) {
        payloads[size_t(i)] = store::EncodePayload(
            codec, layout,
            std::span(raw).subspan(size_t(i) * object_bytes, object_bytes));
      }
      enc.push_back(r.raw_bytes / SecondsSince(start));
      start = Clock::now();
      for (int i = 0; i < objects; ++i) {
        KV_RETURN_IF_ERROR(
            store::DecodePayload(codec, layout, payloads[size_t(i)], decoded));
      }
      dec.push_back(r.raw_bytes / SecondsSince(start));
    }
    double stored = 0;
    for (const std::vector<uint8_t>& p : payloads) {
      stored += double(store::kObjectHeaderBytes + p.size());
    }
    row.object_over_raw = stored / r.raw_bytes;
    row.object_over_f16 =
        stored / (double(objects) * o.object_blocks * f16.block_bytes());
    row.encode_bytes_per_s = SpreadOf(enc);
    row.decode_bytes_per_s = SpreadOf(dec);
    r.rows.push_back(row);
  }
  return r;
}

}  // namespace kvstash::bench
