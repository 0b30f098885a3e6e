// End-to-end tests of the KV tiers under the scheduler, on the real
// stories260K model with real files and real redis-server processes: a
// prefix computed once is loaded, not recomputed, after a restart, by
// another server, and after crashes; damaged objects, a full disk and a dead
// Redis only cost recomputation. In every case the greedy output equals the
// prompt computed alone on a cold cache. The restart tests run in every KV
// type, and blocks of one type are never loaded as another's.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "compress/policy.h"
#include "engine/generate.h"
#include "kvcache/block_hash.h"
#include "kvcache/kv_manager.h"
#include "serve/scheduler.h"
#include "serve/stack.h"
#include "store/disk_cache_admin.h"
#include "store/disk_tier.h"
#include "store/kv_codec.h"
#include "store/object_format.h"
#include "store/object_mac.h"
#include "store/object_testing.h"
#include "store/redis_tier.h"
#include "tests/testing/forwarding_tier.h"
#include "tests/testing/redis_server.h"
#include "tests/testing/stories.h"

namespace kvstash {
namespace {

namespace fs = std::filesystem;
using testing::Collect;
using testing::Greedy;
using testing::Outcome;

constexpr int kBlockTokens = 16;

// One server's cache and scheduler (a ServingStack without HTTP) over
// tiers it does not own.
struct Stack {
  std::unique_ptr<ServingStack> stack;
  kvcache::KvManager* kv = nullptr;  // the stack's
  Scheduler* scheduler = nullptr;    // the stack's

  Outcome Run(std::vector<int32_t> prompt, int max_tokens,
              std::string salt = "") {
    return Run(Greedy(std::move(prompt), max_tokens, std::move(salt)));
  }
  Outcome Run(const GenerationRequest& request) {
    auto handle = scheduler->Submit(request);
    KV_CHECK_MSG(handle.ok(), handle.status().ToString().c_str());
    return Collect(**handle);
  }
  // Stops the server: the scheduler, then the cache (which queues what is
  // left to write behind).
  void Stop() {
    stack.reset();
    kv = nullptr;
    scheduler = nullptr;
  }
};

class TiersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::LoadStories();
    story_ = testing::StoryTokens(*model_);
  }

  kernels::BlockLayout Layout(kernels::KvFormat kv = {}) const {
    const ModelConfig& c = model_->config();
    return {c.n_layers, c.n_kv_heads, c.head_dim, kBlockTokens, kv};
  }

  // A stack whose DRAM pool holds `blocks` blocks of `kv`, over `tiers` (in
  // order).
  Stack NewStack(std::vector<store::Tier*> tiers, size_t blocks = 512,
                 kernels::KvFormat kv = {},
                 store::Codec codec = store::Codec::kRaw,
                 size_t chunk_blocks = 0) {
    ServingStackOptions o;
    o.http = false;
    o.kv.layout = Layout(kv);
    o.kv.tier_codec = codec;
    o.kv.chunk_blocks = chunk_blocks;
    o.kv.capacity_bytes = blocks * o.kv.layout.block_bytes();
    o.kv.prefault = false;
    // Layered loads read one layer per group: every layer's gate is used.
    o.kv.layered_range_bytes = 1;
    for (store::Tier* t : tiers) o.kv.tiers.push_back({t});
    o.scheduler = SchedulerOptions{};  // a context of 2048
    Stack s;
    s.stack = std::move(ServingStack::Create(*model_, nullptr, o)).value();
    s.kv = &s.stack->kv();
    s.scheduler = &s.stack->scheduler();
    return s;
  }

  std::unique_ptr<store::DiskTier> OpenDisk(const std::string& dir,
                                            uint64_t capacity = 1ull << 30) {
    store::DiskTierOptions o;
    o.dir = dir;
    o.capacity_bytes = capacity;
    auto disk = store::DiskTier::Open(o);
    KV_CHECK_MSG(disk.ok(), disk.status().ToString().c_str());
    return std::move(disk).value();
  }

  // A disk tier over `dir` after a server over it computed `prompt` and
  // stored its blocks there: what a restarted server finds.
  std::unique_ptr<store::DiskTier> DiskHolding(const std::string& dir,
                                               std::vector<int32_t> prompt,
                                               kernels::KvFormat kv = {}) {
    {
      auto disk = OpenDisk(dir);
      Stack a = NewStack({disk.get()}, 512, kv);
      a.Run(std::move(prompt), 4);
    }
    return OpenDisk(dir);
  }

  // A Redis tier of this test's fleet (every server shares its key).
  std::unique_ptr<store::RedisTier> OpenRedis(const std::string& url) {
    store::RedisTierOptions o;
    o.url = url;
    o.authenticator = FleetKey();
    o.connect_timeout = std::chrono::milliseconds(100);
    o.command_timeout = std::chrono::milliseconds(300);
    o.min_backoff = std::chrono::milliseconds(20);
    o.max_backoff = std::chrono::milliseconds(200);
    auto redis = store::RedisTier::Open(o);
    KV_CHECK_MSG(redis.ok(), redis.status().ToString().c_str());
    return std::move(redis).value();
  }

  static const store::ObjectAuthenticator& FleetKey() {
    static const store::ObjectAuthenticator key =
        store::ObjectAuthenticator::FromSecret(
            "the tier key of the tiers test fleet")
            .value();
    return key;
  }

  // BOS + n story tokens from `begin`.
  std::vector<int32_t> Prompt(size_t begin, size_t n) const {
    std::vector<int32_t> p = {model_->tokenizer().bos()};
    p.insert(p.end(), story_.begin() + begin, story_.begin() + begin + n);
    return p;
  }

  // The greedy output of `prompt` computed alone with K/V in `kv`.
  const std::vector<int32_t>& Alone(const std::vector<int32_t>& prompt,
                                    int max_tokens, kernels::KvFormat kv = {}) {
    std::unique_ptr<testing::AloneReference>& a =
        alone_[{uint8_t(kv.k), uint8_t(kv.v)}];
    if (a == nullptr) {
      a = std::make_unique<testing::AloneReference>(*model_, kv);
    }
    return a->Get(prompt, max_tokens);
  }

  // The greedy output of `prompt` computed alone after its prefix went
  // through `codec`'s round trip in objects of `chunk_blocks` blocks, as a
  // server restoring it from a tier computes it.
  std::vector<int32_t> Restored(const std::vector<int32_t>& prompt,
                                int max_tokens, store::Codec codec,
                                int chunk_blocks) {
    Transformer tf(*model_);
    GenerateOptions o;
    o.n_predict = max_tokens;
    o.sampling.temperature = 0;
    o.prefix_chunk_blocks = chunk_blocks;
    const kernels::BlockLayout layout = Layout();
    o.prefix_transform = [&](std::span<uint8_t* const> blocks) {
      return store::RoundTrip(codec, layout, blocks);
    };
    std::vector<int32_t> out;
    const Status s = Generate(tf, prompt, o, [&](int32_t t) {
                       if (t != model_->tokenizer().eos()) out.push_back(t);
                       return true;
                     }).status();
    KV_CHECK_MSG(s.ok(), s.ToString().c_str());
    return out;
  }

  // A greedy request: `document` followed by a question (4 story tokens
  // from `question`: a short one leaves the answer to the document, so how
  // it was compressed shows in the output), its document (kv_context)
  // compressed under `policy`.
  GenerationRequest Ask(const std::vector<int32_t>& document, size_t question,
                        const compress::PolicyOptions& policy,
                        int max_tokens = 8) const {
    GenerationRequest r = Greedy(document, max_tokens);
    r.prompt.insert(r.prompt.end(), story_.begin() + ptrdiff_t(question),
                    story_.begin() + ptrdiff_t(question + 4));
    r.stop_at_eos = false;
    r.kv_compression = policy;
    r.kv_context = int(document.size());
    return r;
  }

