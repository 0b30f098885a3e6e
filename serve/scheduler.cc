#include "serve/scheduler.h"

#include <algorithm>

#include "engine/kv_compaction.h"
#include "engine/paged_kv_view.h"
#include "engine/transformer.h"
#include "kvcache/block_hash.h"

namespace kvstash {

using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

RequestEvent TokenEvent(int choice, int32_t token,
                        std::optional<ScoredToken> logprob,
                        Clock::time_point time) {
  RequestEvent e;
  e.kind = RequestEvent::Kind::kToken;
  e.choice = choice;
  e.token = token;
  e.logprob = std::move(logprob);
  e.time = time;
  return e;
}

RequestEvent FinishEvent(RequestEnd reason, Status error, int choice = 0) {
  RequestEvent e;
  e.kind = RequestEvent::Kind::kFinish;
  e.choice = choice;
  e.finish = reason;
  e.error = std::move(error);
  e.time = Clock::now();
  return e;
}

// Of `cached` tokens mapped at admission, those loaded from each tier by the
// request's prefetch: the prefix parts follow each other, DRAM first, so the
// tiers are credited in order; blocks that reached DRAM some other way in
// between (another request computed them) count as DRAM.
std::vector<int> SplitCached(int cached, const kvcache::PrefixHit& prefetched,
                             size_t n_tiers) {
  int rest = std::max(0, cached - prefetched.dram_tokens);
  std::vector<int> tiers(n_tiers, 0);
  for (size_t t = 0; t < prefetched.tier_tokens.size(); ++t) {
    tiers[t] = std::min(rest, prefetched.tier_tokens[t]);
    rest -= tiers[t];
  }
  return tiers;
}

// Inserts `seq` into `list` (ordered by arrival) before the first later one.
template <typename List, typename Seq>
void InsertByArrival(List* list, Seq seq) {
  auto later = std::find_if(list->begin(), list->end(), [&](const auto& s) {
    return s->arrival > seq->arrival;
  });
  list->insert(later, std::move(seq));
}

// A sequence of the shared pool seen as a cache whose tokens can be evicted:
// reads go through its PagedKvView, and a compaction writes the kept rows
// into fresh private blocks (KvManager::Rewrite), leaving the blocks it
// shared with the prefix index untouched.
class CompactingView final : public CompactableKv {
 public:
  CompactingView(kvcache::KvManager& kv, kvcache::SequenceKv* seq,
                 KvResidual* residual, KvCompaction* compaction)
      : kv_(kv),
        seq_(seq),
        compaction_(compaction),
        view_(kv.layout(), kv.BlockData(0), seq->blocks, residual, compaction) {
  }

  int capacity() const override { return view_.capacity(); }
  kernels::KvFormat format() const override { return view_.format(); }
  int read_window() const override { return view_.read_window(); }
  void BeginWrite(int begin, int end) override { view_.BeginWrite(begin, end); }
  void Write(int layer, int pos, const float* k, const float* v) override {
    view_.Write(layer, pos, k, v);
  }
  void Seal(int layer, int begin, int end) override {
    view_.Seal(layer, begin, end);
  }
  void Read(int layer, int kv_head, int n,
            std::vector<kernels::KvRun>* runs) const override {
    view_.Read(layer, kv_head, n, runs);
  }
  int Rows(int layer, int kv_head, int n) const override {
    return view_.Rows(layer, kv_head, n);
  }
  int BlocksHeld(int n) const override {
    return compaction_->BlocksHeld(n, kv_.layout().block_tokens);
  }
  // Blocks [0, BlocksHeld(n)) hold positions [0, n); the room reserved
  // after them receives the kept rows.
  Status Compact(int n, const KvSelection& selection) override {
    size_t most = 1;
    for (const auto& rows : selection.rows) most = std::max(most, rows.size());
    const size_t bt = size_t(kv_.layout().block_tokens);
    return kv_.Rewrite(
        size_t(BlocksHeld(n)), (most + bt - 1) / bt,
        [&](std::span<const kvcache::BlockId> from,
            std::span<const kvcache::BlockId> to) {
          return CompactRows(kv_.layout(), kv_.BlockData(0), from, to, n,
                             selection, compaction_);
        },
        seq_);
  }

 private:
  kvcache::KvManager& kv_;
  kvcache::SequenceKv* seq_;
  KvCompaction* compaction_;
  PagedKvView view_;
};

}  // namespace

Status SchedulerOptions::Validate() const {
  if (max_batch_tokens < 1) {
    return Status::InvalidArgument("max_batch_tokens must be >= 1");
  }
  if (max_running < 1 || max_running > max_batch_tokens) {
    return Status::InvalidArgument(
        "max_running must be in [1, max_batch_tokens]");
  }
  if (max_queue < 1) return Status::InvalidArgument("max_queue must be >= 1");
  if (context < 2) return Status::InvalidArgument("context must be >= 2");
  if (loader_threads < 1) {
    return Status::InvalidArgument("loader_threads must be >= 1");
  }
  return Status::OK();
}

