// Scheduler: continuous batching of generation requests over one model and
// one shared, paged KV cache.
//
// A single loop thread runs steps. Each step builds one batch under a token
// budget (max_batch_tokens) and runs it as one forward pass:
//   1. every running sequence with one token pending (decode) gets it first,
//      so a long prompt never stalls running decodes;
//   2. running sequences still in their prompt get the next chunk of it
//      (chunked prefill) while the budget lasts;
//   3. waiting requests are admitted in arrival order (FCFS): the KV manager
//      maps the longest cached prefix of the prompt, and the rest is
//      prefilled in chunks from the next free position.
// When the KV manager has tiers (disk, Redis) and DRAM lacks part of a new
// request's prefix, the request first goes to one of loader_threads loader
// threads, which prefetches what the tiers hold into DRAM
// (KvManager::Prefetch) while the steps go on for everyone else; loads of
// different requests run side by side, and requests for one prefix read it
// once (the KV manager's Prefetch waits for a load of the same blocks that
// is in flight and maps what it brought); then
// the request rejoins the queue in arrival order and is admitted as above,
// mapping the loaded blocks. With layered_loads (and a raw tier codec, tiers
// that read ranges, no token eviction), the loader instead gives the
// request the blocks its prefix is being read into (KvManager::
// BeginLayeredLoad) and sends it back at once: its own suffix is computed
// while the prefix is read group of layers by group (each layer of the
// forward pass waits for that layer of the load), and before its logits are
// used or its blocks named the load is verified whole; a load that fails
// verification (or a read) sends the request back to be recomputed. Until
// its load is in, such a request joins a step only alone (a step waits at
// its layers): with others planned it stays queued, its load going on, so
// their tokens never wait for it.
// When the pool cannot give a sequence its blocks, the most recently arrived
// running sequence is preempted: its blocks are released (its full blocks
// stay cached) and it goes back to the head of the queue with the tokens it
// generated so far, to be recomputed (mostly from the cache) when blocks free
// up; nothing is lost and its output is unchanged. Requests join and leave at
// every step. A cancelled request (client gone, stop string found) leaves at
// the next step and its blocks are released then.
//
// Results are reported on the request's handle as events (each new token,
// then one finish event with the usage); with greedy sampling they are
// token-for-token what the request computed alone on a cold cache gives
// (the forward pass is batch-invariant and a cache hit maps the same K/V).
//
// Thread-safety: Submit, Stats and the handles may be used from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "compress/policy.h"
#include "engine/logprobs.h"
#include "engine/sampler.h"
#include "kvcache/kv_manager.h"
#include "model/model.h"

namespace kvstash {

struct SchedulerOptions {
  int max_batch_tokens = 512;  // tokens per forward step (all sequences)
  int max_running = 64;        // sequences decoding or prefilling at once
  int max_queue =
      256;  // waiting (or loading) requests; beyond: ResourceExhausted
  int context = 2048;  // positions per sequence (prompt + generated)
  // Loads from the tiers that run at once (one thread each; started only
  // when the KV manager has tiers). A load mostly waits on I/O.
  int loader_threads = 4;
  // Compute a prompt's suffix while its prefix loads, layer by layer (see
  // above); false: after the whole load.
  bool layered_loads = true;