  // The greedy output of `r` on a fresh server without tiers: what it
  // computes cold (its document compressed, nothing mapped).
  std::vector<int32_t> Cold(const GenerationRequest& r) {
    Stack s = NewStack({});
    const Outcome out = s.Run(r);
    EXPECT_EQ(out.finish.usage.cached_tokens, 0);
    EXPECT_NE(out.finish.usage.kv_cache, "mapped");
    return out.tokens;
  }

  // Tokens of the full blocks before the last token of `prompt`: what a
  // tier can serve of it.
  static int Loadable(const std::vector<int32_t>& prompt) {
    return int(prompt.size() - 1) / kBlockTokens * kBlockTokens;
  }

  std::unique_ptr<Model> model_;
  std::vector<int32_t> story_;
  std::map<std::pair<uint8_t, uint8_t>,
           std::unique_ptr<testing::AloneReference>>
      alone_;
};

// The tests that run in every KV format.
class TiersKvTypeTest
    : public TiersTest,
      public ::testing::WithParamInterface<kernels::KvFormat> {
 protected:
  kernels::KvFormat kv() const { return GetParam(); }
  std::string Dir(const std::string& name) const {
    return testing::TempDir(name + "_" + testing::KvFormatTestName(kv()));
  }
};

INSTANTIATE_TEST_SUITE_P(KvTypes, TiersKvTypeTest,
                         ::testing::ValuesIn(testing::AllKvFormats()),
                         [](const auto& info) {
                           return testing::KvFormatTestName(info.param);
                         });

TEST_P(TiersKvTypeTest, RestartLoadsThePrefixFromDisk) {
  const std::string dir = Dir("restart");
  const std::vector<int32_t> prompt = Prompt(0, 299);  // 300 tokens
  std::vector<int32_t> cold_tokens;
  {
    auto disk = OpenDisk(dir);
    Stack a = NewStack({disk.get()}, 512, kv());
    Outcome cold = a.Run(prompt, 12);
    EXPECT_EQ(cold.finish.usage.cached_tokens, 0);
    cold_tokens = cold.tokens;
  }  // A stops; the disk tier stores its queue and unlocks
  EXPECT_EQ(cold_tokens, Alone(prompt, 12, kv()));

  auto disk = OpenDisk(dir);
  Stack b = NewStack({disk.get()}, 512, kv());
  EXPECT_EQ(b.scheduler->CachedPrefix(prompt, "").tier_tokens[0],
            int(prompt.size()) / kBlockTokens * kBlockTokens);  // full blocks
  Outcome warm = b.Run(prompt, 12);
  EXPECT_EQ(warm.finish.usage.cached_tokens, Loadable(prompt));
  ASSERT_EQ(warm.finish.usage.tier_cached_tokens.size(), 1u);
  EXPECT_EQ(warm.finish.usage.tier_cached_tokens[0], Loadable(prompt));
  EXPECT_EQ(warm.tokens, cold_tokens);
  EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks,
            uint64_t(Loadable(prompt) / kBlockTokens));
  // Its suffix was computed while the prefix loaded, layer by layer.
  EXPECT_EQ(b.kv->Stats().layered_loads, 1u);
  EXPECT_EQ(b.kv->Stats().layered_load_failures, 0u);

  // The same prompt again is a DRAM hit; another tenant's salt (a different
  // namespace fingerprint) shares nothing with what is on disk.
  Outcome dram = b.Run(prompt, 12);
  EXPECT_EQ(dram.finish.usage.cached_tokens, Loadable(prompt));
  EXPECT_EQ(dram.finish.usage.tier_cached_tokens[0], 0);
  Outcome other = b.Run(prompt, 12, "other tenant");
  EXPECT_EQ(other.finish.usage.cached_tokens, 0);
  EXPECT_EQ(other.tokens, cold_tokens);
  // A prompt ending on a boundary of the loaded blocks: its last block is
  // copied on write, or dropped and recomputed for KIVI types.
  const std::vector<int32_t> aligned = Prompt(0, 287);  // 288 tokens
  Outcome edge = b.Run(aligned, 5);
  EXPECT_EQ(edge.finish.usage.cached_tokens,
            kernels::KvHasResidual(kv()) ? 288 - kBlockTokens : 287);
  EXPECT_EQ(edge.tokens, Alone(aligned, 5, kv()));
  EXPECT_TRUE(b.kv->Validate({}).ok());
}