const char* RequestEndName(RequestEnd reason) {
  switch (reason) {
    case RequestEnd::kStop:
      return "stop";
    case RequestEnd::kLength:
      return "length";
    case RequestEnd::kCancelled:
      return "cancelled";
    case RequestEnd::kError:
      return "error";
  }
  return "error";
}

bool RequestHandle::Next(RequestEvent* event,
                         std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty(); })) {
    return false;
  }
  *event = std::move(events_.front());
  events_.pop_front();
  return true;
}

void RequestHandle::Cancel(int choice) {
  choice_cancelled_[size_t(choice)].store(true, std::memory_order_relaxed);
}

bool RequestHandle::cancelled(int choice) const {
  return cancelled() ||
         choice_cancelled_[size_t(choice)].load(std::memory_order_relaxed);
}

void RequestHandle::Push(RequestEvent event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(event));
  }
  cv_.notify_all();
}

// A request from admission to finish. tokens = prompt, then every generated
// token; positions [0, n_computed) have their K/V in `kv`'s blocks, and
// tokens[n_computed..] are pending (exactly one while decoding).
struct Scheduler::Sequence {
  std::shared_ptr<RequestHandle> handle;
  GenerationRequest request;
  int choice = 0;  // of request.n
  // Choices 1 .. forks still to fork from this one (choice 0) once its
  // prompt is computed; 0 after that.
  int forks = 0;
  std::vector<int32_t> tokens;
  int n_prompt = 0;
  int n_computed = 0;
  // request.prompt_logprobs: the scored prompt tokens (index p: token p),
  // filled as its chunks are computed, sent once (choice 0 only).
  std::vector<ScoredToken> prompt_scores;
  bool prompt_scores_sent = false;
  bool admitted_once = false;
  bool tiers_probed = false;      // sent to the loader (or found no need)
  kvcache::PrefixHit prefetched;  // what the loader found (tiers only)
  // A layered load filling blocks of `kv`, until SettleLayered.
  std::shared_ptr<kvcache::LayeredLoad> layered;
  uint64_t arrival = 0;
  RequestUsage usage;
  kvcache::SequenceKv kv;
  KvResidual residual;  // full-precision blocks of residual KV types
  // Token eviction (request.kv_compression): applied once the prompt is
  // computed; `compaction` says which rows each (layer, kv head) kept.
  std::unique_ptr<KvCompressor> compressor;
  KvCompaction compaction;
  bool compressed = false;  // the compressor ran (or was skipped)
  int compress_at = 0;      // its CompressionPoint
  // A prefix_only policy's document is stored: the name of its compacted
  // rows (rows_kept per (layer, kv head)); empty: not stored.
  Hash128 rows_root;
  std::vector<Hash128> rows_chain;
  int rows_kept = 0;
  bool rows_copy_last = false;  // the rows end inside their last block
  Sampler sampler;
  Clock::time_point first_scheduled;
  Clock::time_point first_token;
  bool has_first_token = false;

  explicit Sequence(const SamplerOptions& options) : sampler(options) {}
  int pending() const { return static_cast<int>(tokens.size()) - n_computed; }
  // Rows (per (layer, kv head), at most) that positions [0, n) need.
  int Rows(int n) const { return compaction.MaxRows(n); }
  // Whether the prompt is still to be compressed: its passes end at the
  // prompt's end and its queries are observed.
  bool compressing() const { return compressor != nullptr && !compressed; }
  // Whether its forward passes are observed: while compressing, and after
  // it when it compresses again every N positions.
  bool observing() const {
    return compressing() || (compressor != nullptr && compressor->every() > 0);
  }
  // Positions to reserve beyond n_computed + n: when that chunk completes
  // a prompt to compress, room for the compacted copy (whole blocks past
  // the prompt's), so that compaction never waits for blocks.
  int Headroom(int n, int block_tokens) const {
    if (!compressing() || n_computed + n != compress_at) return 0;
    const int rows = compressor->MaxRowsKept(compress_at);
    const int document_end =
        (compress_at + block_tokens - 1) / block_tokens * block_tokens;
    return document_end - compress_at +
           (rows + block_tokens - 1) / block_tokens * block_tokens;
  }
  // The largest chunk from n_computed: at most `n`, not past the
  // compression point while compressing.
  int Chunk(int n) const {
    if (compressing() && n_computed < compress_at) {
      n = std::min(n, compress_at - n_computed);
    }
    return n;
  }
};

Scheduler::Scheduler(const Model& model, ThreadPool* pool,
                     kvcache::KvManager& kv, const SchedulerOptions& options)
    : model_(model),
      pool_(pool),
      kv_(kv),
      options_(options),
      transformer_(std::make_unique<Transformer>(model, pool)) {}

Result<std::unique_ptr<Scheduler>> Scheduler::Create(
    const Model& model, ThreadPool* pool, kvcache::KvManager& kv,
    const SchedulerOptions& options) {
  KV_RETURN_IF_ERROR(options.Validate());
  const ModelConfig& c = model.config();
  const kernels::BlockLayout& layout = kv.layout();
  if (layout.n_layers != c.n_layers || layout.n_kv_heads != c.n_kv_heads ||
      layout.head_dim != c.head_dim) {
    return Status::InvalidArgument(
        "scheduler: the KV cache layout does not match the model");
  }
  model.identity();  // hash the weights now, not in the first request
  std::unique_ptr<Scheduler> s(new Scheduler(model, pool, kv, options));
  s->thread_ = std::thread([p = s.get()] { p->Loop(); });
  return s;
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  loader_wake_.notify_all();
  thread_.join();
}