  Status Validate() const;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, BOS included when wanted
  // >= 0; 0: the prompt is computed (e.g. for its logprobs), nothing is
  // generated, and the request ends with kLength.
  int max_tokens = 16;
  SamplerOptions sampling;
  bool stop_at_eos = true;
  std::vector<int32_t> stop_token_ids;  // each ends its choice as EOS does
  // Choices of this prompt (OpenAI's n), in [1, max_running]: the prompt is
  // computed once, then the sequence forks into n (KvManager::Fork: they
  // share its full blocks, each copies the partial last one). Choice i
  // samples with seed + i, so it is what the request alone with that seed
  // gives. Every event names its choice; each choice finishes on its own.
  // Not with kv_compression.
  int n = 1;
  // Log-probabilities (engine/logprobs.h: of the raw logits): -1: none;
  // k in [0, kMaxTopLogprobs]: each generated token's, with the k most
  // likely tokens of the same distribution.
  int logprobs = -1;
  // Also the prompt's tokens' (each given the tokens before it; with
  // max(logprobs, 0) alternatives), in one kPrompt event of choice 0 before
  // any token. Their logits are not cached, so such a prompt is computed,
  // never mapped from the cache (its blocks are still published).
  bool prompt_logprobs = false;
  std::string cache_salt;  // tenant namespace: different salts share nothing
  // Token eviction (compress/policy.h); an empty policy: none. Applied at
  // the prompt's CompressionPoint (engine/kv_compaction.h): a query-agnostic
  // policy compresses the document, its first `kv_context` positions (a
  // chat's messages before the last; 0: the prompt before its last token),
  // and stores its compacted rows in the cache (and the tiers) under the
  // policy's name, so a later request with the same document and policy
  // maps them instead of computing and compressing it again. Query-aware
  // policies compress the whole prompt, for this request only.
  compress::PolicyOptions kv_compression;
  int kv_context = 0;
};

enum class RequestEnd { kStop, kLength, kCancelled, kError };
const char* RequestEndName(RequestEnd reason);

struct RequestUsage {
  int prompt_tokens = 0;
  int cached_tokens = 0;  // prompt tokens mapped from the cache
  // Of cached_tokens, those loaded from each tier for this request (in the
  // KV manager's tier order; empty without tiers); the rest were in DRAM.
  std::vector<int> tier_cached_tokens;
  int completion_tokens = 0;  // generated, EOS included
  // With kv_compression: the prompt's rows kept per (layer, kv head), on
  // average, and the blocks the sequence held before and after compaction
  // (0 when it was not compressed: no policy, or no blocks to compact into).
  std::string kv_policy;  // the policy that ran; empty: none
  double kv_kept_tokens = 0;
  int kv_blocks_before = 0, kv_blocks_after = 0;
  // Where the compressed prompt came from and went: "mapped" (a document
  // compressed earlier, mapped from the cache), "stored" (compressed now
  // and stored for reuse), "private" (compressed now, not stored: the
  // same rows were being stored by another request, or no block was left),
  // "per_request" (a query-aware policy: never stored).
  std::string kv_cache;
  int kv_compressed_tokens = 0;  // the positions compressed (the document)
  int kv_recompressions = 0;     // compressions since (kv_compression.every)
};

// What one running sequence holds in the KV pool.
struct SequenceHolding {
  uint64_t id = 0;  // arrival order
  int positions = 0;
  int blocks = 0;
  std::string kv_policy;  // empty: uncompressed
};

struct RequestEvent {
  enum class Kind { kPrompt, kToken, kFinish };
  Kind kind = Kind::kToken;
  int choice = 0;      // of GenerationRequest::n
  int32_t token = -1;  // kToken: the new token (EOS and stop ids are not
                       // reported)
  // kToken with GenerationRequest::logprobs >= 0: its log-probability.
  std::optional<ScoredToken> logprob;
  // kPrompt: the prompt's tokens 1 .. n-1, scored (token 0 has no context).
  std::vector<ScoredToken> prompt_logprobs;
  // kFinish only:
  RequestEnd finish = RequestEnd::kStop;
  Status error;  // kError: what went wrong
  RequestUsage usage;
  double queue_seconds = 0;                    // submit -> first scheduled
  double prompt_seconds = 0;                   // first scheduled -> first token
  std::chrono::steady_clock::time_point time;  // when the event was made
};

// The caller's side of a request: a queue of events and a cancel switch.
class RequestHandle {
 public:
  // Waits up to `timeout` for the next event; false on timeout. After the
  // finish event no more events come.
  bool Next(RequestEvent* event, std::chrono::milliseconds timeout);
  // Asks the scheduler to drop the request (every choice); its blocks are
  // released at the next step and a kCancelled finish event follows for
  // each choice that had not finished.
  void Cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  // The same for one choice (e.g. it reached a stop string). A choice not
  // yet forked goes with its parent, choice 0.
  void Cancel(int choice);
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  bool cancelled(int choice) const;
  int choices() const { return int(choice_cancelled_.size()); }
  std::chrono::steady_clock::time_point submitted() const { return submitted_; }

