// End-to-end tests of continuous batching with prefix reuse on the real
// stories260K model: every request's greedy output, computed among others
// with cache hits, chunked prefill, eviction and preemption, must equal the
// same request computed alone on a cold cache by the plain generate loop,
// with K/V in the same types (for every KV type: a compressed block gives
// the same bits however the positions were batched and chunked).
#include "serve/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "compress/policy.h"
#include "engine/generate.h"
#include "engine/local_kv_cache.h"
#include "engine/logprobs.h"
#include "engine/transformer.h"
#include "kvcache/kv_manager.h"
#include "tests/testing/stories.h"

namespace kvstash {
namespace {

using std::chrono::milliseconds;

using testing::Collect;
using testing::Greedy;
using testing::Outcome;

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::LoadStories();
    story_ = testing::StoryTokens(*model_);
    alone_ = std::make_unique<testing::AloneReference>(*model_, kv_format());
    ASSERT_GT(story_.size(), 5000u);
  }

  // The types of the cache (and of the alone reference).
  virtual kernels::KvFormat kv_format() const { return {}; }

  std::unique_ptr<kvcache::KvManager> NewKv(size_t blocks,
                                            int block_tokens = 16) {
    const ModelConfig& c = model_->config();
    kvcache::KvManagerOptions o;
    o.layout = {c.n_layers, c.n_kv_heads, c.head_dim, block_tokens,
                kv_format()};
    o.capacity_bytes = blocks * o.layout.block_bytes();
    o.prefault = false;
    auto kv = kvcache::KvManager::Create(o);
    KV_CHECK(kv.ok());
    return std::move(kv).value();
  }

  // Greedy output of `prompt` computed alone by the plain generate loop.
  const std::vector<int32_t>& Alone(const std::vector<int32_t>& prompt,
                                    int max_tokens) {
    return alone_->Get(prompt, max_tokens);
  }

  std::vector<int32_t> Prompt(size_t begin, size_t n) {
    std::vector<int32_t> p = {model_->tokenizer().bos()};
    p.insert(p.end(), story_.begin() + begin, story_.begin() + begin + n);
    return p;
  }

  // Greedy output of `prompt` (max_tokens, no EOS stop) by the generate
  // loop with `policy`.
  GenerateResult GenerateWith(const std::vector<int32_t>& prompt,
                              int max_tokens,
                              const compress::PolicyOptions& policy) {
    auto compressor = compress::MakeCompressor(model_->config(), policy);
    KV_CHECK(compressor.ok());
    GenerateOptions g;
    g.n_predict = max_tokens;
    g.stop_at_eos = false;
    g.sampling.temperature = 0;
    g.compressor = compressor->get();
    Transformer transformer(*model_);
    auto result = Generate(transformer, prompt, g, nullptr);
    KV_CHECK_MSG(result.ok(), result.status().ToString().c_str());
    return std::move(result).value();
  }

  // The same as a request.
  static GenerationRequest WithPolicy(const std::vector<int32_t>& prompt,
                                      int max_tokens,
                                      const compress::PolicyOptions& policy) {
    GenerationRequest r = Greedy(prompt, max_tokens);
    r.stop_at_eos = false;
    r.kv_compression = policy;
    return r;
  }

  static void ExpectQuiescent(const kvcache::KvManager& kv) {
    const kvcache::KvStats s = kv.Stats();
    EXPECT_EQ(s.used_blocks, 0u);
    EXPECT_EQ(s.used_blocks + s.cached_blocks + s.free_blocks,
              s.capacity_blocks);
    const Status st = kv.Validate({});
    EXPECT_TRUE(st.ok()) << st.ToString();
  }

  std::unique_ptr<Model> model_;
  std::vector<int32_t> story_;
  std::unique_ptr<testing::AloneReference> alone_;
};

