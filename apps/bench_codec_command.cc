// `kvstash bench codec`: the tier codecs on the model's real KV blocks
// (bench/codec_bench.h).
#include <cstdio>
#include <memory>
#include <string>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "base/file.h"
#include "bench/codec_bench.h"

namespace kvstash::apps {
namespace {

struct BenchCodecCommandOptions {
  ModelOptions model;
  RunOptions run;    // the pool and bench.kv_format
  std::string file;  // text to prefill (BOS first); empty: random token ids
  bench::CodecBenchOptions bench;  // bound to flags field by field
  bool json = false;
};

int RunBenchCodec(const BenchCodecCommandOptions& options) {
  std::unique_ptr<ThreadPool> pool;
  bench::CodecBenchOptions o = options.bench;
  if (Status s = ParseRunOptions(options.run, &pool, &o.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  if (!options.file.empty()) {
    Result<std::string> text = ReadFile(options.file);
    if (!text.ok()) return Fail(text.status().message());
    o.tokens = (*model)->tokenizer().Encode(*text, true);
  }
  Result<bench::CodecBenchResult> r =
      bench::RunCodecBench(**model, *pool, o, PrintProgress);
  if (!r.ok()) return Fail(r.status().message());
  if (options.json) {
    Json rows = Json::array();
    for (const bench::CodecRow& row : r->rows) {
      Json j = {{"codec", store::CodecName(row.codec)},
                {"supported", row.supported}};
      if (!row.supported) {
        j["why"] = row.why;
      } else {
        j["object_over_raw"] = row.object_over_raw;
        j["object_over_f16"] = row.object_over_f16;
        j["encode_bytes_per_s"] = SpreadJson(row.encode_bytes_per_s);
        j["decode_bytes_per_s"] = SpreadJson(row.decode_bytes_per_s);
      }
      rows.push_back(j);
    }
    PrintJson({{"model", options.model.model_path},
               {"kv_type_k", kernels::KvTypeName(o.kv_format.k)},
               {"kv_type_v", kernels::KvTypeName(o.kv_format.v)},
               {"objects", r->objects},
               {"object_blocks", o.object_blocks},
               {"block_tokens", o.block_tokens},
               {"raw_bytes", r->raw_bytes},
               {"repeat", o.repeat},
               {"codecs", rows}});
    return 0;
  }
  std::printf(
      "model %s, KV %s, %d objects of %d x %d tokens (%s), %d runs, "
      "one thread\n",
      options.model.model_path.c_str(),
      kernels::KvFormatName(o.kv_format).c_str(), r->objects, o.object_blocks,
      o.block_tokens, HumanBytes(uint64_t(r->raw_bytes)).c_str(), o.repeat);
  for (const bench::CodecRow& row : r->rows) {
    const std::string name = store::CodecName(row.codec);
    if (!row.supported) {
      std::printf("%s: not for these KV types (%s)\n", name.c_str(),
                  row.why.c_str());
      continue;
    }
    std::printf("%s: objects %.4f of the pool's bytes, %.4f of f16\n",
                name.c_str(), row.object_over_raw, row.object_over_f16);
    PrintSpreadLine("  encode", row.encode_bytes_per_s, 1e-9, "GB/s of KV");
    PrintSpreadLine("  decode", row.decode_bytes_per_s, 1e-9, "GB/s of KV");
  }
  return 0;
}

}  // namespace

Command RegisterBenchCodec(CLI::App& parent) {
  auto o = std::make_shared<BenchCodecCommandOptions>();
  bench::CodecBenchOptions& b = o->bench;
  CLI::App* cmd = parent.add_subcommand(
      "codec",
      "tier codec benchmark: object size against f16 and encode / decode "
      "throughput of none, zstd and cachegen on the model's real KV blocks, "
      "one thread");
  AddModelFlags(cmd, &o->model);
  AddRunFlags(cmd, &o->run);
  cmd->add_option("--file,-f", o->file,
                  "UTF-8 text to prefill (random token ids)");
  cmd->add_option("--prompt-tokens", b.prompt_tokens, "tokens prefilled");
  cmd->add_option("--object-blocks", b.object_blocks, "blocks per object");
  cmd->add_option("--block-tokens", b.block_tokens, "tokens per KV block");
  cmd->add_option("--repeat", b.repeat, "runs");
  AddJsonFlag(cmd, &o->json);
  return {cmd, [o] { return RunBenchCodec(*o); }};
}

}  // namespace kvstash::apps