Hash128 Scheduler::RootFor(const std::string& salt) const {
  return kvcache::RootHash(model_.identity(), kv_.layout(), kv_.tier_codec(),
                           salt);
}

Result<std::shared_ptr<RequestHandle>> Scheduler::Submit(
    GenerationRequest request) {
  const int vocab = model_.config().vocab_size;
  const int n = static_cast<int>(request.prompt.size());
  if (n == 0) return Status::InvalidArgument("the prompt is empty");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= vocab) {
      return Status::InvalidArgument("token id " + std::to_string(id) +
                                     " is outside the vocabulary of " +
                                     std::to_string(vocab));
    }
  }
  if (request.max_tokens < 0) {
    return Status::InvalidArgument("max_tokens must be at least 0");
  }
  if (request.n < 1 || request.n > options_.max_running) {
    return Status::InvalidArgument("n must be in [1, " +
                                   std::to_string(options_.max_running) + "]");
  }
  if (request.n > 1 && !request.kv_compression.policy.empty()) {
    return Status::InvalidArgument(
        "n > 1 cannot be combined with kv_compression");
  }
  if (request.logprobs < -1 || request.logprobs > kMaxTopLogprobs) {
    return Status::InvalidArgument("logprobs must be in [0, " +
                                   std::to_string(kMaxTopLogprobs) + "]");
  }
  for (int32_t id : request.stop_token_ids) {
    if (id < 0 || id >= vocab) {
      return Status::InvalidArgument("stop token id " + std::to_string(id) +
                                     " is outside the vocabulary");
    }
  }
  for (const auto& [id, bias] : request.sampling.logit_bias) {
    if (id < 0 || id >= vocab) {
      return Status::InvalidArgument("logit_bias token id " +
                                     std::to_string(id) +
                                     " is outside the vocabulary");
    }
  }
  KV_RETURN_IF_ERROR(request.sampling.Validate());
  if (n >= options_.context) {
    return Status::InvalidArgument(
        "the prompt has " + std::to_string(n) + " tokens; the context holds " +
        std::to_string(options_.context) +
        " positions, prompt and completion together");
  }
  const kvcache::KvStats kv_stats = kv_.Stats();
  const size_t blocks_needed = size_t(n) / kv_stats.block_tokens + 1;
  if (blocks_needed > kv_stats.capacity_blocks) {
    return Status::InvalidArgument(
        "the prompt has " + std::to_string(n) +
        " tokens; the KV cache holds only " +
        std::to_string(kv_stats.capacity_blocks * kv_stats.block_tokens));
  }
  std::unique_ptr<KvCompressor> compressor;
  if (!request.kv_compression.policy.empty()) {
    const Status valid = compress::CheckPolicyOptions(request.kv_compression);
    if (!valid.ok()) {
      return Status::InvalidArgument("kv_compression." + valid.message());
    }
    const std::string why = KvCompactionSupports(kv_.layout().kv);
    if (!why.empty()) {
      return Status::InvalidArgument("kv_compression: " + why);
    }
    KV_ASSIGN_OR_RETURN(
        compressor, compress::MakeCompressor(model_.config(),
                                             request.kv_compression, pool_));
  }
  if (compressor != nullptr) {
    // The prompt and the room its compacted copy is written to.
    const size_t bt = kv_stats.block_tokens;
    const size_t with_room =
        (size_t(n) + bt - 1) / bt +
        (size_t(compressor->MaxRowsKept(n)) + bt - 1) / bt + 1;
    if (with_room > kv_stats.capacity_blocks) {
      return Status::InvalidArgument("the prompt has " + std::to_string(n) +
                                     " tokens; with kv_compression it needs " +
                                     std::to_string(with_room) +
                                     " KV blocks while it is compacted, "
                                     "the pool holds " +
                                     std::to_string(kv_stats.capacity_blocks));
    }
  }
  auto seq = std::make_unique<Sequence>(request.sampling);
  seq->handle = std::make_shared<RequestHandle>();
  seq->handle->submitted_ = Clock::now();
  seq->handle->choice_cancelled_ =
      std::vector<std::atomic<bool>>(size_t(request.n));
  seq->forks = request.n - 1;
  seq->kv.root = RootFor(request.cache_salt);
  seq->compress_at = n;
  if (compressor != nullptr) {
    seq->compress_at = CompressionPoint(*compressor, n, request.kv_context);
    if (compressor->prefix_only() && seq->compress_at < n) {
      const int bt = int(kv_stats.block_tokens);
      seq->rows_kept = compressor->MaxRowsKept(seq->compress_at);
      seq->rows_copy_last = seq->rows_kept % bt != 0;
      seq->rows_root = kvcache::RowsRoot(
          seq->kv.root, compress::PolicyNamespace(request.kv_compression));
      seq->rows_chain = kvcache::RowsChain(
          seq->rows_root,
          std::span(request.prompt).first(size_t(seq->compress_at)),
          size_t((seq->rows_kept + bt - 1) / bt));
    }
  }
  seq->compressor = std::move(compressor);
  seq->tokens = request.prompt;
  seq->n_prompt = n;
  seq->usage.prompt_tokens = n;
  seq->request = std::move(request);
  std::shared_ptr<RequestHandle> handle = seq->handle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status::Unavailable("the server is shutting down");
    if (submitted_.size() + stats_.waiting + stats_.loading >=
        size_t(options_.max_queue)) {
      return Status::ResourceExhausted("the request queue is full (" +
                                       std::to_string(options_.max_queue) +
                                       " waiting)");
    }
    stats_.requests_submitted += uint64_t(seq->request.n);  // its choices
    submitted_.push_back(std::move(seq));
  }
  wake_.notify_all();
  return handle;
}