// The tests that run in every KV format.
class SchedulerKvTypeTest
    : public SchedulerTest,
      public ::testing::WithParamInterface<kernels::KvFormat> {
 protected:
  kernels::KvFormat kv_format() const override { return GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(KvTypes, SchedulerKvTypeTest,
                         ::testing::ValuesIn(testing::AllKvFormats()),
                         [](const auto& info) {
                           return testing::KvFormatTestName(info.param);
                         });

// Mixes of concurrent requests whose prompts share prefixes of random length
// (and some tenants with their own salt), arriving in random order from
// several threads, on a pool small enough that blocks are evicted and
// sequences preempted all the time: 200 mixes in f16, the first 16 of the
// same mixes in each other format, over 28 blocks (pools are sized in
// blocks, so every format is under the same pressure; 48 blocks preempted
// too rarely to count on), which preempts every few mixes: each format sees
// hits, chunked prefill, eviction and preemption.
TEST_P(SchedulerKvTypeTest, RandomMixesEqualColdRunsAlone) {
  const bool f16 = kv_format() == kernels::KvFormat{};
  const int mixes = f16 ? 200 : 16;
  auto kv = NewKv(/*blocks=*/28);
  ThreadPool pool(ThreadPool::Options{.num_threads = 2});
  SchedulerOptions so;
  so.max_batch_tokens = 96;
  so.max_running = 8;
  so.context = 512;
  auto sched = Scheduler::Create(*model_, &pool, *kv, so);
  ASSERT_TRUE(sched.ok()) << sched.status().ToString();
  std::mt19937 rng(7);
  auto uniform = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  uint64_t total_cached = 0;
  for (int mix = 0; mix < mixes; ++mix) {
    SCOPED_TRACE("mix " + std::to_string(mix));
    const size_t base = uniform(0, 4000);
    struct Planned {
      GenerationRequest request;
      int delay_ms;
    };
    std::vector<Planned> planned;
    const int n_requests = uniform(2, 6);
    for (int r = 0; r < n_requests; ++r) {
      std::vector<int32_t> prompt = Prompt(base, uniform(0, 200));
      const size_t tail = uniform(0, 100);
      const size_t from = uniform(0, 4000);
      prompt.insert(prompt.end(), story_.begin() + from,
                    story_.begin() + from + tail);
      planned.push_back(
          {Greedy(prompt, uniform(1, 24), uniform(0, 4) == 0 ? "tenant-b" : ""),
           uniform(0, 3)});
    }
    std::vector<Outcome> outcomes(planned.size());
    std::vector<std::thread> clients;
    for (size_t r = 0; r < planned.size(); ++r) {
      clients.emplace_back([&, r] {
        std::this_thread::sleep_for(milliseconds(planned[r].delay_ms));
        auto h = (*sched)->Submit(planned[r].request);
        ASSERT_TRUE(h.ok()) << h.status().ToString();
        outcomes[r] = Collect(**h);
      });
    }
    for (std::thread& t : clients) t.join();
    for (size_t r = 0; r < planned.size(); ++r) {
      const GenerationRequest& q = planned[r].request;
      EXPECT_EQ(outcomes[r].tokens, Alone(q.prompt, q.max_tokens))
          << "request " << r << " of " << q.prompt.size() << " tokens";
      const RequestUsage& u = outcomes[r].finish.usage;
      EXPECT_EQ(u.prompt_tokens, int(q.prompt.size()));
      EXPECT_LT(u.cached_tokens, u.prompt_tokens);
      total_cached += u.cached_tokens;
    }
    ExpectQuiescent(*kv);
  }
  const SchedulerStats s = (*sched)->Stats();
  EXPECT_GT(total_cached, 0u);
  EXPECT_GT(kv->Stats().evictions, 0u);
  EXPECT_GT(s.preemptions, 0u) << "the pool never ran short";
  EXPECT_EQ(s.cached_tokens, total_cached);
}

// The same requests, submitted together, under step budgets that cut the
// prefills into chunks of every alignment to the 16-token blocks (5 and 37
// tokens, shared between the sequences of a step): the outputs are the
// generate loop's, bit for bit, in every format.
TEST_P(SchedulerKvTypeTest, ChunkSizesDoNotChangeOutputs) {
  std::vector<GenerationRequest> requests = {Greedy(Prompt(300, 70), 6),
                                             Greedy(Prompt(300, 45), 9),
                                             Greedy(Prompt(1200, 33), 5)};
  for (const int budget : {5, 16, 37}) {
    SCOPED_TRACE("max_batch_tokens " + std::to_string(budget));
    auto kv = NewKv(64);
    SchedulerOptions so;
    so.max_batch_tokens = budget;
    so.max_running = 3;
    auto sched = Scheduler::Create(*model_, nullptr, *kv, so);
    ASSERT_TRUE(sched.ok()) << sched.status().ToString();
    std::vector<std::shared_ptr<RequestHandle>> handles;
    for (const GenerationRequest& r : requests) {
      auto h = (*sched)->Submit(r);
      ASSERT_TRUE(h.ok()) << h.status().ToString();
      handles.push_back(std::move(h).value());
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_EQ(Collect(*handles[i]).tokens,
                Alone(requests[i].prompt, requests[i].max_tokens))
          << "request " << i;
    }
    ExpectQuiescent(*kv);
  }
}

TEST_P(SchedulerKvTypeTest, SamePromptAgainIsServedFromTheCache) {
  const bool residual = kernels::KvHasResidual(kv_format());
  auto kv = NewKv(256);
  auto sched = Scheduler::Create(*model_, nullptr, *kv, SchedulerOptions{});
  ASSERT_TRUE(sched.ok());
  const std::vector<int32_t> prompt = Prompt(100, 199);  // 200 tokens
  Outcome cold = Collect(**(*sched)->Submit(Greedy(prompt, 8)));
  EXPECT_EQ(cold.finish.usage.cached_tokens, 0);
  EXPECT_EQ(cold.finish.finish, RequestEnd::kLength);
  EXPECT_EQ((*sched)->CachedPrefix(prompt, "").total(), 192);  // full blocks
  EXPECT_EQ((*sched)->CachedPrefix(prompt, "other").total(), 0);
  Outcome warm = Collect(**(*sched)->Submit(Greedy(prompt, 8)));
  // 200 = 12.5 blocks: 12 full blocks are mapped, the rest computed.
  EXPECT_EQ(warm.finish.usage.cached_tokens, 192);
  EXPECT_EQ(warm.tokens, cold.tokens);
  EXPECT_EQ(cold.tokens, Alone(prompt, 8));
  // A block-aligned prompt hits everything but its last token: its last
  // block is copied on write, or, for types with a full-precision residual
  // (KIVI), dropped and its 16 tokens recomputed.
  const std::vector<int32_t> aligned = Prompt(100, 191);  // 192 tokens
  Outcome first = Collect(**(*sched)->Submit(Greedy(aligned, 4)));
  const uint64_t copies = kv->Stats().cow_copies;
  Outcome again = Collect(**(*sched)->Submit(Greedy(aligned, 4)));
  EXPECT_EQ(again.finish.usage.cached_tokens, residual ? 176 : 191);
  EXPECT_EQ(kv->Stats().cow_copies, copies + (residual ? 0 : 1));
  EXPECT_EQ(again.tokens, Alone(aligned, 4));
  EXPECT_EQ(first.tokens, Alone(aligned, 4));
  // Another tenant shares nothing.
  Outcome other = Collect(**(*sched)->Submit(Greedy(prompt, 8, "other")));
  EXPECT_EQ(other.finish.usage.cached_tokens, 0);
  EXPECT_EQ(other.tokens, cold.tokens);
  ExpectQuiescent(*kv);
}

TEST_F(SchedulerTest, CancelledRequestReleasesItsBlocks) {
  auto kv = NewKv(256);
  auto sched = Scheduler::Create(*model_, nullptr, *kv, SchedulerOptions{});
  ASSERT_TRUE(sched.ok());
  GenerationRequest r = Greedy(Prompt(0, 100), 400);
  r.stop_at_eos = false;
  auto h = (*sched)->Submit(r);
  ASSERT_TRUE(h.ok());
  RequestEvent ev;
  ASSERT_TRUE((*h)->Next(&ev, milliseconds(60000)));
  EXPECT_GT(kv->Stats().used_blocks, 0u);
  (*h)->Cancel();
  Outcome rest = Collect(**h);
  EXPECT_EQ(rest.finish.finish, RequestEnd::kCancelled);
  ExpectQuiescent(*kv);
  EXPECT_EQ((*sched)->Stats().running, 0u);
}

TEST_F(SchedulerTest, RejectsBadRequests) {
  auto kv = NewKv(8);  // 128 positions
  SchedulerOptions so;
  so.context = 256;
  so.max_queue = 1;
  auto sched = Scheduler::Create(*model_, nullptr, *kv, so);
  ASSERT_TRUE(sched.ok());
  auto code = [&](GenerationRequest r) {
    return (*sched)->Submit(std::move(r)).status().code();
  };
  EXPECT_EQ(code(Greedy({}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, 512}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, -3}, 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({1, 2}, -1)), StatusCode::kInvalidArgument);
  GenerationRequest choices = Greedy({1, 2}, 4);
  choices.n = 0;
  EXPECT_EQ(code(choices), StatusCode::kInvalidArgument);
  choices.n = so.max_running + 1;
  EXPECT_EQ(code(choices), StatusCode::kInvalidArgument);
  choices.n = 2;
  choices.kv_compression.policy = "streaming";
  EXPECT_EQ(code(choices), StatusCode::kInvalidArgument);
  GenerationRequest scored = Greedy({1, 2}, 4);
  scored.logprobs = kMaxTopLogprobs + 1;
  EXPECT_EQ(code(scored), StatusCode::kInvalidArgument);
  GenerationRequest stops = Greedy({1, 2}, 4);
  stops.stop_token_ids = {512};
  EXPECT_EQ(code(stops), StatusCode::kInvalidArgument);
  GenerationRequest biased = Greedy({1, 2}, 4);
  biased.sampling.logit_bias = {{-1, 1.0f}};
  EXPECT_EQ(code(biased), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy(Prompt(0, 300), 4)), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy(Prompt(0, 130), 4)), StatusCode::kInvalidArgument);
  GenerationRequest hot = Greedy({1, 2}, 4);
  hot.sampling.temperature = -1;
  hot.sampling.top_p = 7;
  EXPECT_EQ(code(hot), StatusCode::kInvalidArgument);
  SchedulerOptions bad;
  bad.max_running = 0;
  EXPECT_FALSE(Scheduler::Create(*model_, nullptr, *kv, bad).ok());
}

