#include "bench/tier_bench.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/check.h"
#include "bench/requests.h"
#include "kvcache/block_hash.h"
#include "kvcache/kv_manager.h"
#include "serve/scheduler.h"
#include "serve/stack.h"
#include "store/disk_probe.h"
#include "store/object_format.h"
#include "store/redis_probe.h"
#include "store/redis_tier.h"

namespace kvstash::bench {
namespace {

Status Validate(const TierBenchOptions& o, const Model& model) {
  if (o.disk_dir.empty() && o.redis_url.empty()) {
    return Status::InvalidArgument(
        "bench tiers: give a disk cache directory, a Redis URL, or both");
  }
  if (o.block_tokens < 1 || o.prompt_tokens < 2 * o.block_tokens + 1) {
    return Status::InvalidArgument(
        "bench tiers: prompt_tokens must cover at least two blocks");
  }
  if (o.suffix_tokens < 0) {
    return Status::InvalidArgument("bench tiers: suffix_tokens must be >= 0");
  }
  const int ctx = model.config().context_length;
  if (ctx > 0 &&
      o.prompt_tokens + std::max(o.gen_tokens, o.suffix_tokens + 1) > ctx) {
    return Status::InvalidArgument(
        "bench tiers: prompt_tokens + gen_tokens (or suffix_tokens + 1) "
        "exceeds the model's context of " +
        std::to_string(ctx));
  }
  if (o.gen_tokens < 1 || o.repeat < 1 || o.streams < 1 ||
      o.decode_tokens < 2 * o.block_tokens) {
    return Status::InvalidArgument(
        "bench tiers: need gen_tokens >= 1, repeat >= 1, streams >= 1 and "
        "decode_tokens >= two blocks");
  }
  return Status::OK();
}

// Per-run figures, summarized at the end.
struct TierSamples {
  std::vector<double> restore, again, probe, ratio, again_ratio, warm,
      cold_over_warm, mac_share, concurrent, shared, suffix, suffix_over_parts,
      restore_share, suffix_whole, layered_over_whole;
};

// Seconds to verify `objects` with `key`.
double VerifySeconds(const std::vector<std::vector<uint8_t>>& objects,
                     const store::ObjectAuthenticator& key) {
  const auto start = Clock::now();
  for (const std::vector<uint8_t>& o : objects) {
    KV_CHECK(key.Verify(o).ok());
  }
  return Seconds(start, Clock::now());
}

// The seconds verifying `blocks` one-block objects of `layout` with `key`
// takes beyond verifying their checksums alone, on this thread.
double MacSeconds(const kernels::BlockLayout& layout, uint64_t blocks,
                  const store::ObjectAuthenticator& key) {
  std::mt19937_64 rng(blocks);
  std::vector<std::vector<uint8_t>> objects;
  std::vector<uint8_t> payload(layout.block_bytes());
  for (uint64_t b = 0; b < blocks; ++b) {
    for (size_t i = 0; i < payload.size(); i += 8) {
      const uint64_t r = rng();
      std::memcpy(payload.data() + i, &r,
                  std::min<size_t>(8, payload.size() - i));
    }
    const Hash128 k{b, ~b};
    objects.push_back(store::EncodeObject(
        k, k, k, layout, uint32_t(layout.block_tokens), payload));
    key.Seal(objects.back());
  }
  return VerifySeconds(objects, key) -
         VerifySeconds(objects, store::ObjectAuthenticator());
}

class Bench {
 public:
  Bench(const Model& model, ThreadPool& pool, const TierBenchOptions& o,
        const BenchProgress& progress)
      : model_(model), pool_(pool), o_(o), progress_(progress) {
    const ModelConfig& c = model.config();
    layout_ = {c.n_layers, c.n_kv_heads, c.head_dim, o.block_tokens,
               o.kv_format};
  }