kvcache::PrefixHit Scheduler::CachedPrefix(
    std::span<const int32_t> tokens, const std::string& cache_salt) const {
  return kv_.Probe(tokens, RootFor(cache_salt));
}

SchedulerStats Scheduler::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Scheduler::LoaderLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    loader_wake_.wait(lock, [&] { return stopping_ || !to_load_.empty(); });
    if (stopping_) return;
    Sequence* seq = to_load_.front();
    to_load_.pop_front();
    lock.unlock();
    // A layered load sends the request back at once and is read here while
    // its suffix is computed.
    std::shared_ptr<kvcache::LayeredLoad> layered;
    if (options_.layered_loads && seq->rows_chain.empty() &&
        seq->compressor == nullptr) {
      layered = kv_.BeginLayeredLoad(seq->tokens, &seq->kv);
    }
    if (layered != nullptr) {
      seq->layered = layered;
      seq->prefetched = layered->planned();
    } else {
      seq->prefetched = Prefetch(*seq);
    }
    lock.lock();
    loaded_.push_back(seq);
    wake_.notify_all();
    if (layered != nullptr) {
      lock.unlock();
      kv_.RunLayeredLoad(*layered);
      lock.lock();
    }
  }
}

kvcache::PrefixHit Scheduler::Prefetch(const Sequence& seq) {
  if (!seq.rows_chain.empty()) {
    // The compressed document, else the prompt's positions.
    const int bt = kv_.layout().block_tokens;
    const int rows = int(seq.rows_chain.size()) * bt;
    kvcache::PrefixHit hit = kv_.PrefetchRows(seq.rows_root, seq.rows_chain);
    if (hit.total() == rows) {
      // In document positions: each tier's share of the rows.
      hit.dram_tokens = seq.compress_at;
      for (int& t : hit.tier_tokens) {
        t = int(int64_t(t) * seq.compress_at / rows);
        hit.dram_tokens -= t;
      }
      return hit;
    }
  }
  return kv_.Prefetch(seq.tokens, seq.kv.root);
}

void Scheduler::TakeLoaded() {
  for (Sequence* seq : loaded_) {
    auto it = std::find_if(loading_.begin(), loading_.end(),
                           [&](const auto& s) { return s.get() == seq; });
    InsertByArrival(&waiting_, std::move(*it));
    loading_.erase(it);
  }
  loaded_.clear();
  stats_.loading = loading_.size();
}

void Scheduler::Loop() {
  if (kv_.tier_count() > 0) {
    for (int i = 0; i < options_.loader_threads; ++i) {
      loaders_.emplace_back([this] { LoaderLoop(); });
    }
  }
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] {
        return stopping_ || !submitted_.empty() || !running_.empty() ||
               !waiting_.empty() || !loaded_.empty();
      });
      if (stopping_) break;
      for (auto& seq : submitted_) {
        seq->arrival = next_arrival_++;
        waiting_.push_back(std::move(seq));
      }
      submitted_.clear();
      TakeLoaded();
      stats_.waiting = waiting_.size();
    }
    if (!Step()) {
      // Nothing could run (all waiting requests wait for blocks): back off
      // until a submission or a short timeout.
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_for(lock, std::chrono::milliseconds(1));
    }
  }
  for (std::thread& t : loaders_) t.join();  // each after its current load
  {
    std::lock_guard<std::mutex> lock(mu_);
    TakeLoaded();
  }
  const Status gone = Status::Unavailable("the server is shutting down");
  while (!loading_.empty())
    Finish(loading_.back().get(), RequestEnd::kError, gone);
  while (!running_.empty())
    Finish(running_.back().get(), RequestEnd::kError, gone);
  while (!waiting_.empty())
    Finish(waiting_.back().get(), RequestEnd::kError, gone);
  std::lock_guard<std::mutex> lock(mu_);
  while (!submitted_.empty()) {
    submitted_.back()->handle->Push(FinishEvent(RequestEnd::kError, gone));
    submitted_.pop_back();
  }
}

bool Scheduler::SettleLayered(Sequence* seq) {
  if (seq->layered == nullptr) return true;
  const int held = kv_.FinishLayeredLoad(*seq->layered, &seq->kv);
  const bool whole = held == seq->layered->tokens();
  seq->layered.reset();
  return whole;
}