// A layered load gives the request its blocks at once: the request is
// admitted and its suffix's blocks reserved while the prefix's later layers
// are still being read (their read held here), and the output is the cold
// one once the load is let through.
TEST_F(TiersTest, TheSuffixIsComputedWhileThePrefixLoads) {
  const std::string dir = testing::TempDir("layered");
  const std::vector<int32_t> head = Prompt(3000, 160);
  const std::vector<int32_t> longer = Prompt(3000, 250);
  auto disk = DiskHolding(dir, head);
  testing::SteppedTier stepped(disk.get(), /*free_calls=*/1);
  Stack b = NewStack({&stepped});
  std::shared_ptr<RequestHandle> handle =
      b.scheduler->Submit(Greedy(longer, 4)).value();
  stepped.AwaitCalls(2);  // layer 1's read waits
  const int head_blocks = int(head.size()) / kBlockTokens;
  const int all_blocks = (int(longer.size()) + kBlockTokens - 1) / kBlockTokens;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (b.kv->Stats().used_blocks < size_t(all_blocks) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // The loaded blocks and those of the suffix, held by the running request.
  EXPECT_EQ(b.kv->Stats().used_blocks, size_t(all_blocks));
  EXPECT_EQ(stepped.calls().size(), 2u);
  stepped.Open();
  const Outcome out = Collect(*handle);
  EXPECT_EQ(out.tokens, Alone(longer, 4));
  EXPECT_EQ(out.finish.usage.tier_cached_tokens[0], head_blocks * kBlockTokens);
  EXPECT_EQ(b.kv->Stats().layered_loads, 1u);
  EXPECT_EQ(stepped.calls().size(), size_t(model_->config().n_layers));
}

// A request whose prefix is still loading joins no step with others, so a
// request that is decoding does not wait for that load: it finishes all its
// tokens while the load is held after its first layer, and the loading
// request is admitted once nothing else runs, with the cold output.
TEST_F(TiersTest, DecodesDoNotWaitForAnotherRequestsLoad) {
  const std::string dir = testing::TempDir("layered_decodes");
  const std::vector<int32_t> head = Prompt(3300, 160);
  const std::vector<int32_t> longer = Prompt(3300, 250);
  auto disk = DiskHolding(dir, head);
  testing::SteppedTier stepped(disk.get(), /*free_calls=*/1);
  Stack b = NewStack({&stepped});
  GenerationRequest long_decode = Greedy(Prompt(6600, 40), 1500);
  long_decode.stop_at_eos = false;
  std::shared_ptr<RequestHandle> decoding =
      b.scheduler->Submit(std::move(long_decode)).value();
  RequestEvent first;
  ASSERT_TRUE(decoding->Next(&first, std::chrono::minutes(1)));
  ASSERT_EQ(first.kind, RequestEvent::Kind::kToken);  // it is decoding
  std::shared_ptr<RequestHandle> loading =
      b.scheduler->Submit(Greedy(longer, 4)).value();
  stepped.AwaitCalls(2);  // its load holds before layer 1
  const Outcome rest = Collect(*decoding);
  EXPECT_EQ(rest.tokens.size(), 1499u);
  EXPECT_EQ(rest.finish.finish, RequestEnd::kLength);
  EXPECT_EQ(stepped.calls().size(), 2u);  // all the while
  stepped.Open();
  const Outcome out = Collect(*loading);
  EXPECT_EQ(out.tokens, Alone(longer, 4));
  EXPECT_EQ(b.kv->Stats().layered_loads, 1u);
}

// A longer prompt that extends a prefix on disk loads the prefix and
// computes (and stores) only the rest.
TEST_P(TiersKvTypeTest, DiskPrefixOfALongerPrompt) {
  const std::string dir = Dir("extend");
  const std::vector<int32_t> head = Prompt(1000, 160);
  const std::vector<int32_t> longer = Prompt(1000, 250);
  auto disk = DiskHolding(dir, head, kv());
  Stack b = NewStack({disk.get()}, 512, kv());
  Outcome out = b.Run(longer, 10);
  EXPECT_EQ(out.finish.usage.tier_cached_tokens[0],
            (int(head.size()) / kBlockTokens) * kBlockTokens);
  EXPECT_EQ(out.tokens, Alone(longer, 10, kv()));
}

// Tier codecs end to end: a server restores what another stored through
// its codec. zstd gives the cold output back; cachegen (lossy) gives exactly
// the output of the prompt computed alone with its restorable prefix passed
// through the codec's round trip (GenerateOptions::prefix_transform), in
// fewer bytes on disk. Each codec is its own namespace: a server of another
// codec over the same disk finds nothing.
TEST_F(TiersTest, CodecsRestoreWhatTheyStored) {
  const std::vector<int32_t> prompt = Prompt(2500, 200);  // 201 tokens
  const int blocks = Loadable(prompt) / kBlockTokens;
  std::map<store::Codec, uint64_t> disk_bytes;
  for (const store::Codec codec :
       {store::Codec::kRaw, store::Codec::kZstd, store::Codec::kCacheGen}) {
    SCOPED_TRACE(store::CodecName(codec));
    const std::string dir =
        testing::TempDir(std::string("codec_") + store::CodecName(codec));
    std::vector<int32_t> cold_tokens;
    {
      auto disk = OpenDisk(dir);
      Stack a = NewStack({disk.get()}, 512, {}, codec);
      Outcome cold = a.Run(prompt, 12);
      EXPECT_EQ(cold.finish.usage.cached_tokens, 0);
      cold_tokens = cold.tokens;
      disk->Flush();
      // Object bytes (files are padded to 4 KiB pages for O_DIRECT).
      disk_bytes[codec] = disk->Stats().bytes_written;
      EXPECT_GE(disk->Stats().objects, uint64_t(blocks));
    }
    EXPECT_EQ(cold_tokens, Alone(prompt, 12));

    auto disk = OpenDisk(dir);
    Stack b = NewStack({disk.get()}, 512, {}, codec);
    Outcome warm = b.Run(prompt, 12);
    EXPECT_EQ(warm.finish.usage.tier_cached_tokens[0], Loadable(prompt));
    EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks, uint64_t(blocks));
    EXPECT_EQ(b.kv->TierStats()[0].load_failures, 0u);
    if (!store::CodecIsLossy(codec)) {
      EXPECT_EQ(warm.tokens, cold_tokens);
    } else {
      EXPECT_EQ(warm.tokens, Restored(prompt, 12, codec, 1));
    }
    // A server of another codec over the same disk finds nothing.
    const store::Codec other = codec == store::Codec::kRaw
                                   ? store::Codec::kCacheGen
                                   : store::Codec::kRaw;
    Stack c = NewStack({disk.get()}, 512, {}, other);
    EXPECT_EQ(c.scheduler->CachedPrefix(prompt, "").tier_tokens[0], 0);
    Outcome foreign = c.Run(prompt, 12);
    EXPECT_EQ(foreign.finish.usage.cached_tokens, 0);
    EXPECT_EQ(c.kv->TierStats()[0].load_failures, 0u);
    EXPECT_TRUE(b.kv->Validate({}).ok());
  }
  EXPECT_LT(disk_bytes[store::Codec::kZstd], disk_bytes[store::Codec::kRaw]);
  EXPECT_LT(double(disk_bytes[store::Codec::kCacheGen]),
            0.5 * double(disk_bytes[store::Codec::kRaw]));
}

// Chunk objects under the scheduler: a 300-token prompt is stored as four
// chunks of 4 blocks and single blocks after them; a restarted server loads
// its 18 full blocks from those objects (the last one too: the prompt's
// last token is then the one computed) and answers as cold.
TEST_F(TiersTest, ChunkObjectsRestoreThePrefix) {
  const std::string dir = testing::TempDir("chunk_objects");
  const std::vector<int32_t> prompt = Prompt(3000, 288);  // 289 tokens
  std::vector<int32_t> cold_tokens;
  {
    auto disk = OpenDisk(dir);
    Stack a = NewStack({disk.get()}, 512, {}, store::Codec::kRaw, 4);
    cold_tokens = a.Run(prompt, 8).tokens;
    disk->Flush();
    // 289 + 7 positions written: 18 full blocks, 4 chunks and 2 singles.
    EXPECT_EQ(disk->Stats().objects, 6u);
  }
  EXPECT_EQ(cold_tokens, Alone(prompt, 8));
  auto disk = OpenDisk(dir);
  Stack b = NewStack({disk.get()}, 512, {}, store::Codec::kRaw, 4);
  Outcome warm = b.Run(prompt, 8);
  EXPECT_EQ(warm.finish.usage.tier_cached_tokens[0], 288);
  EXPECT_EQ(warm.finish.usage.cached_tokens, 288);
  EXPECT_EQ(warm.tokens, cold_tokens);
  EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks, 18u);
  EXPECT_TRUE(b.kv->Validate({}).ok());
}

// cachegen in chunk objects, on a prompt that ends on a block boundary: the
// restoring server loads all 12 blocks (3 chunks of 4), copies the last on
// write and computes the last token, and answers exactly as the prompt
// computed alone with those 3 objects passed through the round trip.
TEST_F(TiersTest, CacheGenChunksOfAnAlignedPrompt) {
  const std::string dir = testing::TempDir("cachegen_chunks");
  const std::vector<int32_t> prompt = Prompt(5200, 191);  // 192 tokens
  const store::Codec codec = store::Codec::kCacheGen;
  {
    auto disk = OpenDisk(dir);
    Stack a = NewStack({disk.get()}, 512, {}, codec, 4);
    EXPECT_EQ(a.Run(prompt, 6).tokens, Alone(prompt, 6));
  }
  auto disk = OpenDisk(dir);
  Stack b = NewStack({disk.get()}, 512, {}, codec, 4);
  Outcome warm = b.Run(prompt, 6);
  EXPECT_EQ(warm.finish.usage.cached_tokens, 191);
  EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks, 12u);
  EXPECT_EQ(warm.tokens, Restored(prompt, 6, codec, 4));
}