  Status OpenTiers() {
    if (!o_.disk_dir.empty()) {
      store::DiskTierOptions d;
      d.dir = o_.disk_dir;
      d.authenticator = o_.tier_key;
      d.io = o_.disk_io;
      d.capacity_bytes = uint64_t{64} << 30;
      KV_ASSIGN_OR_RETURN(disk_, store::DiskTier::Open(d));
      tiers_.push_back(disk_.get());
    }
    if (!o_.redis_url.empty()) {
      store::RedisTierOptions r;
      r.url = o_.redis_url;
      r.key_prefix = "kvstash-bench:";
      r.authenticator = o_.tier_key;
      KV_ASSIGN_OR_RETURN(redis_, store::RedisTier::Open(r));
      tiers_.push_back(redis_.get());
    }
    return Status::OK();
  }

  Result<TierBenchResult> Run();

 private:
  // A server over `tiers`, driven in-process.
  ServingStackOptions StackOptions(
      const std::vector<store::Tier*>& tiers) const {
    ServingStackOptions so;
    so.http = false;
    so.kv.layout = layout_;
    so.kv.capacity_bytes = o_.kv_cache_mb << 20;
    so.kv.tier_codec = o_.tier_codec;
    so.kv.chunk_blocks = o_.chunk_blocks;
    for (store::Tier* t : tiers) so.kv.tiers.push_back({t});
    so.scheduler.context = std::max({o_.prompt_tokens + o_.gen_tokens,
                                     o_.prompt_tokens + o_.suffix_tokens + 1,
                                     2 * o_.block_tokens + o_.decode_tokens}) +
                           1;
    return so;
  }

  Result<std::unique_ptr<kvcache::KvManager>> NewKv(
      const std::vector<store::Tier*>& tiers) const {
    return kvcache::KvManager::Create(StackOptions(tiers).kv);
  }

  Result<std::unique_ptr<ServingStack>> NewStack(
      const std::vector<store::Tier*>& tiers) const {
    return ServingStack::Create(model_, &pool_, StackOptions(tiers));
  }

  // One request on a fresh server over `tiers`.
  Result<bench::Run> Serve(const std::vector<store::Tier*>& tiers,
                           GenerationRequest request) {
    KV_ASSIGN_OR_RETURN(std::unique_ptr<ServingStack> s, NewStack(tiers));
    return RunOne(s->scheduler(), std::move(request));
  }

  // `n` restores of `prompt` (salted `salt`) from `tier` run at once, each
  // into a fresh KV manager, or all into one (`one_pool`): their wall time,
  // and the tokens each found (loaded, or mapped from another's load).
  struct Restores {
    double seconds = 0;
    int tokens = 0;
  };
  Result<Restores> RestoreAtOnce(store::Tier* tier,
                                 const std::vector<int32_t>& prompt,
                                 const std::string& salt, int n,
                                 bool one_pool = false) const;

  // Restore throughput and warm TTFT of `prompt` (salted `salt`) from `tier`.
  // The suffix rows of `tier` (TierRows::suffix_over_parts), given the time
  // one restore of the prompt took.
  Status MeasureSuffix(store::Tier* tier, const std::vector<int32_t>& prompt,
                       const std::string& salt, double restore_seconds,
                       Prompts& prompts, TierSamples* out);
  Status MeasureTier(store::Tier* tier, const std::vector<int32_t>& prompt,
                     const std::string& salt, double cold_ttft,
                     Prompts& prompts, TierSamples* out,
                     uint64_t* restore_bytes);

  // Aggregate decode tokens/s of o_.streams streams on a fresh server.
  Result<double> Decode(const std::vector<store::Tier*>& tiers,
                        Prompts& prompts, const std::string& salt);