void Scheduler::RecountCached(Sequence* seq, int cached) {
  RequestUsage& u = seq->usage;
  const std::vector<int> tiers =
      SplitCached(cached, seq->prefetched, kv_.tier_count());
  std::lock_guard<std::mutex> lock(mu_);
  stats_.cached_tokens -= uint64_t(u.cached_tokens - cached);
  for (size_t t = 0; t < tiers.size(); ++t) {
    stats_.tier_cached_tokens[t] -=
        uint64_t(u.tier_cached_tokens[t] - tiers[t]);
  }
  u.cached_tokens = cached;
  u.tier_cached_tokens = tiers;
}

void Scheduler::Finish(Sequence* seq, RequestEnd reason, Status error) {
  SettleLayered(seq);
  kv_.Release(&seq->kv);
  RequestEvent event = FinishEvent(reason, std::move(error));
  event.usage = seq->usage;
  if (seq->admitted_once) {
    event.queue_seconds =
        Seconds(seq->handle->submitted(), seq->first_scheduled);
    event.prompt_seconds =
        Seconds(seq->first_scheduled,
                seq->has_first_token ? seq->first_token : event.time);
  }
  event.choice = seq->choice;
  // Choices not forked yet end with their parent.
  std::vector<RequestEvent> unborn;
  for (int c = 1; c <= seq->forks; ++c) {
    unborn.push_back(event);
    unborn.back().choice = c;
    unborn.back().usage.completion_tokens = 0;
  }
  // Keep the handle: the sequence is destroyed below.
  std::shared_ptr<RequestHandle> handle = seq->handle;
  auto owner = [&](const std::unique_ptr<Sequence>& s) {
    return s.get() == seq;
  };
  if (auto it = std::find_if(running_.begin(), running_.end(), owner);
      it != running_.end()) {
    running_.erase(it);
  } else if (auto l = std::find_if(loading_.begin(), loading_.end(), owner);
             l != loading_.end()) {
    loading_.erase(l);
  } else {
    waiting_.erase(std::find_if(waiting_.begin(), waiting_.end(), owner));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.requests_finished += 1 + unborn.size();  // seq is gone
    stats_.waiting = waiting_.size();
    stats_.running = running_.size();
  }
  // Last, so that a client that sees the end also sees the stats without it.
  handle->Push(std::move(event));
  for (RequestEvent& e : unborn) handle->Push(std::move(e));
}

void Scheduler::ReapCancelled() {
  std::vector<Sequence*> gone;
  for (auto& s : running_) {
    if (s->handle->cancelled(s->choice)) gone.push_back(s.get());
  }
  for (auto& s : waiting_) {
    if (s->handle->cancelled(s->choice)) gone.push_back(s.get());
  }
  for (Sequence* s : gone) Finish(s, RequestEnd::kCancelled);
}

void Scheduler::Preempt(Sequence* seq) {
  SettleLayered(seq);
  kv_.Release(&seq->kv);
  seq->residual.Reset();
  seq->n_computed = 0;
  // Recomputed from the start: the prompt is compressed again, the same way.
  seq->compaction = KvCompaction();
  if (seq->compressor != nullptr) {
    seq->compressor->Reset();
    seq->compressed = false;
  }
  auto it = std::find_if(running_.begin(), running_.end(),
                         [&](const auto& s) { return s.get() == seq; });
  waiting_.push_front(std::move(*it));
  running_.erase(it);
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.preemptions;
}

bool Scheduler::ReserveOrPreempt(Sequence* seq, int n_tokens) {
  while (!kv_.Reserve(n_tokens, &seq->kv).ok()) {
    Sequence* victim = running_.back().get();
    if (victim != seq) {
      Preempt(victim);
      continue;
    }
    if (running_.size() == 1) {
      // Alone and still short: the pool cannot hold this sequence any longer.
      Finish(seq, RequestEnd::kLength);
    } else {
      Preempt(seq);
    }
    return false;
  }
  return true;
}