// The events of a request, by choice: tokens, their scores, and the finish.
struct Choices {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<ScoredToken>> scores;
  std::vector<RequestEvent> finish;
  std::vector<ScoredToken> prompt;  // the kPrompt event's
  int prompt_events = 0;
};

Choices CollectChoices(RequestHandle& h) {
  const size_t n = size_t(h.choices());
  Choices c;
  c.tokens.resize(n);
  c.scores.resize(n);
  c.finish.resize(n);
  size_t finished = 0;
  RequestEvent ev;
  while (finished < n) {
    if (!h.Next(&ev, milliseconds(60000))) {
      ADD_FAILURE() << "request timed out";
      h.Cancel();
      return c;
    }
    const size_t i = size_t(ev.choice);
    switch (ev.kind) {
      case RequestEvent::Kind::kPrompt:
        EXPECT_EQ(i, 0u);
        EXPECT_EQ(c.tokens[0].size(), 0u) << "the prompt's scores come first";
        c.prompt = ev.prompt_logprobs;
        ++c.prompt_events;
        break;
      case RequestEvent::Kind::kToken:
        c.tokens[i].push_back(ev.token);
        if (ev.logprob) c.scores[i].push_back(*ev.logprob);
        break;
      case RequestEvent::Kind::kFinish:
        c.finish[i] = ev;
        ++finished;
        break;
    }
  }
  return c;
}