  const Model& model_;
  ThreadPool& pool_;
  const TierBenchOptions& o_;
  const BenchProgress& progress_;
  kernels::BlockLayout layout_;
  std::unique_ptr<store::DiskTier> disk_;
  std::unique_ptr<store::RedisTier> redis_;
  std::vector<store::Tier*> tiers_;  // disk first
};

Result<Bench::Restores> Bench::RestoreAtOnce(store::Tier* tier,
                                             const std::vector<int32_t>& prompt,
                                             const std::string& salt, int n,
                                             bool one_pool) const {
  std::vector<std::unique_ptr<kvcache::KvManager>> kvs;
  for (int i = 0; i < (one_pool ? 1 : n); ++i) {
    KV_ASSIGN_OR_RETURN(kvs.emplace_back(), NewKv({tier}));
  }
  const Hash128 root =
      kvcache::RootHash(model_.identity(), layout_, kvs[0]->tier_codec(), salt);
  std::vector<int> loaded(size_t(n), 0);
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      const kvcache::PrefixHit hit =
          kvs[one_pool ? 0 : size_t(i)]->Prefetch(prompt, root);
      loaded[size_t(i)] = hit.total();
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds = Seconds(start, Clock::now());
  if (loaded[0] == 0) {
    return Status::Internal("bench tiers: the " + std::string(tier->name()) +
                            " tier returned nothing of the prompt");
  }
  for (const int l : loaded) {
    if (l != loaded[0]) {
      return Status::Internal("bench tiers: concurrent restores from the " +
                              std::string(tier->name()) +
                              " tier loaded different lengths");
    }
  }
  return Restores{seconds, loaded[0]};
}

Status Bench::MeasureSuffix(store::Tier* tier,
                            const std::vector<int32_t>& prompt,
                            const std::string& salt, double restore_seconds,
                            Prompts& prompts, TierSamples* out) {
  // The prompt with a new suffix each time (it is never cached).
  auto request = [&] {
    std::vector<int32_t> p = prompt;
    const std::vector<int32_t> suffix = prompts.Random(o_.suffix_tokens + 1);
    p.insert(p.end(), suffix.begin() + 1, suffix.end());  // without its BOS
    GenerationRequest r = Greedy(std::move(p), 1);
    r.cache_salt = salt;
    return r;
  };
  // From the tier on a fresh server, layered or after the whole load; then
  // (layered's server) from DRAM.
  double layered = 0, whole = 0, dram = 0;
  bool layered_applied = false;
  const bool layered_first = out->suffix.size() % 2 == 1;  // alternating
  for (const bool layered_loads : {layered_first, !layered_first}) {
    ServingStackOptions so = StackOptions({tier});
    so.scheduler.layered_loads = layered_loads;
    KV_ASSIGN_OR_RETURN(std::unique_ptr<ServingStack> stack,
                        ServingStack::Create(model_, &pool_, so));
    KV_ASSIGN_OR_RETURN(bench::Run run, RunOne(stack->scheduler(), request()));
    (layered_loads ? layered : whole) = run.ttft();
    if (layered_loads) {
      // Not with a tier codec other than raw: its objects decode whole.
      layered_applied = stack->kv().Stats().layered_loads > 0;
      KV_ASSIGN_OR_RETURN(bench::Run again,
                          RunOne(stack->scheduler(), request()));
      dram = again.ttft();
    }
  }
  out->suffix.push_back(layered);
  out->suffix_over_parts.push_back(layered / (restore_seconds + dram));
  out->restore_share.push_back(restore_seconds / (restore_seconds + dram));
  if (layered_applied) {
    out->suffix_whole.push_back(whole);
    out->layered_over_whole.push_back(layered / whole);
  }
  return Status::OK();
}

Status Bench::MeasureTier(store::Tier* tier, const std::vector<int32_t>& prompt,
                          const std::string& salt, double cold_ttft,
                          Prompts& prompts, TierSamples* out,
                          uint64_t* restore_bytes) {
  uint64_t blocks = 0;  // restored by one restore
  {
    KV_ASSIGN_OR_RETURN(const Restores one,
                        RestoreAtOnce(tier, prompt, salt, 1));
    blocks = uint64_t(one.tokens / o_.block_tokens);
    *restore_bytes = blocks * layout_.block_bytes();
    out->restore.push_back(double(*restore_bytes) / one.seconds);
    out->mac_share.push_back(MacSeconds(layout_, blocks, o_.tier_key) /
                             one.seconds);
    KV_ASSIGN_OR_RETURN(const Restores again,
                        RestoreAtOnce(tier, prompt, salt, 1));
    out->again.push_back(double(*restore_bytes) / again.seconds);
    KV_ASSIGN_OR_RETURN(const Restores many,
                        RestoreAtOnce(tier, prompt, salt, kConcurrentRestores));
    out->concurrent.push_back(many.seconds / one.seconds);
    KV_ASSIGN_OR_RETURN(
        const Restores shared,
        RestoreAtOnce(tier, prompt, salt, kConcurrentRestores, true));
    out->shared.push_back(shared.seconds / one.seconds);
    if (o_.suffix_tokens > 0) {
      KV_RETURN_IF_ERROR(
          MeasureSuffix(tier, prompt, salt, one.seconds, prompts, out));
    }
  }
  GenerationRequest r = Greedy(prompt, o_.gen_tokens);
  r.cache_salt = salt;
  KV_ASSIGN_OR_RETURN(bench::Run warm, Serve({tier}, std::move(r)));
  out->warm.push_back(warm.ttft());
  out->cold_over_warm.push_back(cold_ttft / warm.ttft());
  // The probe last: it writes and deletes as many bytes as the restore read,
  // which keeps the medium busy for a while after it (a redis-server frees
  // and purges the values; a restore run right after a Redis probe took up
  // to 3x as long), and the next run starts with a cold prefill.
  double probe = 0;
  if (tier == disk_.get()) {
    KV_ASSIGN_OR_RETURN(
        store::DiskProbeResult p,
        store::DirectSequentialReadProbe(o_.disk_dir, *restore_bytes));
    probe = p.bytes_per_second;
  } else {
    // Values of the size of the objects the restore reads (chunks).
    const uint64_t chunk = std::min<uint64_t>(
        o_.chunk_blocks > 0 ? o_.chunk_blocks
                            : kvcache::AutoChunkBlocks(layout_),
        blocks);
    KV_ASSIGN_OR_RETURN(
        probe, store::PipelinedGetProbe(
                   o_.redis_url,
                   chunk * layout_.block_bytes() + store::kObjectHeaderBytes,
                   int((blocks + chunk - 1) / chunk)));
  }
  out->probe.push_back(probe);
  out->ratio.push_back(out->restore.back() / probe);
  out->again_ratio.push_back(out->again.back() / probe);
  progress_("  " + std::string(tier->name()) + ": restore " +
            std::to_string(out->restore.back() / 1e9) + " GB/s, again " +
            std::to_string(out->again.back() / 1e9) + " GB/s (probe " +
            std::to_string(out->probe.back() / 1e9) + " GB/s), warm TTFT " +
            std::to_string(warm.ttft()) + " s, " +
            std::to_string(warm.finish.usage.cached_tokens) + " tokens cached");
  return Status::OK();
}

Result<double> Bench::Decode(const std::vector<store::Tier*>& tiers,
                             Prompts& prompts, const std::string& salt) {
  KV_ASSIGN_OR_RETURN(std::unique_ptr<ServingStack> stack, NewStack(tiers));
  Scheduler& s = stack->scheduler();
  std::vector<bench::Run> runs(size_t(o_.streams));
  // One waiting thread per stream: the streams decode together.
  std::vector<std::thread> waiters;
  std::vector<Status> errors(size_t(o_.streams));
  for (int i = 0; i < o_.streams; ++i) {
    GenerationRequest r =
        Greedy(prompts.Random(2 * o_.block_tokens), o_.decode_tokens);
    r.cache_salt = salt;
    waiters.emplace_back([&, i, r = std::move(r)]() mutable {
      Result<bench::Run> run = RunOne(s, std::move(r));
      if (run.ok()) {
        runs[size_t(i)] = std::move(*run);
      } else {
        errors[size_t(i)] = run.status();
      }
    });
  }
  for (std::thread& t : waiters) t.join();
  for (const Status& e : errors) KV_RETURN_IF_ERROR(e);
  if (!tiers.empty()) tiers[0]->Flush();
  return AggregateDecodeRate(runs);
}

Result<TierBenchResult> Bench::Run() {
  KV_RETURN_IF_ERROR(OpenTiers());
  TierBenchResult result;
  result.disk.present = disk_ != nullptr;
  result.redis.present = redis_ != nullptr;
  if (disk_) result.disk.mode = std::string(disk_->io_mode());
  if (redis_) result.redis.mode = redis_->Describe();
  // A fresh namespace per run and per invocation: the disk cache keeps what
  // earlier invocations wrote, and "cold" must be cold.
  const uint64_t nonce = std::random_device{}();
  Prompts prompts(model_, o_.seed);
  std::vector<double> cold;
  TierSamples disk, redis;
  for (int r = 0; r < o_.repeat; ++r) {
    const std::string salt =
        "tier-bench " + std::to_string(nonce) + "/" + std::to_string(r);
    const std::vector<int32_t> prompt = prompts.Random(o_.prompt_tokens);
    GenerationRequest req = Greedy(prompt, o_.gen_tokens);
    req.cache_salt = salt;
    KV_ASSIGN_OR_RETURN(bench::Run c, Serve(tiers_, std::move(req)));
    for (store::Tier* t : tiers_) t->Flush();
    cold.push_back(c.ttft());
    progress_("run " + std::to_string(r + 1) + "/" + std::to_string(o_.repeat) +
              ": cold TTFT " + std::to_string(c.ttft()) + " s (" +
              std::to_string(o_.prompt_tokens) + " tokens)");
    if (disk_) {
      KV_RETURN_IF_ERROR(MeasureTier(disk_.get(), prompt, salt, cold.back(),
                                     prompts, &disk, &result.restore_bytes));
    }
    if (redis_) {
      KV_RETURN_IF_ERROR(MeasureTier(redis_.get(), prompt, salt, cold.back(),
                                     prompts, &redis, &result.restore_bytes));
    }
  }
  result.cold_ttft_s = SpreadOf(cold);
  auto summarize = [](const TierSamples& s, TierRows* rows) {
    rows->restore_bytes_per_s = SpreadOf(s.restore);
    rows->probe_bytes_per_s = SpreadOf(s.probe);
    rows->restore_over_probe = SpreadOf(s.ratio);
    rows->again_bytes_per_s = SpreadOf(s.again);
    rows->again_over_probe = SpreadOf(s.again_ratio);
    rows->mac_share_of_restore = SpreadOf(s.mac_share);
    rows->concurrent_over_one = SpreadOf(s.concurrent);
    rows->shared_over_one = SpreadOf(s.shared);
    rows->warm_ttft_s = SpreadOf(s.warm);
    rows->cold_over_warm_ttft = SpreadOf(s.cold_over_warm);
    if (!s.suffix.empty()) {
      rows->suffix_ttft_s = SpreadOf(s.suffix);
      rows->suffix_over_parts = SpreadOf(s.suffix_over_parts);
      rows->restore_share_of_parts = SpreadOf(s.restore_share);
    }
    if (!s.layered_over_whole.empty()) {
      rows->suffix_whole_load_ttft_s = SpreadOf(s.suffix_whole);
      rows->layered_over_whole_load = SpreadOf(s.layered_over_whole);
    }
  };
  if (disk_) summarize(disk, &result.disk);
  if (redis_) summarize(redis, &result.redis);

  if (disk_) {
    std::vector<double> off, on, ratio;
    for (int r = 0; r < o_.repeat; ++r) {
      const std::string salt = "tier-bench decode " + std::to_string(nonce) +
                               "/" + std::to_string(r);
      double rate[2];
      // Alternate which goes first, so drift hits both alike.
      for (int k = 0; k < 2; ++k) {
        const bool with_disk = (k + r) % 2 == 0;
        KV_ASSIGN_OR_RETURN(
            rate[with_disk],
            Decode(with_disk ? std::vector<store::Tier*>{disk_.get()}
                             : std::vector<store::Tier*>{},
                   prompts, salt + (with_disk ? " on" : " off")));
      }
      off.push_back(rate[0]);
      on.push_back(rate[1]);
      ratio.push_back(rate[1] / rate[0]);
      progress_("decode run " + std::to_string(r + 1) + ": " +
                std::to_string(rate[1]) +
                " tok/s with the disk "
                "tier, " +
                std::to_string(rate[0]) + " without");
    }
    result.decode_off_tokens_per_s = SpreadOf(off);
    result.decode_on_tokens_per_s = SpreadOf(on);
    result.decode_on_over_off = SpreadOf(ratio);
  }
  return result;
}

}  // namespace

Result<TierBenchResult> RunTierBench(const Model& model, ThreadPool& pool,
                                     const TierBenchOptions& options,
                                     const BenchProgress& progress) {
  KV_RETURN_IF_ERROR(Validate(options, model));
  Bench bench(model, pool, options, progress);
  return bench.Run();
}

}  // namespace kvstash::bench
