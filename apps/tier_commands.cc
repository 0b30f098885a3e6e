// `kvstash bench tiers`, `kvstash bench codec` and `kvstash cache
// stats|verify|clear|rekey`: the KV tiers and their codecs measured, and a
// disk cache inspected or emptied.
#include <cstdio>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "apps/tiers.h"
#include "base/file.h"
#include "bench/codec_bench.h"
#include "bench/tier_bench.h"
#include "store/disk_cache_admin.h"

namespace kvstash::apps {
namespace {

Json TierRowsJson(const bench::TierRows& t) {
  return {{"mode", t.mode},
          {"restore_bytes_per_s", SpreadJson(t.restore_bytes_per_s)},
          {"probe_bytes_per_s", SpreadJson(t.probe_bytes_per_s)},
          {"restore_over_probe", SpreadJson(t.restore_over_probe)},
          {"mac_share_of_restore", SpreadJson(t.mac_share_of_restore)},
          {"concurrent_restores", bench::kConcurrentRestores},
          {"concurrent_over_one", SpreadJson(t.concurrent_over_one)},
          {"warm_ttft_s", SpreadJson(t.warm_ttft_s)},
          {"cold_over_warm_ttft", SpreadJson(t.cold_over_warm_ttft)},
          {"suffix_ttft_s", SpreadJson(t.suffix_ttft_s)},
          {"suffix_over_parts", SpreadJson(t.suffix_over_parts)}};
}

void PrintTierRows(const std::string& name, const bench::TierRows& t) {
  std::printf("%s tier: %s\n", name.c_str(), t.mode.c_str());
  PrintSpreadLine("  restore throughput", t.restore_bytes_per_s, 1e-9, "GB/s");
  PrintSpreadLine("  probe of the same medium", t.probe_bytes_per_s, 1e-9,
                  "GB/s");
  PrintSpreadLine("  restore / probe", t.restore_over_probe, 1, "x");
  PrintSpreadLine("  MAC share of restore", t.mac_share_of_restore, 1, "x");
  PrintSpreadLine("  " + std::to_string(bench::kConcurrentRestores) +
                      " restores at once / one",
                  t.concurrent_over_one, 1, "x");
  PrintSpreadLine("  warm TTFT", t.warm_ttft_s, 1e3, "ms");
  PrintSpreadLine("  cold TTFT / warm TTFT", t.cold_over_warm_ttft, 1, "x");
  PrintSpreadLine("  TTFT, prompt restored + suffix computed", t.suffix_ttft_s,
                  1e3, "ms");
  PrintSpreadLine("  that / (restore alone + suffix alone)",
                  t.suffix_over_parts, 1, "x");
}

Json ReportJson(const store::DiskCacheReport& r) {
  Json namespaces = Json::array();
  for (const store::DiskCacheNamespace& n : r.namespaces) {
    namespaces.push_back({{"fingerprint", n.fingerprint},
                          {"objects", n.objects},
                          {"bytes", n.bytes},
                          {"tokens", n.tokens}});
  }
  Json bad = Json::array();
  for (const store::DiskCacheBadFile& b : r.bad) {
    bad.push_back({{"path", b.path}, {"reason", b.reason}});
  }
  return {{"dir", r.dir},
          {"objects", r.objects},
          {"bytes", r.bytes},
          {"temp_files", r.temp_files},
          {"temp_bytes", r.temp_bytes},
          {"namespaces", namespaces},
          {"verified", r.verified},
          {"authenticated", r.authenticated},
          {"forged", r.forged},
          {"bad", bad},
          {"removed_files", r.removed_files},
          {"removed_bytes", r.removed_bytes},
          {"key_removed", r.key_removed}};
}

void PrintReport(const store::DiskCacheReport& r) {
  std::printf("%s: %llu objects, %s", r.dir.c_str(),
              static_cast<unsigned long long>(r.objects),
              HumanBytes(r.bytes).c_str());
  if (r.temp_files > 0) {
    std::printf(", %llu temporary files (%s)",
                static_cast<unsigned long long>(r.temp_files),
                HumanBytes(r.temp_bytes).c_str());
  }
  std::printf("\n");
  for (const store::DiskCacheNamespace& n : r.namespaces) {
    std::printf(
        "  namespace %s: %llu objects, %llu tokens, %s\n",
        n.fingerprint.c_str(), static_cast<unsigned long long>(n.objects),
        static_cast<unsigned long long>(n.tokens), HumanBytes(n.bytes).c_str());
  }
  for (const store::DiskCacheBadFile& b : r.bad) {
    std::printf("  bad: %s: %s\n", b.path.c_str(), b.reason.c_str());
  }
  if (r.verified) {
    std::printf(
        "verified every object (%s): %zu bad, %llu of them forged\n",
        r.authenticated ? "MACs and checksums" : "checksums only: no tier key",
        r.bad.size(), static_cast<unsigned long long>(r.forged));
  }
  if (r.key_removed) {
    std::printf(
        "removed the directory's TIER_KEY: a new one is made at the "
        "next start without --tier-key-file\n");
  }
  if (r.removed_files > 0) {
    std::printf("removed %llu files (%s)\n",
                static_cast<unsigned long long>(r.removed_files),
                HumanBytes(r.removed_bytes).c_str());
  }
}

}  // namespace

int RunCache(const CacheCommandOptions& options) {
  Result<std::optional<store::ObjectAuthenticator>> key =
      LoadTierKey(options.tier_key_file);
  if (!key.ok()) return Fail(key.status().message());
  const bool clear = options.action == "clear" || options.action == "rekey";
  Result<store::DiskCacheReport> report =
      clear ? store::ClearDiskCache(options.dir, options.action == "rekey")
            : store::ScanDiskCache(options.dir, options.action == "verify",
                                   options.remove_bad, *key);
  if (!report.ok()) return Fail(report.status().message());
  if (options.json) {
    PrintJson(ReportJson(*report));
  } else {
    PrintReport(*report);
  }
  // verify fails (exit 1) when bad objects remain.
  const bool bad_left = !report->bad.empty() &&
                        !(options.remove_bad && options.action == "verify");
  return options.action == "verify" && bad_left ? 1 : 0;
}

int RunBenchTiers(const BenchTiersCommandOptions& options) {
  std::unique_ptr<ThreadPool> pool;
  bench::TierBenchOptions o;
  if (Status s = ParseRunOptions(options.run, &pool, &o.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  Result<store::DiskTierOptions::DiskIo> io = ParseDiskIo(options.disk_io);
  if (!io.ok()) return Fail(io.status().message());
  o.disk_io = *io;
  o.disk_dir = options.disk_cache;
  o.redis_url = options.redis;
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
  o.prompt_tokens = options.prompt_tokens;
  o.gen_tokens = options.gen_tokens;
  o.suffix_tokens = options.suffix_tokens;
  o.streams = options.streams;
  o.decode_tokens = options.decode_tokens;
  o.repeat = options.repeat;
  o.block_tokens = options.block_tokens;
  o.kv_cache_mb = options.kv_cache_mb;
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<bench::TierBenchResult> r =
      bench::RunTierBench(**model, *pool, o, PrintProgress);
  if (!r.ok()) return Fail(r.status().message());
  if (options.json) {
    Json j = {{"model", options.model.model_path},
              {"threads", pool->NumWorkers()},
              {"prompt_tokens", o.prompt_tokens},
              {"tier_codec", store::CodecName(o.tier_codec)},
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
      "codec %s, %zu-block chunks\n",
      options.model.model_path.c_str(), pool->NumWorkers(), o.repeat,
      o.prompt_tokens, HumanBytes(r->restore_bytes).c_str(),
      store::CodecName(o.tier_codec), o.chunk_blocks);
  PrintSpreadLine("cold TTFT", r->cold_ttft_s, 1e3, "ms");
  if (r->disk.present) PrintTierRows("disk", r->disk);
  if (r->redis.present) PrintTierRows("redis", r->redis);
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

int RunBenchCodec(const BenchCodecCommandOptions& options) {
  std::unique_ptr<ThreadPool> pool;
  bench::CodecBenchOptions o;
  if (Status s = ParseRunOptions(options.run, &pool, &o.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  o.prompt_tokens = options.prompt_tokens;
  o.object_blocks = options.object_blocks;
  o.block_tokens = options.block_tokens;
  o.repeat = options.repeat;
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

}  // namespace kvstash::apps