// n choices: one prefill, then choice i is what the request alone with seed
// + i gives (forked sequences are batch-invariant too), and the prompt's
// blocks are allocated once.
TEST_F(SchedulerTest, ChoicesShareThePromptAndEachIsItsSeedAlone) {
  auto kv = NewKv(512);
  SchedulerOptions so;
  so.context = 1200;
  auto sched = Scheduler::Create(*model_, nullptr, *kv, so);
  ASSERT_TRUE(sched.ok());
  const int n = 8, gen = 24;
  GenerationRequest r;
  r.prompt = Prompt(300, 999);  // 1000 tokens: 62 full blocks and 8
  r.max_tokens = gen;
  r.stop_at_eos = false;
  r.sampling.temperature = 1.0f;
  r.sampling.seed = 1234;
  r.n = n;
  const uint64_t allocations_before = kv->Stats().allocations;
  auto h = (*sched)->Submit(r);
  ASSERT_TRUE(h.ok());
  const Choices together = CollectChoices(**h);
  const uint64_t allocations = kv->Stats().allocations - allocations_before;
  // 63 prompt blocks, then per choice its copy of the 63rd and at most 2
  // blocks of its 24 tokens; each choice computing its prompt: 8 x 63.
  EXPECT_LE(allocations, 63u + n * 3u);
  EXPECT_EQ(kv->Stats().cow_copies, uint64_t(n - 1));
  ExpectQuiescent(*kv);
  int distinct = 0;
  for (int c = 0; c < n; ++c) {
    SCOPED_TRACE("choice " + std::to_string(c));
    EXPECT_EQ(together.finish[c].finish, RequestEnd::kLength);
    EXPECT_EQ(together.finish[c].usage.prompt_tokens, 1000);
    EXPECT_EQ(together.finish[c].usage.completion_tokens, gen);
    GenerationRequest alone = r;
    alone.n = 1;
    alone.sampling.seed = r.sampling.seed + uint64_t(c);
    auto a = (*sched)->Submit(alone);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(Collect(**a).tokens, together.tokens[c]);
    distinct += c > 0 && together.tokens[c] != together.tokens[0];
  }
  EXPECT_GT(distinct, 0) << "every choice sampled the same tokens";
  const SchedulerStats st = (*sched)->Stats();
  EXPECT_EQ(st.requests_submitted, st.requests_finished);
}

// Cancelling one choice leaves the others running; a request cancelled
// before it forked ends every choice.
TEST_F(SchedulerTest, ChoicesEndOnTheirOwn) {
  auto kv = NewKv(256);
  auto sched = Scheduler::Create(*model_, nullptr, *kv, SchedulerOptions{});
  ASSERT_TRUE(sched.ok());
  GenerationRequest r = Greedy(Prompt(0, 40), 300);
  r.stop_at_eos = false;
  r.n = 3;
  auto h = (*sched)->Submit(r);
  ASSERT_TRUE(h.ok());
  (*h)->Cancel(1);
  const Choices c = CollectChoices(**h);
  EXPECT_EQ(c.finish[1].finish, RequestEnd::kCancelled);
  EXPECT_EQ(c.finish[0].finish, RequestEnd::kLength);
  EXPECT_EQ(c.finish[2].finish, RequestEnd::kLength);
  EXPECT_EQ(c.tokens[0], c.tokens[2]);  // greedy
  EXPECT_EQ(c.tokens[0], Alone(r.prompt, 300));
  ExpectQuiescent(*kv);

  auto early = (*sched)->Submit(r);
  ASSERT_TRUE(early.ok());
  (*early)->Cancel();
  const Choices gone = CollectChoices(**early);
  for (const RequestEvent& f : gone.finish) {
    EXPECT_EQ(f.finish, RequestEnd::kCancelled);
  }
  ExpectQuiescent(*kv);
}

