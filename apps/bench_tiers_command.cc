// `kvstash bench tiers`: the KV tier benchmark (bench/tier_bench.h).
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "apps/tiers.h"
#include "bench/svg_plot.h"
#include "bench/tier_bench.h"
#include "store/object_mac.h"

namespace kvstash::apps {
namespace {

struct BenchTiersCommandOptions {
  ModelOptions model;
  RunOptions run;  // the pool and bench.kv_format
  // Bound to flags field by field but for the ones converted from the
  // strings below.
  bench::TierBenchOptions bench;
  std::string disk_io = "auto";     // bench.disk_io
  std::string tier_key_file;        // bench.tier_key; empty: KVSTASH_TIER_KEY,
                                    // else a random key
  std::string tier_codec = "none";  // bench.tier_codec
  std::string tier_mac = "auto";    // what bench.tier_key seals with
  int tier_chunk_blocks = 0;        // bench.chunk_blocks
  bool json = false;
  std::string plot;  // an SVG of TTFT cold and warm per tier; empty: none
};

// Per tier, TTFT (median, min-max) of the cold prompt (nothing cached) and of
// the prompt restored from that tier alone, against the cached tokens.
Status PlotTiers(const bench::TierBenchResult& r,
                 const bench::TierBenchOptions& o, const std::string& path) {
  auto point = [](int cached, const bench::Spread& s) {
    return bench::PlotPoint{double(cached), s.median * 1e3, s.min * 1e3,
                            s.max * 1e3};
  };
  bench::PlotSpec spec;
  spec.title = "TTFT of a " + std::to_string(o.prompt_tokens) +
               "-token prompt: cold, and restored from each tier";
  spec.x_label = "prompt tokens found cached";
  spec.y_label = "time to first token (ms)";
  for (const auto& [name, rows] :
       {std::pair{"disk", &r.disk}, std::pair{"redis", &r.redis}}) {
    if (!rows->present) continue;
    spec.series.push_back(
        {name,
         {point(0, r.cold_ttft_s),
          point(rows->warm_cached_tokens, rows->warm_ttft_s)}});
  }
  return bench::WriteSvgPlot(spec, path);
}

Json TierRowsJson(const bench::TierRows& t) {
  Json j = {{"mode", t.mode},
            {"restore_bytes_per_s", SpreadJson(t.restore_bytes_per_s)},
            {"probe_bytes_per_s", SpreadJson(t.probe_bytes_per_s)},
            {"restore_over_probe", SpreadJson(t.restore_over_probe)},
            {"again_bytes_per_s", SpreadJson(t.again_bytes_per_s)},
            {"again_over_probe", SpreadJson(t.again_over_probe)},
            {"mac_share_of_restore", SpreadJson(t.mac_share_of_restore)},
            {"concurrent_restores", bench::kConcurrentRestores},
            {"concurrent_over_one", SpreadJson(t.concurrent_over_one)},
            {"shared_over_one", SpreadJson(t.shared_over_one)},
            {"warm_ttft_s", SpreadJson(t.warm_ttft_s)},
            {"cold_over_warm_ttft", SpreadJson(t.cold_over_warm_ttft)},
            {"suffix_ttft_s", SpreadJson(t.suffix_ttft_s)},
            {"suffix_over_parts", SpreadJson(t.suffix_over_parts)},
            {"restore_share_of_parts", SpreadJson(t.restore_share_of_parts)}};
  if (t.layered_over_whole_load.median > 0) {
    j["suffix_whole_load_ttft_s"] = SpreadJson(t.suffix_whole_load_ttft_s);
    j["layered_over_whole_load"] = SpreadJson(t.layered_over_whole_load);
  }
  return j;
}

void PrintTierRows(const std::string& name, const bench::TierRows& t,
                   int suffix_tokens) {
  std::printf("%s tier: %s\n", name.c_str(), t.mode.c_str());
  PrintSpreadLine("  restore throughput", t.restore_bytes_per_s, 1e-9, "GB/s");
  PrintSpreadLine("  probe of the same medium", t.probe_bytes_per_s, 1e-9,
                  "GB/s");
  PrintSpreadLine("  restore / probe", t.restore_over_probe, 1, "x");
  PrintSpreadLine("  second restore", t.again_bytes_per_s, 1e-9, "GB/s");
  PrintSpreadLine("  second restore / probe", t.again_over_probe, 1, "x");
  PrintSpreadLine("  MAC share of restore", t.mac_share_of_restore, 1, "x");
  PrintSpreadLine("  " + std::to_string(bench::kConcurrentRestores) +
                      " restores at once / one",
                  t.concurrent_over_one, 1, "x");
  PrintSpreadLine("  " + std::to_string(bench::kConcurrentRestores) +
                      " of one prompt at once, one pool / one",
                  t.shared_over_one, 1, "x");
  PrintSpreadLine("  warm TTFT", t.warm_ttft_s, 1e3, "ms");
  PrintSpreadLine("  cold TTFT / warm TTFT", t.cold_over_warm_ttft, 1, "x");
  if (suffix_tokens == 0) return;  // no suffix rows measured
  PrintSpreadLine("  TTFT, prompt restored + suffix computed", t.suffix_ttft_s,
                  1e3, "ms");
  PrintSpreadLine("  that / (restore alone + suffix alone)",
                  t.suffix_over_parts, 1, "x");
  PrintSpreadLine("  restore / (restore alone + suffix alone)",
                  t.restore_share_of_parts, 1, "");
  if (t.layered_over_whole_load.median == 0) return;  // not layered
  PrintSpreadLine("  the same TTFT, suffix computed after the whole load",
                  t.suffix_whole_load_ttft_s, 1e3, "ms");
  PrintSpreadLine("  layered load / whole load", t.layered_over_whole_load, 1,
                  "x");
}

int RunBenchTiers(const BenchTiersCommandOptions& options) {
  std::unique_ptr<ThreadPool> pool;
  bench::TierBenchOptions o = options.bench;
  if (Status s = ParseRunOptions(options.run, &pool, &o.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  Result<store::DiskTierOptions::DiskIo> io = ParseDiskIo(options.disk_io);
  if (!io.ok()) return Fail(io.status().message());
  o.disk_io = *io;
  Result<store::Codec> codec = ParseTierCodec(options.tier_codec);
  if (!codec.ok()) return Fail(codec.status().message());
  o.tier_codec = *codec;
  Result<size_t> chunk = ParseTierChunkBlocks(options.tier_chunk_blocks);
  if (!chunk.ok()) return Fail(chunk.status().message());
  o.chunk_blocks = *chunk;
  Result<std::optional<store::ObjectAuthenticator>> key =
      LoadTierKey(options.tier_key_file);
  if (!key.ok()) return Fail(key.status().message());
  Result<store::ObjectAuthenticator> ephemeral =
      store::ObjectAuthenticator::Ephemeral();
  if (!ephemeral.ok()) return Fail(ephemeral.status().message());
  o.tier_key = key->value_or(*ephemeral);
  if (options.tier_mac != "auto") {
    Result<store::MacAlgorithm> mac =
        store::ParseMacAlgorithm(options.tier_mac);
    if (!mac.ok()) return Fail("--tier-mac: " + mac.status().message());
    o.tier_key = o.tier_key.SealingWith(*mac);
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<bench::TierBenchResult> r =
      bench::RunTierBench(**model, *pool, o, PrintProgress);
  if (!r.ok()) return Fail(r.status().message());
  if (!options.plot.empty()) {
    if (Status st = PlotTiers(*r, o, options.plot); !st.ok()) {
      return Fail(st.message());
    }
  }
  if (options.json) {
    Json j = {{"model", options.model.model_path},
              {"threads", pool->NumWorkers()},
              {"prompt_tokens", o.prompt_tokens},
              {"tier_codec", store::CodecName(o.tier_codec)},
              {"tier_mac",
               std::string(store::MacAlgorithmName(o.tier_key.seal_with()))},
              {"tier_chunk_blocks", o.chunk_blocks},
              {"repeat", o.repeat},
              {"restore_bytes", r->restore_bytes},
              {"cold_ttft_s", SpreadJson(r->cold_ttft_s)}};
    if (r->disk.present) {
      j["disk"] = TierRowsJson(r->disk);
      j["decode_tokens_per_s_disk_off"] =
          SpreadJson(r->decode_off_tokens_per_s);
      j["decode_tokens_per_s_disk_on"] = SpreadJson(r->decode_on_tokens_per_s);
      j["decode_on_over_off"] = SpreadJson(r->decode_on_over_off);
    }
    if (r->redis.present) j["redis"] = TierRowsJson(r->redis);
    PrintJson(j);
    return 0;
  }
  std::printf(
      "model %s, %zu threads, %d runs, %d-token prompt (%s of KV), tier "
      "codec %s, %s chunks, MAC %s\n",
      options.model.model_path.c_str(), pool->NumWorkers(), o.repeat,
      o.prompt_tokens, HumanBytes(r->restore_bytes).c_str(),
      store::CodecName(o.tier_codec),
      o.chunk_blocks == 0 ? "automatic"
                          : (std::to_string(o.chunk_blocks) + "-block").c_str(),
      std::string(store::MacAlgorithmName(o.tier_key.seal_with())).c_str());
  PrintSpreadLine("cold TTFT", r->cold_ttft_s, 1e3, "ms");
  if (r->disk.present) PrintTierRows("disk", r->disk, o.suffix_tokens);
  if (r->redis.present) PrintTierRows("redis", r->redis, o.suffix_tokens);
  if (r->disk.present) {
    const std::string streams = std::to_string(o.streams) + " streams";
    PrintSpreadLine("decode, " + streams + ", disk tier off",
                    r->decode_off_tokens_per_s, 1, "tok/s");
    PrintSpreadLine("decode, " + streams + ", disk tier on",
                    r->decode_on_tokens_per_s, 1, "tok/s");
    PrintSpreadLine("decode on / off", r->decode_on_over_off, 1, "x");
  }
  return 0;
}

}  // namespace

Command RegisterBenchTiers(CLI::App& parent) {
  auto o = std::make_shared<BenchTiersCommandOptions>();
  bench::TierBenchOptions& b = o->bench;
  CLI::App* cmd = parent.add_subcommand(
      "tiers",
      "KV tier benchmark: restore throughput from disk and Redis against "
      "probes of the same media, warm vs cold TTFT, decode with write-behind "
      "on and off");
  AddModelFlags(cmd, &o->model);
  AddRunFlags(cmd, &o->run);
  cmd->add_option("--disk-cache", b.disk_dir,
                  "disk tier directory (none: no disk rows)");
  cmd->add_option("--disk-io", o->disk_io, "auto, direct or buffered");
  cmd->add_option("--redis", b.redis_url,
                  "redis://[USER:PASSWORD@]HOST:PORT[,...] "
                  "(none: no Redis rows)");
  cmd->add_option("--tier-key-file", o->tier_key_file,
                  "tier key secret (else KVSTASH_TIER_KEY, else a random key)");
  cmd->add_option("--tier-mac", o->tier_mac,
                  "MAC the tiers' objects are sealed with: auto (the faster "
                  "on this CPU), gmac-aes-256 or chacha20-poly1305");
  AddTierCodecFlag(cmd, &o->tier_codec);
  AddTierChunkFlag(cmd, &o->tier_chunk_blocks);
  cmd->add_option("--prompt-tokens", b.prompt_tokens,
                  "prompt restored from the tiers");
  cmd->add_option("--gen-tokens", b.gen_tokens, "tokens generated after it");
  cmd->add_option("--suffix-tokens", b.suffix_tokens,
                  "new tokens after the restored prompt for the suffix rows, "
                  "0 = none");
  cmd->add_option("--streams", b.streams,
                  "decode streams for the write-behind rows");
  cmd->add_option("--decode-tokens", b.decode_tokens,
                  "tokens per decode stream");
  cmd->add_option("--repeat", b.repeat, "runs");
  cmd->add_option("--plot", o->plot,
                  "also write an SVG chart of TTFT, cold and restored from "
                  "each tier, to this file");
  cmd->add_option("--block-tokens", b.block_tokens, "tokens per KV block");
  cmd->add_option("--kv-cache-mb", b.kv_cache_mb, "KV block pool in MiB");
  AddJsonFlag(cmd, &o->json);
  return {cmd, [o] { return RunBenchTiers(*o); }};
}

}  // namespace kvstash::apps