// A lossy codec needs float KV: a server asked for cachegen over q8 blocks
// refuses to start, saying why.
TEST_F(TiersTest, CacheGenOverQuantizedKvIsRefused) {
  kvcache::KvManagerOptions o;
  o.layout = Layout({kernels::KvType::kQ8, kernels::KvType::kQ8});
  o.capacity_bytes = 64 * o.layout.block_bytes();
  o.prefault = false;
  o.tier_codec = store::Codec::kCacheGen;
  auto kv = kvcache::KvManager::Create(o);
  ASSERT_FALSE(kv.ok());
  EXPECT_EQ(kv.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(kv.status().message().find("float KV types"), std::string::npos);
}

// Blocks written in one type are never loaded by a server of another type
// over the same disk: the namespace root names both types, so the keys
// differ, and an object of one type filed under the other's name (a forged
// or misfiled object) is refused when it is decoded.
TEST_F(TiersTest, CompressedBlocksNeverLoadUnderAnotherType) {
  using kernels::KvType;
  const std::vector<int32_t> prompt = Prompt(1500, 120);  // 121 tokens
  const kernels::KvFormat f16 = {};
  for (const kernels::KvFormat written :
       {kernels::KvFormat{KvType::kKivi4, KvType::kKivi4},
        kernels::KvFormat{KvType::kQ8, KvType::kQ8}}) {
    SCOPED_TRACE(kernels::KvFormatName(written));
    const std::string dir =
        testing::TempDir("types_" + testing::KvFormatTestName(written));
    {
      auto disk = OpenDisk(dir);
      Stack a = NewStack({disk.get()}, 512, written);
      EXPECT_EQ(a.Run(prompt, 6).tokens, Alone(prompt, 6, written));
    }
    auto disk = OpenDisk(dir);
    const uint64_t objects = disk->Stats().objects;
    ASSERT_GE(objects, uint64_t(Loadable(prompt) / kBlockTokens));

    // Servers of other formats (f16; the same K type with another V type)
    // find nothing and compute the cold output of their own type.
    for (const kernels::KvFormat other :
         {f16, kernels::KvFormat{written.k, KvType::kQ4H}}) {
      SCOPED_TRACE("read as " + kernels::KvFormatName(other));
      Stack b = NewStack({disk.get()}, 512, other);
      const kvcache::PrefixHit probe = b.scheduler->CachedPrefix(prompt, "");
      EXPECT_EQ(probe.dram_tokens, 0);
      EXPECT_EQ(probe.tier_tokens, std::vector<int>{0});
      const Hash128 root = kvcache::RootHash(model_->identity(), Layout(other),
                                             store::Codec::kRaw, "");
      EXPECT_EQ(b.kv->Prefetch(prompt, root).total(), 0);
      Outcome out = b.Run(prompt, 6);
      EXPECT_EQ(out.finish.usage.cached_tokens, 0);
      EXPECT_EQ(out.tokens, Alone(prompt, 6, other));
      EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks, 0u);
      EXPECT_EQ(b.kv->TierStats()[0].load_failures, 0u);
    }

    // The first block as `written` stored it, and the names of that block
    // in the f16 namespace.
    const Hash128 root_w = kvcache::RootHash(
        model_->identity(), Layout(written), store::Codec::kRaw, "");
    const Hash128 root_f16 = kvcache::RootHash(model_->identity(), Layout(f16),
                                               store::Codec::kRaw, "");
    ASSERT_NE(root_w, root_f16);
    const std::span<const int32_t> first(prompt.data(), kBlockTokens);
    const Hash128 key_w = kvcache::BlockHash(root_w, first);
    const Hash128 key_f16 = kvcache::BlockHash(root_f16, first);
    auto got = disk->Get(std::vector<store::BlockKey>{key_w});
    ASSERT_TRUE(got[0].has_value());
    const std::vector<uint8_t>& stored = *got[0];
    Result<store::ObjectView> own =
        store::DecodeObject(stored, root_w, key_w, Layout(written));
    ASSERT_TRUE(own.ok()) << own.status().ToString();
    EXPECT_EQ(own->header.layout.kv, written);
    // Presented under the f16 namespace, it is refused by its fingerprint.
    Result<store::ObjectView> as_f16 =
        store::DecodeObject(stored, root_f16, key_w, Layout(f16));
    ASSERT_FALSE(as_f16.ok());
    EXPECT_EQ(as_f16.status().code(), StatusCode::kInvalidArgument);
    // Filed under the f16 fingerprint and key, it is refused by its types.
    const std::vector<uint8_t> forged =
        store::EncodeObject(root_f16, root_f16, key_f16, Layout(written),
                            uint32_t(kBlockTokens), own->payload);
    for (const auto decode :
         {&store::DecodeObject, &store::DecodeVerifiedObject}) {
      Result<store::ObjectView> v =
          decode(forged, root_f16, key_f16, Layout(f16), store::Codec::kRaw);
      ASSERT_FALSE(v.ok());
      EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(v.status().message().find("kv types"), std::string::npos)
          << v.status().message();
    }
    // Through the tier: an f16 server that finds an object of `written`
    // filed under its own fingerprint and key refuses it, counts the
    // failure, and computes cold. (In a namespace of its own: the f16
    // servers above wrote the prompt's f16 blocks to this disk.)
    const Hash128 root_x = kvcache::RootHash(model_->identity(), Layout(f16),
                                             store::Codec::kRaw, "misfiled");
    const Hash128 key_x = kvcache::BlockHash(root_x, first);
    ASSERT_TRUE(disk->Put(key_x, store::EncodeObject(
                                     root_x, root_x, key_x, Layout(written),
                                     uint32_t(kBlockTokens), own->payload))
                    .ok());
    disk->Flush();
    Stack c = NewStack({disk.get()}, 512, f16);
    EXPECT_EQ(c.scheduler->CachedPrefix(prompt, "misfiled").tier_tokens,
              std::vector<int>{kBlockTokens});  // Exists does not verify
    Outcome out = c.Run(prompt, 6, "misfiled");
    EXPECT_EQ(out.finish.usage.cached_tokens, 0);
    EXPECT_EQ(out.tokens, Alone(prompt, 6, f16));
    EXPECT_EQ(c.kv->TierStats()[0].loaded_blocks, 0u);
    EXPECT_EQ(c.kv->TierStats()[0].load_failures, 1u);
    EXPECT_TRUE(c.kv->Validate({}).ok());
  }
}

// Bytes flipped in stored objects (payload and header) are misses: the load
// stops at the first bad object, the object is deleted and counted, and the
// output is what a cold run gives.
TEST_P(TiersKvTypeTest, CorruptObjectsAreMissesNeverWrongOutput) {
  const std::string dir = Dir("corrupt");
  const std::vector<int32_t> prompt = Prompt(2000, 200);
  {
    auto disk = OpenDisk(dir);
    Stack a = NewStack({disk.get()}, 512, kv());
    a.Run(prompt, 8);
  }
  std::vector<fs::path> objects;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().extension() == ".kvo") objects.push_back(e.path());
  }
  ASSERT_GE(objects.size(), 10u);
  std::mt19937 rng(7);
  size_t flipped = 0;
  for (const fs::path& p : objects) {
    if (rng() % 3 != 0) continue;
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    const auto size = fs::file_size(p);
    // Header bytes for some, payload bytes for others.
    const std::streamoff at = std::streamoff(
        flipped % 2 == 0 ? rng() % 112 : 128 + rng() % (size - 128));
    f.seekg(at);
    char c = 0;
    f.read(&c, 1);
    c = char(c ^ 0x5a);
    f.seekp(at);
    f.write(&c, 1);
    ++flipped;
  }
  ASSERT_GT(flipped, 0u);
  auto disk = OpenDisk(dir);
  Stack b = NewStack({disk.get()}, 512, kv());
  Outcome out = b.Run(prompt, 8);
  EXPECT_EQ(out.tokens, Alone(prompt, 8, kv()));
  EXPECT_LT(out.finish.usage.cached_tokens, Loadable(prompt));
  const kvcache::TierCounters c = b.kv->TierStats()[0];
  // Header flips in the MAC nonce or tag leave the bytes intact but unsealed
  // (forged); the others are damage.
  EXPECT_GE(c.store.corrupt_dropped + c.store.forged_dropped + c.load_failures,
            1u);
  // A layered load that read a bad object (one found when the tier
  // scanned its directory is not even announced) sent the request back to
  // be recomputed from what verified.
  EXPECT_EQ(b.kv->Stats().layered_load_failures, c.load_failures);
  // The recomputed blocks were written again, so each later server loads
  // further, until one loads all. (A block recomputed because an earlier
  // object was bad is not rewritten while its own damaged object is still
  // indexed: DiskTier::Put keeps a key it holds, and payload damage is only
  // found when the object is read. So it can take one server per damaged
  // object, in chain order.)
  int cached = out.finish.usage.cached_tokens;
  for (size_t round = 0; round <= flipped && cached < Loadable(prompt);
       ++round) {
    SCOPED_TRACE("server " + std::to_string(round + 2));
    b = Stack();
    disk.reset();
    disk = OpenDisk(dir);
    Stack c2 = NewStack({disk.get()}, 512, kv());
    Outcome again = c2.Run(prompt, 8);
    EXPECT_GT(again.finish.usage.cached_tokens, cached);
    EXPECT_EQ(again.tokens, Alone(prompt, 8, kv()));
    cached = again.finish.usage.cached_tokens;
  }
  EXPECT_EQ(cached, Loadable(prompt));
}