void Scheduler::Admit(int* budget) {
  size_t i = 0;  // waiting_[0, i): layered loads left for a later step
  while (*budget > 0 && i < waiting_.size() &&
         running_.size() < size_t(options_.max_running)) {
    Sequence* seq = waiting_[i].get();
    // A request whose layered load is still being read joins a step only
    // alone: the step waits at each layer for the load, and the others'
    // tokens (decodes above all) must not wait with it. It is admitted once
    // its load is in, or when nothing else is planned.
    const bool loading = seq->layered != nullptr && !seq->layered->loaded();
    if (loading && !plan_.empty()) {
      ++i;
      continue;
    }
    if (!seq->tiers_probed && kv_.tier_count() > 0 &&
        !seq->request.prompt_logprobs) {
      seq->tiers_probed = true;
      const int loadable = int(seq->tokens.size()) / kv_.layout().block_tokens *
                           kv_.layout().block_tokens;
      const bool in_dram =
          seq->compressing() && !seq->rows_chain.empty()
              ? kv_.HoldsRows(seq->rows_chain)
              : kv_.Lookup(seq->tokens, seq->kv.root) >= loadable;
      if (!in_dram) {
        loading_.push_back(std::move(waiting_[i]));
        waiting_.erase(waiting_.begin() + ptrdiff_t(i));
        std::lock_guard<std::mutex> lock(mu_);
        to_load_.push_back(seq);
        stats_.loading = loading_.size();
        loader_wake_.notify_one();
        continue;
      }
    }
    int cached;
    if (seq->layered != nullptr) {
      cached = seq->layered->tokens();  // its blocks are held, being loaded
    } else if (seq->request.prompt_logprobs) {
      cached = 0;  // its logits are wanted: computed, not mapped
    } else if (seq->compressing() && !seq->rows_chain.empty() &&
               kv_.AdmitRows(seq->rows_root, seq->rows_chain,
                             seq->rows_copy_last, &seq->kv)) {
      cached = seq->compress_at;
      MapCompressed(seq);
    } else {
      std::span<const int32_t> mappable = seq->tokens;
      if (seq->compressing()) {
        // The compressor must see the queries of the document's last
        // positions: those are computed, not mapped.
        const int tail = seq->compressor->observed_tail();
        const int limit = tail < 0 ? 0 : std::max(0, seq->compress_at - tail);
        mappable = mappable.first(std::min(mappable.size(), size_t(limit) + 1));
      }
      cached = kv_.Admit(mappable, &seq->kv);
    }
    seq->n_computed = cached;
    const int n = seq->Chunk(
        std::min(static_cast<int>(seq->tokens.size()) - cached, *budget));
    const int headroom = seq->Headroom(n, kv_.layout().block_tokens);
    if (!kv_.Reserve(seq->Rows(cached + n) + headroom, &seq->kv).ok()) {
      if (running_.empty()) {
        Finish(seq, RequestEnd::kLength);
        continue;
      }
      SettleLayered(seq);  // admitted again later, mapping what it loaded
      kv_.Release(&seq->kv);
      return;  // wait for running sequences to free blocks
    }
    if (!seq->admitted_once) {
      seq->admitted_once = true;
      seq->usage.cached_tokens = cached;
      seq->usage.tier_cached_tokens =
          SplitCached(cached, seq->prefetched, kv_.tier_count());
      seq->first_scheduled = Clock::now();
      std::lock_guard<std::mutex> lock(mu_);
      stats_.prompt_tokens += seq->n_prompt;
      stats_.cached_tokens += cached;
      const std::vector<int>& tiers = seq->usage.tier_cached_tokens;
      stats_.tier_cached_tokens.resize(tiers.size(), 0);
      for (size_t t = 0; t < tiers.size(); ++t) {
        stats_.tier_cached_tokens[t] += uint64_t(tiers[t]);
      }
    }
    InsertByArrival(&running_, std::move(waiting_[i]));
    waiting_.erase(waiting_.begin() + ptrdiff_t(i));
    plan_.push_back({seq, n});
    *budget -= n;
    if (loading) return;  // nothing else joins its step
  }
}

std::vector<Scheduler::Sequence*> Scheduler::ForkChoices(Sequence* seq) {
  std::vector<Sequence*> forked;
  for (int c = 1; c <= seq->forks; ++c) {
    SamplerOptions sampling = seq->request.sampling;
    sampling.seed += uint64_t(c);
    auto child = std::make_unique<Sequence>(sampling);
    child->handle = seq->handle;
    child->request = seq->request;
    child->choice = c;
    child->tokens = seq->tokens;
    child->n_prompt = seq->n_prompt;
    child->admitted_once = true;
    child->tiers_probed = true;
    child->prompt_scores_sent = true;  // choice 0 sends them
    child->prefetched = seq->prefetched;
    child->arrival = seq->arrival;
    child->usage = seq->usage;
    child->first_scheduled = seq->first_scheduled;
    child->kv.root = seq->kv.root;
    if (kv_.Fork(seq->kv, seq->n_computed, &child->kv).ok()) {
      child->n_computed = seq->n_computed;
      child->residual = seq->residual;
      forked.push_back(child.get());
      InsertByArrival(&running_, std::move(child));
    } else {
      // No block for its copy: admitted later, from the cache.
      waiting_.push_front(std::move(child));
    }
  }
  seq->forks = 0;
  return forked;
}

bool Scheduler::CountCompression(const Status& st, Clock::time_point start) {
  stats_.compress_seconds += Seconds(start, Clock::now());
  if (st.ok()) return true;
  // No blocks to compact into (the pool is full). Any other error is a bug
  // in the policy.
  KV_CHECK_MSG(st.code() == StatusCode::kResourceExhausted,
               st.ToString().c_str());
  ++stats_.compression_failures;
  return false;
}

void Scheduler::Recompress(Sequence* seq) {
  const Clock::time_point start = Clock::now();
  const int n = seq->n_computed;
  const double rows_before =
      seq->compaction.MeanKept() + double(n - seq->compaction.end);
  CompactingView view(kv_, &seq->kv, &seq->residual, &seq->compaction);
  const Status st = seq->compressor->Recompress(view, n, seq->compaction.kept);
  std::lock_guard<std::mutex> lock(mu_);
  // Failed: it goes on holding more rows; the next step tries again.
  if (!CountCompression(st, start)) return;
  ++seq->usage.kv_recompressions;
  seq->usage.kv_blocks_after = int(seq->kv.blocks.size());
  ++stats_.recompressions;
  stats_.evicted_tokens += rows_before - seq->compaction.MeanKept();
}