// The prompt's log-probabilities are the model's, computed whether or not
// the prompt is cached (it is then computed again, not mapped): equal to a
// plain forward pass over the prompt and to `kvstash perplexity`'s NLL.
TEST_F(SchedulerTest, PromptLogprobsAreThePerplexityOnesCachedOrNot) {
  auto kv = NewKv(256);
  auto sched = Scheduler::Create(*model_, nullptr, *kv, SchedulerOptions{});
  ASSERT_TRUE(sched.ok());
  const std::vector<int32_t> prompt = Prompt(500, 127);  // BOS + 127
  const int vocab = model_->config().vocab_size;
  Transformer tf(*model_);
  LocalKvCache local(model_->config().n_layers, model_->config().n_kv_heads,
                     model_->config().head_dim, int(prompt.size()),
                     kv_format());
  std::vector<float> logits(prompt.size() * size_t(vocab));
  ASSERT_TRUE(tf.Forward(prompt, 0, local, true, logits.data()).ok());
  const std::vector<int32_t> text(prompt.begin() + 1, prompt.end());
  auto ppl = Perplexity(tf, text, int(prompt.size()), 1, kv_format(), {});
  ASSERT_TRUE(ppl.ok());

  GenerationRequest r = Greedy(prompt, 0);
  r.prompt_logprobs = true;
  r.logprobs = 3;
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round == 0 ? "cold" : "cached");
    auto h = (*sched)->Submit(r);
    ASSERT_TRUE(h.ok());
    const Choices c = CollectChoices(**h);
    EXPECT_EQ(c.prompt_events, 1);
    EXPECT_TRUE(c.tokens[0].empty());
    EXPECT_EQ(c.finish[0].finish, RequestEnd::kLength);
    EXPECT_EQ(c.finish[0].usage.completion_tokens, 0);
    EXPECT_EQ(c.finish[0].usage.cached_tokens, 0);
    ASSERT_EQ(c.prompt.size(), prompt.size() - 1);
    double nll = 0;
    for (size_t p = 1; p < prompt.size(); ++p) {
      const ScoredToken& s = c.prompt[p - 1];
      EXPECT_EQ(s.token, prompt[p]);
      const std::span<const float> row(&logits[(p - 1) * size_t(vocab)],
                                       size_t(vocab));
      EXPECT_NEAR(s.logprob, TokenLogprob(row, prompt[p]), 1e-4) << p;
      ASSERT_EQ(s.top.size(), 3u);
      EXPECT_GE(s.top[0].second, s.logprob);
      nll -= s.logprob;
    }
    EXPECT_NEAR(nll / double(prompt.size() - 1), ppl->nll, 1e-4);
  }
  // The prompt's blocks were published all the same: a plain request maps
  // them.
  auto plain = (*sched)->Submit(Greedy(prompt, 4));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(Collect(**plain).finish.usage.cached_tokens, 127);
  ExpectQuiescent(*kv);
}

// Generated tokens' scores: greedy picks the top alternative; a stop id
// ends the choice like EOS (and is not reported).
TEST_F(SchedulerTest, TokenLogprobsAndStopTokenIds) {
  auto kv = NewKv(256);
  auto sched = Scheduler::Create(*model_, nullptr, *kv, SchedulerOptions{});
  ASSERT_TRUE(sched.ok());
  GenerationRequest r = Greedy(Prompt(0, 30), 20);
  r.stop_at_eos = false;
  r.logprobs = 2;
  auto h = (*sched)->Submit(r);
  ASSERT_TRUE(h.ok());
  const Choices c = CollectChoices(**h);
  ASSERT_EQ(c.tokens[0].size(), 20u);
  ASSERT_EQ(c.scores[0].size(), 20u);
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_EQ(c.scores[0][i].token, c.tokens[0][i]);
    ASSERT_EQ(c.scores[0][i].top.size(), 2u);
    EXPECT_EQ(c.scores[0][i].top[0].first, c.tokens[0][i]);
    EXPECT_FLOAT_EQ(c.scores[0][i].top[0].second, c.scores[0][i].logprob);
    EXPECT_LE(c.scores[0][i].logprob, 0.0f);
  }
  GenerationRequest stop = r;
  stop.logprobs = -1;
  stop.stop_token_ids = {c.tokens[0][5]};
  const size_t first =
      std::find(c.tokens[0].begin(), c.tokens[0].end(), c.tokens[0][5]) -
      c.tokens[0].begin();
  auto s = (*sched)->Submit(stop);
  ASSERT_TRUE(s.ok());
  const Outcome stopped = Collect(**s);
  EXPECT_EQ(stopped.finish.finish, RequestEnd::kStop);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(c.tokens[0].begin(),
                                                 c.tokens[0].begin() + first));
  EXPECT_EQ(stopped.finish.usage.completion_tokens, int(first) + 1);
  ExpectQuiescent(*kv);
}

// A sequence that outgrows the whole pool ends with "length" instead of
// waiting forever, and its neighbours are unaffected.
TEST_F(SchedulerTest, SequenceLongerThanThePoolEndsWithLength) {
  auto kv = NewKv(4);  // 64 positions
  auto sched = Scheduler::Create(*model_, nullptr, *kv, SchedulerOptions{});
  ASSERT_TRUE(sched.ok());
  GenerationRequest r = Greedy(Prompt(0, 40), 100);
  r.stop_at_eos = false;
  Outcome out = Collect(**(*sched)->Submit(r));
  EXPECT_EQ(out.finish.finish, RequestEnd::kLength);
  EXPECT_EQ(int(out.tokens.size()), 64 - 41 + 1);
  ExpectQuiescent(*kv);
}