// A capacity far below what the prompts need: no failure, the tier stays
// within its limit by evicting, and outputs are unchanged.
TEST_F(TiersTest, FullDiskEvictsAndNeverFails) {
  const std::string dir = testing::TempDir("full");
  const kernels::BlockLayout layout = Layout();
  const uint64_t object_bytes = 4096 + layout.block_bytes();  // upper bound
  const uint64_t capacity = 12 * object_bytes;
  auto disk = OpenDisk(dir, capacity);
  Stack s = NewStack({disk.get()});
  for (int i = 0; i < 6; ++i) {
    const std::vector<int32_t> prompt = Prompt(3000 + 400 * i, 120);
    Outcome out = s.Run(prompt, 6);
    EXPECT_EQ(out.tokens, Alone(prompt, 6));
  }
  disk->Flush();
  const store::TierStats st = disk->Stats();
  EXPECT_LE(st.bytes_used, capacity);
  EXPECT_GT(st.evictions, 0u);
  uint64_t on_disk = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().extension() == ".kvo") on_disk += fs::file_size(e.path());
  }
  EXPECT_LE(on_disk, capacity);
}

// A writer process is killed with SIGKILL at random moments while it
// computes and writes blocks, 20 times (more, up to 100, until a kill has
// landed inside a write and objects were written; kills come later after
// each 20 rounds short of that, for slow sanitized runs on a loaded
// machine). After each kill the directory opens, every
// object in it verifies (torn writes are never visible), objects were
// written, at least one kill landed inside a write (a temporary file was
// left), and a server on it produces the cold outputs.
TEST_F(TiersTest, SurvivesKillNineWhileWriting) {
  const std::string dir = testing::TempDir("crash");
  std::mt19937 rng(11);
  const std::vector<int32_t> probe = Prompt(9000, 150);
  uint64_t objects = 0;
  int mid_write_kills = 0;
  for (int round = 0;
       round < 20 || ((mid_write_kills == 0 || objects == 0) && round < 100);
       ++round) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // The writer: new prompts as fast as it can, each block written behind.
      auto disk = OpenDisk(dir);
      Stack w = NewStack({disk.get()}, 64);
      for (int i = 0;; ++i) {
        w.Run(Prompt(size_t(5000 + (round * 37 + i * 101) % 3000), 90), 2);
      }
    }
    const int later = 1 << std::min(round / 20, 3);
    std::this_thread::sleep_for(
        std::chrono::milliseconds(later * (30 + int(rng() % 150))));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the writer died on its own (status " << status << ")";

    auto scan = store::ScanDiskCache(dir, /*verify=*/true,
                                     /*remove_bad=*/false);
    ASSERT_TRUE(scan.ok()) << scan.status().ToString();
    EXPECT_TRUE(scan->authenticated);  // MACs checked under the dir's key
    EXPECT_TRUE(scan->bad.empty())
        << "round " << round << ": " << scan->bad.front().path;
    // The writer did write (objects only accumulate: nothing is evicted at
    // this capacity), and a temporary file left behind means the kill
    // landed inside a write.
    EXPECT_GE(scan->objects, objects) << "round " << round;
    objects = scan->objects;
    mid_write_kills += scan->temp_files > 0;
    if (round % 5 == 4) {
      auto disk = OpenDisk(dir);
      Stack r = NewStack({disk.get()});
      EXPECT_EQ(r.Run(probe, 6).tokens, Alone(probe, 6)) << "round " << round;
      const std::vector<int32_t> written =
          Prompt(5000 + (round * 37) % 3000, 90);
      EXPECT_EQ(r.Run(written, 2).tokens, Alone(written, 2));
    }
  }
  EXPECT_GT(objects, 0u);
  EXPECT_GE(mid_write_kills, 1);
  RecordProperty("mid_write_kills", mid_write_kills);
  RecordProperty("objects", int(objects));
}

// Servers A and B with separate disk caches and one Redis: B gets what A
// computed from Redis (and keeps a copy on its own disk), output identical.
TEST_F(TiersTest, TwoServersShareThroughRedis) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto redis_server = testing::RedisServer::Start();
  ASSERT_TRUE(redis_server.ok()) << redis_server.status().ToString();
  const std::string url = (*redis_server)->url();
  const std::vector<int32_t> prompt = Prompt(4000, 260);

  auto disk_a = OpenDisk(testing::TempDir("share-a"));
  auto redis_a = OpenRedis(url);
  Stack a = NewStack({disk_a.get(), redis_a.get()});
  Outcome first = a.Run(prompt, 10);
  EXPECT_EQ(first.tokens, Alone(prompt, 10));
  redis_a->Flush();

  auto disk_b = OpenDisk(testing::TempDir("share-b"));
  auto redis_b = OpenRedis(url);
  Stack b = NewStack({disk_b.get(), redis_b.get()});
  Outcome second = b.Run(prompt, 10);
  EXPECT_EQ(second.tokens, first.tokens);
  EXPECT_EQ(second.finish.usage.cached_tokens, Loadable(prompt));
  EXPECT_EQ(second.finish.usage.tier_cached_tokens,
            (std::vector<int>{0, Loadable(prompt)}));
  EXPECT_EQ(b.kv->Stats().layered_loads, 1u);  // ranges read from Redis
  // The Redis hit was promoted to B's disk (16 blocks: fewer than one chunk
  // of stories260K's 10 KiB blocks, so 16 single-block objects): a server
  // over B's disk alone finds the whole prefix there.
  disk_b->Flush();
  EXPECT_EQ(disk_b->Stats().objects, size_t(Loadable(prompt) / kBlockTokens));
  Stack c = NewStack({disk_b.get()});
  EXPECT_EQ(c.scheduler->CachedPrefix(prompt, "").tier_tokens[0],
            Loadable(prompt));
}

// The rows chain (block_hash.h) under which a server of this test stores
// `document` compressed by `policy`, keeping `kept` rows per (layer, head).
std::vector<Hash128> CompressedRowsChain(const Model& model,
                                         const kernels::BlockLayout& layout,
                                         const std::vector<int32_t>& document,
                                         const compress::PolicyOptions& policy,
                                         int kept) {
  const Hash128 rows_root = kvcache::RowsRoot(
      kvcache::RootHash(model.identity(), layout, store::Codec::kRaw, ""),
      compress::PolicyNamespace(policy));
  return kvcache::RowsChain(rows_root, document,
                            size_t((kept + kBlockTokens - 1) / kBlockTokens));
}