void Scheduler::UsageOfCompression(Sequence* seq, double kept,
                                   const std::string& cache) {
  const int bt = kv_.layout().block_tokens;
  RequestUsage& u = seq->usage;
  u.kv_policy = seq->request.kv_compression.policy;
  u.kv_kept_tokens = kept;
  // The document's blocks (the room reserved after them is not counted).
  u.kv_blocks_before = (seq->compress_at + bt - 1) / bt;
  u.kv_blocks_after = int(seq->kv.blocks.size());
  u.kv_cache = cache;
  u.kv_compressed_tokens = seq->compress_at;
}

void Scheduler::MapCompressed(Sequence* seq) {
  const kvcache::BlockLayout& layout = kv_.layout();
  seq->compressed = true;
  seq->compaction.end = seq->compress_at;
  seq->compaction.kept.assign(size_t(layout.n_layers * layout.n_kv_heads),
                              seq->rows_kept);
  UsageOfCompression(seq, seq->rows_kept, "mapped");
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.compressed_prefix_hits;
  stats_.compressed_prefix_tokens += uint64_t(seq->compress_at);
}

void Scheduler::Compress(Sequence* seq) {
  const Clock::time_point start = Clock::now();
  seq->compressed = true;
  CompactingView view(kv_, &seq->kv, &seq->residual, &seq->compaction);
  const Status st = seq->compressor->Compress(view, seq->compress_at);
  std::string cache = "per_request";
  if (st.ok() && !seq->rows_chain.empty()) {
    // Stored for reuse when the rows are what a later request will expect.
    const bool as_named =
        seq->kv.blocks.size() >= seq->rows_chain.size() &&
        std::all_of(seq->compaction.kept.begin(), seq->compaction.kept.end(),
                    [&](int32_t k) { return k == seq->rows_kept; });
    cache = as_named && kv_.PublishRows(seq->rows_root, seq->rows_chain,
                                        seq->rows_copy_last, &seq->kv)
                ? "stored"
                : "private";
  }
  std::lock_guard<std::mutex> lock(mu_);
  // Failed: the sequence goes on uncompressed, as computed.
  if (!CountCompression(st, start)) return;
  const double kept = seq->compaction.MeanKept();
  UsageOfCompression(seq, kept, cache);
  ++stats_.compressions;
  stats_.evicted_tokens += seq->compress_at - kept;
}