// Token eviction in the server: a request with kv_compression computes its
// prompt, compacts it into fewer blocks of the pool, and decodes over what
// it kept, token for token what the plain generate loop gives with the same
// policy on a private cache. A repeat maps the uncompressed prefix the first
// left cached (all but the compressor's observation window) and gives the
// same output again; the pool's books balance throughout.
TEST_F(SchedulerTest, CompressedPromptsMatchGenerateAndFreeBlocks) {
  auto kv = NewKv(/*blocks=*/64);
  ThreadPool pool(ThreadPool::Options{.num_threads = 2});
  SchedulerOptions so;
  so.context = 512;
  auto sched = Scheduler::Create(*model_, &pool, *kv, so);
  ASSERT_TRUE(sched.ok()) << sched.status().ToString();
  const std::vector<int32_t> prompt = Prompt(100, 319);  // 320 tokens
  for (const char* policy : {"snapkv", "expected", "h2o"}) {
    SCOPED_TRACE(policy);
    const compress::PolicyOptions options{policy, 0.75};
    const GenerateResult reference = GenerateWith(prompt, 24, options);
    for (int round = 0; round < 2; ++round) {
      auto h = (*sched)->Submit(WithPolicy(prompt, 24, options));
      ASSERT_TRUE(h.ok()) << h.status().ToString();
      const Outcome out = Collect(**h);
      EXPECT_EQ(out.tokens, reference.gen_ids) << "round " << round;
      const RequestUsage& u = out.finish.usage;
      EXPECT_EQ(u.kv_policy, policy);
      EXPECT_EQ(u.kv_kept_tokens, 80.0);  // a quarter of 320 per head
      EXPECT_EQ(u.kv_blocks_before, 20);
      EXPECT_EQ(u.kv_blocks_after, 5);
      const bool shared = std::string(policy) == "expected";
      if (shared) {
        // Query-agnostic: the document (the prompt before its last token)
        // is compressed and stored once, then mapped.
        EXPECT_EQ(u.kv_compressed_tokens, 319);
        EXPECT_EQ(u.kv_cache, round == 0 ? "stored" : "mapped");
        if (round == 1) {
          EXPECT_EQ(u.cached_tokens, 319);
        }
      } else {
        EXPECT_EQ(u.kv_compressed_tokens, 320);
        EXPECT_EQ(u.kv_cache, "per_request");
      }
      if (round == 1 && std::string(policy) == "snapkv") {
        EXPECT_GT(u.cached_tokens, 0);  // the plain prefix, left cached
      }
      if (std::string(policy) == "h2o") {
        EXPECT_EQ(u.cached_tokens, 0);
      }
      ExpectQuiescent(*kv);
    }
  }
  const SchedulerStats stats = (*sched)->Stats();
  EXPECT_EQ(stats.compressions, 5u);
  EXPECT_EQ(stats.evicted_tokens, 4 * 240.0 + 239);
  EXPECT_EQ(stats.compressed_prefix_hits, 1u);
  EXPECT_EQ(stats.compressed_prefix_tokens, 319u);
  EXPECT_EQ(kv->Stats().rewrites, 5u);
  EXPECT_EQ(kv->Stats().rows_published, 1u);
  EXPECT_EQ(kv->Stats().rows_hits, 1u);
}

// While a compressed request decodes, the pool holds its kept rows only:
// 4096 prompt tokens at ratio 0.75 go from 256 blocks to 64 (+ the blocks
// the decode adds), and the uncompressed ones are cached, evictable.
TEST_F(SchedulerTest, CompressedSequenceHoldsAQuarterOfTheBlocks) {
  // 256 blocks of prompt, 64 of room for the compacted copy, and spare.
  auto kv = NewKv(/*blocks=*/330);
  ThreadPool pool(ThreadPool::Options{.num_threads = 2});
  SchedulerOptions so;
  so.context = 4200;
  auto sched = Scheduler::Create(*model_, &pool, *kv, so);
  ASSERT_TRUE(sched.ok());
  auto h = (*sched)->Submit(WithPolicy(Prompt(0, 4095), 64, {"knorm", 0.75}));
  ASSERT_TRUE(h.ok());
  // After the second token, the step that compressed the prompt (and gave
  // the first) has published its holdings.
  RequestEvent ev;
  ASSERT_TRUE((*h)->Next(&ev, milliseconds(60000)));
  ASSERT_TRUE((*h)->Next(&ev, milliseconds(60000)));
  size_t held = 0;
  for (const SequenceHolding& s : (*sched)->Stats().sequences) {
    held = size_t(s.blocks);
    EXPECT_EQ(s.kv_policy, "knorm");
  }
  EXPECT_GE(held, 64u);
  EXPECT_LE(held, 69u);  // 64 kept + up to 64 generated rows
  EXPECT_LE(kv->Stats().used_blocks, 69u);
  const Outcome out = Collect(**h);
  EXPECT_EQ(out.finish.usage.kv_blocks_before, 256);
  EXPECT_EQ(out.finish.usage.kv_blocks_after, 64);
  ExpectQuiescent(*kv);
}