// A document compressed by a query-agnostic policy is stored (its compacted
// rows, under the policy's namespace) and written behind to disk; after a
// restart, a request with the same document, the same policy and another
// question maps those rows from disk instead of computing and compressing
// the document again, with the output it computes cold. Requests with the
// same document under another policy, other parameters or none never map
// them (they may load the document's plain positions) and also answer as
// cold.
TEST_F(TiersTest, CompressedDocumentsSurviveARestart) {
  const std::string dir = testing::TempDir("compressed_restart");
  const std::vector<int32_t> document = Prompt(1200, 299);  // 300 tokens
  const int n_doc = int(document.size());
  const compress::PolicyOptions knorm{"knorm", 0.5};
  const int kept = 150;  // half of the document's rows
  const int rows_blocks = (kept + kBlockTokens - 1) / kBlockTokens;  // 10
  const std::vector<Hash128> rows =
      CompressedRowsChain(*model_, Layout(), document, knorm, kept);
  ASSERT_EQ(rows.size(), size_t(rows_blocks));

  const GenerationRequest first = Ask(document, 3000, knorm);
  {
    auto disk = OpenDisk(dir);
    Stack a = NewStack({disk.get()});
    const Outcome out = a.Run(first);
    const RequestUsage& u = out.finish.usage;
    EXPECT_EQ(u.kv_cache, "stored");
    EXPECT_EQ(u.kv_policy, "knorm");
    EXPECT_EQ(u.kv_compressed_tokens, n_doc);
    EXPECT_EQ(u.kv_kept_tokens, double(kept));
    EXPECT_EQ(u.cached_tokens, 0);
    EXPECT_EQ(out.tokens, Cold(first));
    EXPECT_EQ(a.kv->Stats().rows_published, 1u);
    a.Stop();  // every write-behind is queued
    disk->Flush();
    // Every block of the rows is on disk, under its rows chain.
    EXPECT_EQ(disk->Exists(rows), std::vector<bool>(rows.size(), true));
  }  // the disk tier stores its queue and unlocks

  auto disk = OpenDisk(dir);
  Stack b = NewStack({disk.get()});
  EXPECT_EQ(disk->Exists(rows), std::vector<bool>(rows.size(), true));
  const GenerationRequest second = Ask(document, 4000, knorm);
  const Outcome warm = b.Run(second);
  // The compressed document changes the answer: the equality with the cold
  // output below tells which rows were used.
  EXPECT_NE(Cold(second), Alone(second.prompt, second.max_tokens));
  {
    const RequestUsage& u = warm.finish.usage;
    EXPECT_EQ(u.kv_cache, "mapped");
    EXPECT_EQ(u.kv_policy, "knorm");
    EXPECT_EQ(u.cached_tokens, n_doc);
    ASSERT_EQ(u.tier_cached_tokens.size(), 1u);
    EXPECT_EQ(u.tier_cached_tokens[0], n_doc);  // nothing was in DRAM
    EXPECT_EQ(u.kv_compressed_tokens, n_doc);
    EXPECT_EQ(u.kv_kept_tokens, double(kept));
    EXPECT_EQ(u.kv_blocks_after, rows_blocks);
  }
  EXPECT_EQ(warm.tokens, Cold(second));
  // The rows were loaded (not the document's plain positions) and nothing
  // was compressed again.
  EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks, uint64_t(rows_blocks));
  EXPECT_EQ(b.kv->TierStats()[0].load_failures, 0u);
  EXPECT_EQ(b.kv->Stats().rows_hits, 1u);
  EXPECT_EQ(b.kv->Stats().rows_published, 0u);
  EXPECT_EQ(b.scheduler->Stats().compressions, 0u);
  EXPECT_EQ(b.scheduler->Stats().compressed_prefix_hits, 1u);

  // Again: the rows are in DRAM now.
  const GenerationRequest third = Ask(document, 6500, knorm);
  const Outcome dram = b.Run(third);
  EXPECT_EQ(dram.finish.usage.kv_cache, "mapped");
  EXPECT_EQ(dram.finish.usage.cached_tokens, n_doc);
  EXPECT_EQ(dram.finish.usage.tier_cached_tokens, std::vector<int>{0});
  EXPECT_EQ(dram.tokens, Cold(third));

  // The same document under other parameters, another policy or none:
  // never the stored rows.
  for (const compress::PolicyOptions& other :
       {compress::PolicyOptions{"knorm", 0.25},
        compress::PolicyOptions{"knorm", 0.5, /*merge=*/true},
        compress::PolicyOptions{"expected", 0.5},
        compress::PolicyOptions{"streaming", 0.5}, compress::PolicyOptions{}}) {
    SCOPED_TRACE(other.policy + " " + std::to_string(other.ratio) +
                 (other.merge ? " merge" : ""));
    const GenerationRequest r = Ask(document, 6000, other);
    const Outcome out = b.Run(r);
    const RequestUsage& u = out.finish.usage;
    EXPECT_NE(u.kv_cache, "mapped");
    EXPECT_EQ(u.kv_cache, other.policy.empty() ? "" : "stored");
    EXPECT_LE(u.cached_tokens, n_doc);
    EXPECT_EQ(out.tokens, Cold(r));
  }
  EXPECT_EQ(b.kv->Stats().rows_hits, 2u);
  EXPECT_EQ(b.scheduler->Stats().compressed_prefix_hits, 2u);
  EXPECT_TRUE(b.kv->Validate({}).ok());
}

// Two servers over one Redis (each with its own disk): the first compresses
// a document and stores its rows, the second maps them from Redis (and
// keeps a copy on its disk, where a third server finds them), each with the
// output it computes cold.
TEST_F(TiersTest, CompressedDocumentsAreSharedThroughRedis) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto redis_server = testing::RedisServer::Start();
  ASSERT_TRUE(redis_server.ok()) << redis_server.status().ToString();
  const std::string url = (*redis_server)->url();
  const std::vector<int32_t> document = Prompt(4200, 299);  // 300 tokens
  const int n_doc = int(document.size());
  const compress::PolicyOptions expected{"expected", 0.75};

  auto disk_a = OpenDisk(testing::TempDir("compressed-share-a"));
  auto redis_a = OpenRedis(url);
  Stack a = NewStack({disk_a.get(), redis_a.get()});
  const GenerationRequest first = Ask(document, 3000, expected);
  const Outcome stored = a.Run(first);
  EXPECT_EQ(stored.finish.usage.kv_cache, "stored");
  EXPECT_EQ(stored.finish.usage.kv_compressed_tokens, n_doc);
  EXPECT_EQ(stored.finish.usage.cached_tokens, 0);
  EXPECT_EQ(stored.tokens, Cold(first));
  const int kept = int(stored.finish.usage.kv_kept_tokens);
  EXPECT_EQ(double(kept), stored.finish.usage.kv_kept_tokens);
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, n_doc);
  const int rows_blocks = (kept + kBlockTokens - 1) / kBlockTokens;
  redis_a->Flush();
  const std::vector<Hash128> rows =
      CompressedRowsChain(*model_, Layout(), document, expected, kept);
  EXPECT_EQ(redis_a->Exists(rows), std::vector<bool>(rows.size(), true));

  auto disk_b = OpenDisk(testing::TempDir("compressed-share-b"));
  auto redis_b = OpenRedis(url);
  Stack b = NewStack({disk_b.get(), redis_b.get()});
  const GenerationRequest second = Ask(document, 6000, expected);
  const Outcome mapped = b.Run(second);
  // The compressed document changes the answer (see above).
  EXPECT_NE(Cold(second), Alone(second.prompt, second.max_tokens));
  {
    const RequestUsage& u = mapped.finish.usage;
    EXPECT_EQ(u.kv_cache, "mapped");
    EXPECT_EQ(u.cached_tokens, n_doc);
    EXPECT_EQ(u.tier_cached_tokens, (std::vector<int>{0, n_doc}));
    EXPECT_EQ(u.kv_kept_tokens, double(kept));
  }
  EXPECT_EQ(mapped.tokens, Cold(second));
  EXPECT_EQ(b.kv->TierStats()[1].loaded_blocks, uint64_t(rows_blocks));
  EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks, 0u);
  EXPECT_EQ(b.scheduler->Stats().compressions, 0u);

  // The Redis hit was promoted to B's disk: a server over it alone maps
  // the rows from there.
  b.Stop();
  disk_b->Flush();
  EXPECT_EQ(disk_b->Exists(rows), std::vector<bool>(rows.size(), true));
  Stack c = NewStack({disk_b.get()});
  const GenerationRequest third = Ask(document, 4000, expected);
  const Outcome local = c.Run(third);
  EXPECT_EQ(local.finish.usage.kv_cache, "mapped");
  EXPECT_EQ(local.finish.usage.tier_cached_tokens, std::vector<int>{n_doc});
  EXPECT_EQ(local.tokens, Cold(third));
}