bool Scheduler::Step() {
  const Clock::time_point start = Clock::now();
  ReapCancelled();
  // Plan: decodes first (one token each), then prompt chunks in arrival
  // order, then admissions, within the token budget.
  int decodes = 0;
  for (auto& s : running_) decodes += s->pending() == 1;
  int budget = options_.max_batch_tokens - decodes;
  plan_.clear();
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence* seq = running_[i].get();
    const int pending = seq->pending();
    const int n = seq->Chunk(pending == 1 ? 1 : std::min(pending, budget));
    if (n == 0) continue;
    // Before computing position n_computed, as the generate loop does.
    if (seq->compressor != nullptr &&
        RecompressDue(*seq->compressor, seq->compaction, seq->n_computed)) {
      Recompress(seq);
    }
    if (!ReserveOrPreempt(seq,
                          seq->Rows(seq->n_computed + n) +
                              seq->Headroom(n, kv_.layout().block_tokens))) {
      break;
    }
    plan_.push_back({seq, n});
    if (pending > 1) budget -= n;
  }
  Admit(&budget);
  if (plan_.empty()) return false;

  // One forward pass over every planned chunk; logits for the chunks that
  // reach the end of their tokens.
  std::vector<Transformer::BatchEntry> batch;
  std::vector<PagedKvView> views;
  views.reserve(plan_.size());
  size_t n_logits = 0;
  for (Planned& p : plan_) {
    Sequence* seq = p.seq;
    views.emplace_back(kv_.layout(), kv_.BlockData(0), seq->kv.blocks,
                       &seq->residual, &seq->compaction);
    if (seq->layered != nullptr) {
      views.back().SetLayerGate(
          [load = seq->layered.get()](int layer) { load->AwaitLayer(layer); });
    }
    const bool last = seq->n_computed + p.n == int(seq->tokens.size());
    p.all = seq->request.prompt_logprobs && seq->n_computed < seq->n_prompt;
    p.row = n_logits;
    n_logits += p.all ? size_t(p.n) : size_t(last);
    batch.push_back({std::span(seq->tokens).subspan(seq->n_computed, p.n),
                     seq->n_computed, &views.back(),
                     p.all  ? Transformer::Logits::kAll
                     : last ? Transformer::Logits::kLast
                            : Transformer::Logits::kNone,
                     seq->observing() ? seq->compressor->observer() : nullptr});
  }
  const size_t vocab = model_.config().vocab_size;
  if (logits_.size() < n_logits * vocab) logits_.resize(n_logits * vocab);
  const Clock::time_point forward_start = Clock::now();
  const Status st = transformer_->Forward(batch, logits_.data());
  const Clock::time_point forward_end = Clock::now();

  if (!st.ok()) {
    for (const Planned& p : plan_) Finish(p.seq, RequestEnd::kError, st);
    return true;
  }
  // Every sequence whose chunk reached the end of its tokens samples its next
  // token; the samplers are independent, so they run in parallel.
  auto row_of = [&](size_t row) {
    return std::span<const float>(&logits_[row * vocab], vocab);
  };
  sampling_.clear();
  std::vector<std::pair<Sequence*, RequestEnd>> finished;
  for (const Planned& p : plan_) {
    Sequence* seq = p.seq;
    if (seq->layered != nullptr) {
      const int planned = seq->layered->tokens();
      if (!SettleLayered(seq)) {
        // Part of its prefix did not verify: computed again, mapping what
        // did (its usage counts that).
        RecountCached(seq,
                      std::min(planned, kv_.Lookup(seq->tokens, seq->kv.root)));
        Preempt(seq);
        continue;
      }
    }
    if (p.all) {
      // Row j predicts the token at n_computed + j + 1.
      const int top = std::max(seq->request.logprobs, 0);
      seq->prompt_scores.resize(size_t(seq->n_prompt));
      for (int j = 0; j < p.n; ++j) {
        const int target = seq->n_computed + j + 1;
        if (target >= seq->n_prompt) break;
        seq->prompt_scores[size_t(target)] =
            ScoreToken(row_of(p.row + size_t(j)), seq->tokens[target], top);
      }
    }
    seq->n_computed += p.n;
    kv_.Commit(std::span(seq->tokens).first(seq->n_computed), &seq->kv);
    if (seq->compressing() && seq->n_computed == seq->compress_at) {
      Compress(seq);
    }
    if (seq->pending() != 0) continue;
    if (seq->request.prompt_logprobs && !seq->prompt_scores_sent) {
      seq->prompt_scores_sent = true;
      RequestEvent e;
      e.kind = RequestEvent::Kind::kPrompt;
      e.prompt_logprobs.assign(seq->prompt_scores.begin() + 1,
                               seq->prompt_scores.end());
      e.time = forward_end;
      seq->handle->Push(std::move(e));
      seq->prompt_scores = {};
    }
    if (seq->request.max_tokens == 0) {
      finished.push_back({seq, RequestEnd::kLength});
      continue;
    }
    const size_t row = p.row + (p.all ? size_t(p.n) - 1 : 0);
    sampling_.push_back({seq, row, -1, std::nullopt});
    for (Sequence* child : ForkChoices(seq)) {
      sampling_.push_back({child, row, -1, std::nullopt});
    }
  }
  if (sample_rows_.size() < sampling_.size() * vocab) {
    sample_rows_.resize(sampling_.size() * vocab);
  }
  auto sample = [&](size_t i, size_t) {
    Sampled& s = sampling_[i];
    const std::span<const float> raw = row_of(s.row);
    const std::span<float> edited(&sample_rows_[i * vocab], vocab);
    std::copy(raw.begin(), raw.end(), edited.begin());
    s.token =
        s.seq->sampler.Sample(edited, s.seq->tokens, size_t(s.seq->n_prompt));
    if (s.seq->request.logprobs >= 0) {
      s.logprob = ScoreToken(raw, s.token, s.seq->request.logprobs);
    }
  };
  if (pool_ != nullptr && sampling_.size() > 1) {
    pool_->ParallelFor(sampling_.size(), sample);
  } else {
    for (size_t i = 0; i < sampling_.size(); ++i) sample(i, 0);
  }
  for (Sampled& sampled : sampling_) {
    Sequence* seq = sampled.seq;
    const int32_t token = sampled.token;
    ++seq->usage.completion_tokens;
    if (!seq->has_first_token) {
      seq->has_first_token = true;
      seq->first_token = forward_end;
    }
    const std::vector<int32_t>& stops = seq->request.stop_token_ids;
    if ((seq->request.stop_at_eos && token == model_.tokenizer().eos()) ||
        std::find(stops.begin(), stops.end(), token) != stops.end()) {
      finished.push_back({seq, RequestEnd::kStop});
      continue;
    }
    seq->tokens.push_back(token);
    seq->handle->Push(TokenEvent(seq->choice, token, std::move(sampled.logprob),
                                 forward_end));
    if (seq->usage.completion_tokens >= seq->request.max_tokens ||
        int(seq->tokens.size()) >= options_.context) {
      finished.push_back({seq, RequestEnd::kLength});
    }
  }
  for (auto [seq, reason] : finished) Finish(seq, reason);
  std::vector<SequenceHolding> holdings;
  for (const auto& s : running_) {
    holdings.push_back({s->arrival, s->n_computed, int(s->kv.blocks.size()),
                        s->compaction.compacted()
                            ? s->request.kv_compression.policy
                            : std::string()});
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.sequences = std::move(holdings);
  stats_.waiting = waiting_.size();
  stats_.running = running_.size();
  stats_.generated_tokens += sampling_.size();
  ++stats_.steps;
  stats_.forward_seconds += Seconds(forward_start, forward_end);
  stats_.step_seconds += Seconds(start, Clock::now());
  return true;
}

}  // namespace kvstash