 private:
  friend class Scheduler;
  void Push(RequestEvent event);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestEvent> events_;
  std::atomic<bool> cancelled_{false};
  std::vector<std::atomic<bool>> choice_cancelled_;  // sized at Submit
  std::chrono::steady_clock::time_point submitted_;
};

struct SchedulerStats {
  size_t waiting = 0;
  size_t running = 0;
  uint64_t requests_submitted = 0;  // choices: a request of n counts n
  uint64_t requests_finished = 0;
  uint64_t preemptions = 0;
  uint64_t prompt_tokens = 0;  // of admitted requests (first admission)
  uint64_t cached_tokens = 0;  // of which mapped from the cache
  std::vector<uint64_t> tier_cached_tokens;  // of which loaded, per tier
  size_t loading = 0;  // requests whose prefix is being loaded from tiers
  uint64_t generated_tokens = 0;
  uint64_t steps = 0;
  double step_seconds = 0;     // wall time of all steps
  double forward_seconds = 0;  // of which in the forward pass
  // Token eviction: prompts compressed, mean tokens evicted per (layer, kv
  // head) summed over every compression, compressions skipped for want of
  // blocks, and the time spent compressing.
  uint64_t compressions = 0;
  double evicted_tokens = 0;
  uint64_t compression_failures = 0;
  double compress_seconds = 0;
  // Compressed documents mapped from the cache instead of being computed
  // and compressed again, and the positions they covered.
  uint64_t compressed_prefix_hits = 0;
  uint64_t compressed_prefix_tokens = 0;
  // Compressions back to a fixed budget (kv_compression.every); their
  // evicted rows count in evicted_tokens.
  uint64_t recompressions = 0;
  std::vector<SequenceHolding> sequences;  // running, after the last step
};

class Scheduler {
 public:
  // `model`, `pool` (may be null) and `kv` must outlive the scheduler. The
  // KV layout must match the model (layers, kv heads, head dim).
  static Result<std::unique_ptr<Scheduler>> Create(
      const Model& model, ThreadPool* pool, kvcache::KvManager& kv,
      const SchedulerOptions& options);
  // Stops the loop; requests still pending finish with kError (Unavailable).
  ~Scheduler();

  // Queues a request. InvalidArgument for an empty prompt, an id outside the
  // vocabulary (prompt, stop ids, logit bias), max_tokens < 0, n outside [1,
  // max_running] or with kv_compression, logprobs outside [-1,
  // kMaxTopLogprobs], bad sampling options, or a prompt that leaves no room
  // to generate in the context or in the KV pool; ResourceExhausted when the
  // queue is full.
  Result<std::shared_ptr<RequestHandle>> Submit(GenerationRequest request);

  // The longest cached prefix of `tokens` under `cache_salt`, split over
  // DRAM and the tiers (KvManager::Probe).
  kvcache::PrefixHit CachedPrefix(std::span<const int32_t> tokens,
                                  const std::string& cache_salt) const;

  SchedulerStats Stats() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Sequence;
  Scheduler(const Model& model, ThreadPool* pool, kvcache::KvManager& kv,
            const SchedulerOptions& options);