// A TLS-only Redis (no plain port) reached the way the README says: through
// stunnel in client mode, which verifies the server's certificate. Two
// servers share a prefix through it, with a password and the fleet key; a
// tunnel that trusts another certificate gets no connection, and its server
// computes cold without failing the request.
TEST_F(TiersTest, TwoServersShareThroughATlsRedis) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  KVSTASH_REQUIRE_TLS_TOOLS();
  const std::string password = "tls-test-password";
  auto redis_server =
      testing::RedisServer::Start({.password = password, .tls = true});
  ASSERT_TRUE(redis_server.ok()) << redis_server.status().ToString();
  auto tunnel = testing::TlsTunnel::Start((*redis_server)->port(),
                                          (*redis_server)->cert_path());
  ASSERT_TRUE(tunnel.ok()) << tunnel.status().ToString();
  const std::vector<int32_t> prompt = Prompt(4500, 100);

  auto redis_a = OpenRedis((*tunnel)->url(password));
  Stack a = NewStack({redis_a.get()});
  Outcome first = a.Run(prompt, 8);
  EXPECT_EQ(first.tokens, Alone(prompt, 8));
  redis_a->Flush();
  EXPECT_GT(redis_a->Stats().writes, 0u) << (*tunnel)->log();

  auto redis_b = OpenRedis((*tunnel)->url(password));
  Stack b = NewStack({redis_b.get()});
  Outcome second = b.Run(prompt, 8);
  EXPECT_EQ(second.tokens, first.tokens);
  EXPECT_EQ(second.finish.usage.tier_cached_tokens,
            std::vector<int>{Loadable(prompt)});

  // A tunnel that trusts another certificate: the handshake fails.
  const std::string other = testing::TempDir("tls_other_ca");
  ASSERT_TRUE(testing::MakeSelfSignedCertificate(other).ok());
  auto wrong =
      testing::TlsTunnel::Start((*redis_server)->port(), other + "/cert.pem");
  ASSERT_TRUE(wrong.ok()) << wrong.status().ToString();
  auto redis_c = OpenRedis((*wrong)->url(password));
  Stack c = NewStack({redis_c.get()});
  Outcome third = c.Run(prompt, 8);
  EXPECT_EQ(third.tokens, first.tokens);
  EXPECT_EQ(third.finish.usage.cached_tokens, 0);
  EXPECT_GT(redis_c->Stats().errors, 0u);
}

// The attack of issue 13, end to end: every object a server stored, on disk
// and in a password-protected Redis, is edited (one K/V byte) and its
// checksum recomputed. Before
// objects were sealed, such edits were loaded and changed the output. Now
// the next server loads nothing, computes the cold output, and every edited
// object is refused, deleted and counted as forged.
TEST_F(TiersTest, ForgedObjectsAreNeverLoaded) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  // A Redis that needs a password, used by the servers as an ACL user: the
  // forger is whoever else can write to it (here, the default user).
  auto redis_server = testing::RedisServer::Start({.password = "adm1n"});
  ASSERT_TRUE(redis_server.ok()) << redis_server.status().ToString();
  auto raw =
      testing::RedisClient::Connect((*redis_server)->port(), "adm1n").value();
  ASSERT_EQ(
      raw->Text({"ACL", "SETUSER", "kv", "on", ">kv-s3cret", "~*", "+@all"}),
      "OK");
  const std::string url = "redis://kv:kv-s3cret@127.0.0.1:" +
                          std::to_string((*redis_server)->port());
  const std::string dir = testing::TempDir("forged");
  const std::vector<int32_t> prompt = Prompt(5000, 200);
  {
    auto disk = OpenDisk(dir);
    auto redis = OpenRedis(url);
    Stack a = NewStack({disk.get(), redis.get()});
    EXPECT_EQ(a.Run(prompt, 8).tokens, Alone(prompt, 8));
    redis->Flush();
  }
  const auto forge = [](std::vector<uint8_t> object) {
    object[store::kObjectHeaderBytes + 11] ^= 0x21;
    store::RecomputeChecksum(object);
    return object;
  };
  // On disk: the object, its padding kept.
  std::vector<store::BlockKey> disk_keys;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.path().extension() != ".kvo") continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::vector<uint8_t> file((std::istreambuf_iterator<char>(in)), {});
    const store::ObjectHeader h = store::ParseHeaderPrefix(file).value();
    const size_t length = store::kObjectHeaderBytes + h.payload_bytes;
    std::vector<uint8_t> object(file.begin(), file.begin() + length);
    object = forge(std::move(object));
    std::copy(object.begin(), object.end(), file.begin());
    std::ofstream(e.path(), std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(file.data()),
               std::streamsize(file.size()));
    disk_keys.push_back(h.key);
  }
  // The prompt's blocks, and those its generated tokens completed.
  const size_t n = disk_keys.size();
  ASSERT_GE(n, size_t(Loadable(prompt) / kBlockTokens));
  // In Redis: every value under the tier's prefix.
  std::vector<store::BlockKey> redis_keys;
  {
    auto redis = OpenRedis(url);
    for (const store::BlockKey& k : disk_keys) {
      const std::string name = redis->RedisKey(k);
      const std::string value = raw->Text({"GET", name});
      ASSERT_FALSE(value.empty()) << name;
      const std::vector<uint8_t> edited =
          forge(std::vector<uint8_t>(value.begin(), value.end()));
      ASSERT_EQ(
          raw->Text({"SET", name, std::string(edited.begin(), edited.end())}),
          "OK");
      redis_keys.push_back(k);
    }
  }

  // Redis: a server of the fleet reading every key refuses every value.
  {
    auto redis = OpenRedis(url);
    for (const auto& got : redis->Get(redis_keys)) {
      EXPECT_FALSE(got.has_value());
    }
    EXPECT_EQ(redis->Stats().forged_dropped, n);
    EXPECT_EQ(redis->Stats().corrupt_dropped, 0u);
    EXPECT_EQ(raw->Integer({"DBSIZE"}), 0);  // all DELeted
  }
  // Disk: a server asked for the prompt loads nothing and computes it cold;
  // the objects its load did not reach are refused when read.
  auto disk = OpenDisk(dir);
  auto redis = OpenRedis(url);
  Stack b = NewStack({disk.get(), redis.get()});
  Outcome out = b.Run(prompt, 8);
  EXPECT_EQ(out.tokens, Alone(prompt, 8));
  EXPECT_EQ(out.finish.usage.cached_tokens, 0);
  EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks, 0u);
  EXPECT_GE(disk->Stats().forged_dropped, 1u);
  EXPECT_EQ(b.kv->Stats().layered_load_failures, 1u);
  disk->Flush();
  // What the load read was dropped and rewritten by the cold run; whatever
  // it did not read is refused now: every forged object once.
  const std::vector<std::optional<std::vector<uint8_t>>> got =
      disk->Get(disk_keys);
  size_t hits = 0;
  for (const auto& g : got) hits += g.has_value();
  EXPECT_EQ(disk->Stats().forged_dropped, n) << hits << " hits";
  EXPECT_EQ(disk->Stats().corrupt_dropped, 0u);
}

// A tier whose Get waits, up to `patience`, until `want` Gets are inside at
// once; it records the most it saw. Everything else goes to `inner`; it
// reads no ranges (its loads are whole-object Prefetches).
class GatedTier final : public testing::ForwardingTier {
 public:
  GatedTier(store::Tier* inner, int want, std::chrono::milliseconds patience)
      : ForwardingTier(inner), want_(want), patience_(patience) {}
  bool reads_ranges() const override { return false; }