// Under pool pressure: a compressed request that arrives after a long plain
// one is preempted as it grows and recomputed (its prompt compressed again
// the same way); the room for the compacted copy is reserved with the
// prompt's last chunk, so the compaction itself never lacks blocks. Both
// outputs equal their references.
TEST_F(SchedulerTest, CompressedSequencesSurvivePreemption) {
  auto kv = NewKv(/*blocks=*/40);
  ThreadPool pool(ThreadPool::Options{.num_threads = 2});
  SchedulerOptions so;
  so.context = 700;
  so.max_batch_tokens = 64;
  auto sched = Scheduler::Create(*model_, &pool, *kv, so);
  ASSERT_TRUE(sched.ok());
  const compress::PolicyOptions options{"snapkv", 0.75};
  GenerationRequest plain;
  plain.prompt = Prompt(0, 99);
  plain.max_tokens = 300;
  plain.stop_at_eos = false;
  plain.sampling.temperature = 0;
  GenerationRequest compressed = plain;
  compressed.prompt = Prompt(2000, 199);
  compressed.kv_compression = options;
  auto first = (*sched)->Submit(plain);
  ASSERT_TRUE(first.ok());
  auto second = (*sched)->Submit(compressed);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  const Outcome a = Collect(**first);
  const Outcome b = Collect(**second);
  EXPECT_EQ(a.tokens, Alone(plain.prompt, plain.max_tokens));
  auto compressor = compress::MakeCompressor(model_->config(), options);
  GenerateOptions g;
  g.n_predict = compressed.max_tokens;
  g.stop_at_eos = false;
  g.sampling.temperature = 0;
  g.compressor = compressor->get();
  Transformer transformer(*model_);
  auto reference = Generate(transformer, compressed.prompt, g, nullptr);
  ASSERT_TRUE(reference.ok());
  EXPECT_EQ(b.tokens, reference->gen_ids);
  const SchedulerStats stats = (*sched)->Stats();
  EXPECT_GT(stats.preemptions, 0u);
  EXPECT_GE(stats.compressions, 2u);  // before and after the preemption
  EXPECT_EQ(stats.compression_failures, 0u);
  EXPECT_EQ(b.finish.usage.kv_blocks_after, 4);
  ExpectQuiescent(*kv);
}

// kv_compression.every: the server compresses again every N positions back
// to the first compaction's budget, as the generate loop does, token for
// token; the sequence's blocks stay bounded while it decodes.
TEST_F(SchedulerTest, FixedBudgetDecodingMatchesGenerate) {
  auto kv = NewKv(/*blocks=*/64);
  ThreadPool pool(ThreadPool::Options{.num_threads = 2});
  SchedulerOptions so;
  so.context = 512;
  auto sched = Scheduler::Create(*model_, &pool, *kv, so);
  ASSERT_TRUE(sched.ok());
  const std::vector<int32_t> prompt = Prompt(100, 199);  // 200 tokens
  for (const char* policy : {"h2o", "streaming", "expected"}) {
    SCOPED_TRACE(policy);
    const compress::PolicyOptions options{policy, 0.75, false, 16};
    const GenerateResult reference = GenerateWith(prompt, 80, options);
    EXPECT_GE(reference.recompressions, 4);
    for (int round = 0; round < 2; ++round) {
      auto h = (*sched)->Submit(WithPolicy(prompt, 80, options));
      ASSERT_TRUE(h.ok());
      const Outcome out = Collect(**h);
      EXPECT_EQ(out.tokens, reference.gen_ids) << "round " << round;
      const RequestUsage& u = out.finish.usage;
      EXPECT_EQ(u.kv_recompressions, reference.recompressions);
      // 50 rows kept, at most 16 more: never more than 5 blocks.
      EXPECT_LE(u.kv_blocks_after, 5);
      if (std::string(policy) == "expected") {
        EXPECT_EQ(u.kv_cache, round == 0 ? "stored" : "mapped");
      }
      ExpectQuiescent(*kv);
    }
  }
  EXPECT_GT((*sched)->Stats().recompressions, 0u);
}

// Greedy output of `r` on a fresh pool and scheduler: what it computes cold.
std::vector<int32_t> ColdOutput(const Model& model,
                                std::unique_ptr<kvcache::KvManager> kv,
                                const GenerationRequest& r) {
  SchedulerOptions so;
  so.context = 512;
  auto sched = Scheduler::Create(model, nullptr, *kv, so);
  KV_CHECK(sched.ok());
  auto h = (*sched)->Submit(r);
  KV_CHECK(h.ok());
  return Collect(**h).tokens;
}