  void Loop();
  // A loader thread: prefetches the prefixes of queued requests.
  void LoaderLoop();
  // Moves requests whose prefetch finished from loading_ back to waiting_.
  // REQUIRES: mu_ held.
  void TakeLoaded();
  // One step over the current sets; false when there was nothing to do.
  bool Step();
  // Drops cancelled requests from both sets.
  void ReapCancelled();
  // Gives `seq` blocks for `n_tokens` positions, preempting later arrivals as
  // needed; false when even that cannot make room (then `seq` itself was
  // preempted or failed).
  bool ReserveOrPreempt(Sequence* seq, int n_tokens);
  void Preempt(Sequence* seq);
  // Waits for `seq`'s layered load, if it has one, and names what it
  // loaded (KvManager::FinishLayeredLoad); false when part of it did not
  // verify (then what was computed over it is wrong). Before anything
  // releases, commits or samples `seq`.
  bool SettleLayered(Sequence* seq);
  // `seq`'s usage (and the stats) counted more cached tokens at its
  // admission than it will map: `cached` instead.
  void RecountCached(Sequence* seq, int cached);
  void Finish(Sequence* seq, RequestEnd reason, Status error = Status::OK());
  // Evicts tokens of `seq`'s computed prompt (its kv_compression) and moves
  // it into fewer blocks.
  void Compress(Sequence* seq);
  // `seq` mapped its compressed document (KvManager::AdmitRows): its
  // compaction and usage say so.
  void MapCompressed(Sequence* seq);
  // Fills `seq`'s usage for its compressed document (`kept` rows per (layer,
  // kv head) on average; `cache` as RequestUsage::kv_cache).
  void UsageOfCompression(Sequence* seq, double kept, const std::string& cache);
  // `seq` is due to be compressed again (kv_compression.every): back to its
  // first compaction's budget.
  void Recompress(Sequence* seq);
  // Counts a compression's time since `start` and, when `st` is not OK (no
  // blocks to compact into), a failure; returns st.ok(). REQUIRES: mu_.
  bool CountCompression(const Status& st,
                        std::chrono::steady_clock::time_point start);
  // The loader's work for `seq`: its compressed document's rows, else (or
  // when they are not all found) its prompt's blocks, from the tiers.
  kvcache::PrefixHit Prefetch(const Sequence& seq);
  // Admits waiting requests into `running_` and the plan while budget and
  // room last.
  void Admit(int* budget);
  // `seq`'s prompt is computed: its other choices start from it, sharing
  // its blocks; those that get them are returned (to sample from the same
  // logits), the others wait to be admitted from the cache.
  std::vector<Sequence*> ForkChoices(Sequence* seq);
  Hash128 RootFor(const std::string& salt) const;

  const Model& model_;
  ThreadPool* pool_;
  kvcache::KvManager& kv_;
  const SchedulerOptions options_;
  std::unique_ptr<class Transformer> transformer_;

  // Submitted requests not yet taken by the loop, guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Sequence>> submitted_;
  std::deque<Sequence*> to_load_;  // for the loader, in order
  std::vector<Sequence*> loaded_;  // by the loader, for the loop thread
  std::condition_variable loader_wake_;
  bool stopping_ = false;
  SchedulerStats stats_;  // guarded by mu_

  // Loop thread only.
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;  // in arrival order
  // Owned here while the loader works on them (it reads their tokens and
  // writes their prefetch result; nothing else touches them meanwhile).
  std::vector<std::unique_ptr<Sequence>> loading_;
  uint64_t next_arrival_ = 0;
  struct Planned {
    Sequence* seq;
    int n;             // tokens computed for it this step
    size_t row = 0;    // its first logits row
    bool all = false;  // a logits row per token (prompt logprobs)
  };
  std::vector<Planned> plan_;  // the current step's batch
  struct Sampled {
    Sequence* seq;
    size_t row;  // of logits_ (choices forked this step share one)
    int32_t token = -1;
    std::optional<ScoredToken> logprob;
  };
  // Sequences sampling this step, in logits-row order.
  std::vector<Sampled> sampling_;
  std::vector<float> logits_;
  std::vector<float> sample_rows_;  // a copy per sampler (it edits its row)

  std::thread thread_;
  std::vector<std::thread> loaders_;  // started and joined by the loop thread
};

}  // namespace kvstash