  std::vector<bool> Visit(std::span<const store::BlockKey> keys,
                          const ObjectVisitor& visit) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      most_ = std::max(most_, ++inside_);
      if (inside_ >= want_) open_ = true;
      cv_.notify_all();
      cv_.wait_for(lock, patience_, [&] { return open_; });
    }
    auto out = ForwardingTier::Visit(keys, visit);
    std::lock_guard<std::mutex> lock(mu_);
    --inside_;
    return out;
  }

  int most() const {
    std::lock_guard<std::mutex> lock(mu_);
    return most_;
  }

 private:
  const int want_;
  const std::chrono::milliseconds patience_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int inside_ = 0, most_ = 0;
  bool open_ = false;
};

// Two requests whose prefixes are on disk are loaded side by side (one
// loader thread each), not one after the other; outputs are the cold ones.
TEST_F(TiersTest, LoadsOfDifferentRequestsRunSideBySide) {
  const std::string dir = testing::TempDir("parallel_loads");
  const std::vector<int32_t> prompts[] = {Prompt(7000, 120), Prompt(7500, 120)};
  {
    auto disk = OpenDisk(dir);
    Stack a = NewStack({disk.get()});
    for (const auto& p : prompts) a.Run(p, 4);
  }
  for (const int loaders : {4, 1}) {
    SCOPED_TRACE(std::to_string(loaders) + " loader threads");
    auto disk = OpenDisk(dir);
    // With one loader the gate can never open: it gives up quickly.
    GatedTier gate(disk.get(), 2,
                   std::chrono::milliseconds(loaders > 1 ? 20000 : 300));
    kvcache::KvManagerOptions o;
    o.layout = Layout();
    o.capacity_bytes = 512 * o.layout.block_bytes();
    o.prefault = false;
    o.tiers.push_back({&gate});
    auto kv = kvcache::KvManager::Create(o).value();
    SchedulerOptions so;
    so.loader_threads = loaders;
    auto scheduler = Scheduler::Create(*model_, nullptr, *kv, so).value();
    std::vector<std::shared_ptr<RequestHandle>> handles;
    for (const auto& p : prompts) {
      handles.push_back(scheduler->Submit(Greedy(p, 4)).value());
    }
    for (size_t i = 0; i < 2; ++i) {
      const Outcome out = Collect(*handles[i]);
      EXPECT_EQ(out.tokens, Alone(prompts[i], 4));
      EXPECT_EQ(out.finish.usage.cached_tokens, Loadable(prompts[i]));
    }
    EXPECT_EQ(gate.most(), loaders > 1 ? 2 : 1);
  }
}

// Four requests for one prompt reach a restarted server at once: the first
// loader reads the prefix from disk, the other three wait for that load and
// map it (nothing is read twice), and every output is the cold one.
TEST_F(TiersTest, RequestsForOnePrefixReadItOnce) {
  const std::string dir = testing::TempDir("one_read");
  const std::vector<int32_t> prompt = Prompt(8000, 120);
  {
    auto disk = OpenDisk(dir);
    Stack a = NewStack({disk.get()});
    a.Run(prompt, 4);
  }
  auto disk = OpenDisk(dir);
  testing::HeldTier held(disk.get());
  Stack b = NewStack({&held});
  std::vector<std::shared_ptr<RequestHandle>> handles;
  for (int i = 0; i < 4; ++i) {
    handles.push_back(b.scheduler->Submit(Greedy(prompt, 4)).value());
  }
  held.AwaitGet();
  // The other three loaders are waiting for that read (Collect's deadline
  // fails the test if they never do).
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (b.kv->Stats().shared_loads < 3 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(b.kv->Stats().shared_loads, 3u);
  held.Open();
  int from_disk = 0;
  for (const auto& h : handles) {
    const Outcome out = Collect(*h);
    EXPECT_EQ(out.tokens, Alone(prompt, 4));
    EXPECT_EQ(out.finish.usage.cached_tokens, Loadable(prompt));
    from_disk += out.finish.usage.tier_cached_tokens[0];
  }
  // The first request's usage names the disk; the others found the blocks
  // in DRAM once they were loaded.
  EXPECT_EQ(from_disk, Loadable(prompt));
  EXPECT_EQ(held.keys_read(), size_t(Loadable(prompt) / kBlockTokens));
  EXPECT_EQ(b.kv->TierStats()[0].loaded_blocks,
            uint64_t(Loadable(prompt) / kBlockTokens));
}

// Redis down from the start, then a Redis killed mid-run: every request
// succeeds with the cold output and the errors are counted.
TEST_F(TiersTest, DeadRedisNeverFailsARequest) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  {
    auto redis = OpenRedis("redis://127.0.0.1:1");  // nothing listens
    Stack s = NewStack({redis.get()});
    const std::vector<int32_t> prompt = Prompt(6000, 100);
    // Collect fails a request that hangs; how fast a dead Redis misses is
    // store/redis_tier_test's to pin down.
    EXPECT_EQ(s.Run(prompt, 6).tokens, Alone(prompt, 6));
    EXPECT_EQ(s.Run(prompt, 6).tokens, Alone(prompt, 6));
    s = Stack();
    redis->Flush();
    EXPECT_GT(redis->Stats().errors + redis->Stats().dropped_writes, 0u);
  }
  auto server = testing::RedisServer::Start();
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto redis = OpenRedis((*server)->url());
  Stack s = NewStack({redis.get()});
  const std::vector<int32_t> before = Prompt(6500, 120);
  EXPECT_EQ(s.Run(before, 6).tokens, Alone(before, 6));
  redis->Flush();
  (*server)->Kill();
  // A new server of the same stack finds Redis gone: recompute.
  Stack t = NewStack({redis.get()});
  EXPECT_EQ(t.Run(before, 6).tokens, Alone(before, 6));
  const std::vector<int32_t> after = Prompt(7000, 120);
  EXPECT_EQ(t.Run(after, 6).tokens, Alone(after, 6));
  EXPECT_GT(redis->Stats().errors, 0u);
}

// A Redis Cluster of 3 masters: blocks spread over all of them, a second
// server hits them all; one master killed, requests still succeed.
TEST_F(TiersTest, RedisClusterSpreadsAndSurvivesALostMaster) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto cluster = testing::RedisCluster::Start(3);
  ASSERT_TRUE(cluster.ok()) << cluster.status().ToString();
  const std::string url = (*cluster)->url();
  const std::vector<int32_t> prompt = Prompt(8000, 600);
  {
    auto redis = OpenRedis(url);
    Stack a = NewStack({redis.get()});
    EXPECT_EQ(a.Run(prompt, 6).tokens, Alone(prompt, 6));
    a = Stack();
    redis->Flush();
  }
  for (int i = 0; i < 3; ++i) {
    auto client = testing::RedisClient::Connect((*cluster)->node(i).port());
    ASSERT_TRUE(client.ok());
    EXPECT_GT((*client)->Integer({"DBSIZE"}), 0) << "node " << i;
  }
  {
    auto redis = OpenRedis(url);
    Stack b = NewStack({redis.get()});
    Outcome warm = b.Run(prompt, 6);
    EXPECT_EQ(warm.finish.usage.cached_tokens, Loadable(prompt));
    EXPECT_EQ(warm.tokens, Alone(prompt, 6));
  }
  (*cluster)->Kill(1);
  auto redis = OpenRedis(url);
  Stack c = NewStack({redis.get()});
  Outcome degraded = c.Run(prompt, 6);
  EXPECT_EQ(degraded.tokens, Alone(prompt, 6));
  EXPECT_LT(degraded.finish.usage.cached_tokens, Loadable(prompt));
  const std::vector<int32_t> fresh = Prompt(9500, 200);
  EXPECT_EQ(c.Run(fresh, 6).tokens, Alone(fresh, 6));
  EXPECT_GT(redis->Stats().errors, 0u);
}

}  // namespace
}  // namespace kvstash