// A query-agnostic policy's compressed document is stored once and mapped by
// later requests with the same document and policy, whatever question
// follows it (kv_context), with the outputs they compute cold; a request
// with another policy, other parameters or none never maps it, and the
// compressed document is never mapped as plain positions.
TEST_F(SchedulerTest, CompressedDocumentsAreReusedOnlyUnderTheirPolicy) {
  auto kv = NewKv(/*blocks=*/96);
  SchedulerOptions so;
  so.context = 512;
  auto sched = Scheduler::Create(*model_, nullptr, *kv, so);
  ASSERT_TRUE(sched.ok());
  const std::vector<int32_t> document = Prompt(200, 299);  // 300 tokens
  auto ask = [&](size_t question, const compress::PolicyOptions& policy) {
    GenerationRequest r = WithPolicy(document, 12, policy);
    r.prompt.insert(r.prompt.end(), story_.begin() + question,
                    story_.begin() + question + 20);
    r.kv_context = int(document.size());
    return r;
  };
  auto run = [&](const GenerationRequest& r) {
    auto h = (*sched)->Submit(r);
    KV_CHECK(h.ok());
    Outcome out = Collect(**h);
    EXPECT_EQ(out.tokens, ColdOutput(*model_, NewKv(96), r));
    ExpectQuiescent(*kv);
    return out.finish.usage;
  };
  const compress::PolicyOptions knorm{"knorm", 0.5};
  RequestUsage u = run(ask(1000, knorm));
  EXPECT_EQ(u.kv_cache, "stored");
  EXPECT_EQ(u.kv_compressed_tokens, 300);
  EXPECT_EQ(u.kv_kept_tokens, 150.0);
  // Another question after the same document maps its compressed rows.
  u = run(ask(2000, knorm));
  EXPECT_EQ(u.kv_cache, "mapped");
  EXPECT_EQ(u.cached_tokens, 300);
  EXPECT_EQ(u.kv_blocks_after, 10);  // 150 rows in blocks of 16
  // Other parameters, another policy, no policy: never the stored rows.
  for (const compress::PolicyOptions& other :
       {compress::PolicyOptions{"knorm", 0.25},
        compress::PolicyOptions{"knorm", 0.5, /*merge=*/true},
        compress::PolicyOptions{"streaming", 0.5}, compress::PolicyOptions{}}) {
    SCOPED_TRACE(other.policy + " " + std::to_string(other.ratio));
    u = run(ask(3000, other));
    EXPECT_NE(u.kv_cache, "mapped");
    // Plain positions of the document (cached by the first request) are
    // mapped; never more than the document.
    EXPECT_LE(u.cached_tokens, 300);
  }
  const SchedulerStats stats = (*sched)->Stats();
  EXPECT_EQ(stats.compressed_prefix_hits, 1u);
  // A policy's rows are mapped again once another policy stored its own.
  u = run(ask(4000, knorm));
  EXPECT_EQ(u.kv_cache, "mapped");
  u = run(ask(4000, {"streaming", 0.5}));
  EXPECT_EQ(u.kv_cache, "mapped");
}

// A prefix of the document is not the document: no partial reuse of rows
// (they were chosen over all of it).
TEST_F(SchedulerTest, CompressedRowsNeedTheWholeDocument) {
  auto kv = NewKv(/*blocks=*/96);
  SchedulerOptions so;
  so.context = 512;
  auto sched = Scheduler::Create(*model_, nullptr, *kv, so);
  ASSERT_TRUE(sched.ok());
  GenerationRequest r = WithPolicy(Prompt(200, 299), 4, {"expected", 0.75});
  for (const size_t n : {size_t(300), size_t(280)}) {
    r.prompt.resize(n);
    auto h = (*sched)->Submit(r);
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(Collect(**h).finish.usage.kv_cache, "stored") << n;
  }
}

TEST_F(SchedulerTest, BadCompressionRequestsAreRefused) {
  auto kv = NewKv(/*blocks=*/32);
  auto sched = Scheduler::Create(*model_, nullptr, *kv, SchedulerOptions{});
  ASSERT_TRUE(sched.ok());
  GenerationRequest r;
  r.prompt = Prompt(0, 20);
  r.kv_compression = {"nope", 0.5};
  auto bad = (*sched)->Submit(r);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kv_compression.policy"),
            std::string::npos);
  r.kv_compression = {"snapkv", 1.0};
  bad = (*sched)->Submit(r);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("kv_compression.ratio"),
            std::string::npos);
  const ModelConfig& c = model_->config();
  kvcache::KvManagerOptions o;
  o.layout = {c.n_layers,
              c.n_kv_heads,
              c.head_dim,
              16,
              {kernels::KvType::kKivi4, kernels::KvType::kKivi4}};
  o.capacity_bytes = 32 * o.layout.block_bytes();
  o.prefault = false;
  auto kivi = kvcache::KvManager::Create(o);
  ASSERT_TRUE(kivi.ok());
  auto kivi_sched =
      Scheduler::Create(*model_, nullptr, **kivi, SchedulerOptions{});
  ASSERT_TRUE(kivi_sched.ok());
  r.kv_compression = {"snapkv", 0.5};
  bad = (*kivi_sched)->Submit(r);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("KIVI"), std::string::npos);
  // A prompt that fits the pool, but not with room for its compacted copy.
  r.prompt = Prompt(0, 399);  // 25 blocks; pyramid may keep every row
  r.kv_compression = {"pyramid", 0.5};
  bad = (*sched)->Submit(r);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("compacted"), std::string::npos)
      << bad.status().ToString();
}

}  // namespace
}  // namespace kvstash
