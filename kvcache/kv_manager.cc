#include "kvcache/kv_manager.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "base/check.h"
#include "kernels/attention.h"
#include "kvcache/block_hash.h"
#include "kvcache/block_pool.h"
#include "kvcache/prefix_index.h"
#include "store/object_format.h"

namespace kvstash::kvcache {

namespace {

Status CheckLayout(const BlockLayout& l) {
  const std::string why = l.Check();
  if (!why.empty()) return Status::InvalidArgument("kv cache: " + why);
  return Status::OK();
}

Status CheckTiers(const std::vector<TierOptions>& tiers) {
  if (tiers.size() > kMaxTiers) {
    return Status::InvalidArgument("kv cache: " + std::to_string(tiers.size()) +
                                   " tiers, at most " +
                                   std::to_string(kMaxTiers));
  }
  for (const TierOptions& t : tiers) {
    if (t.tier == nullptr) {
      return Status::InvalidArgument("kv cache: a tier is null");
    }
  }
  return Status::OK();
}

// A Prefetch reads a tier in Get calls of about kLoadBatchBytes, with up to
// kLoadBatchesInFlight of them outstanding (each on its own thread, which
// also verifies and decodes its batch into the pool), so the medium always
// has the next reads queued while batches are decoded, and a codec's
// decoding runs on every core; bounds the memory held in flight to ~8 MiB.
// Batches of 1-2 MiB restored 1b-shape prompts 10-20% faster than 4 MiB ones
// from both a local disk and a local Redis (bench tiers, 2048 tokens, 3 runs
// each): a small batch is still in cache when it is verified and copied.
constexpr size_t kLoadBatchBytes = size_t{2} << 20;
constexpr size_t kLoadBatchesInFlight = 4;

Status Broken(size_t seq, const std::string& what) {
  return Status::Internal("kv cache: sequence " + std::to_string(seq) + ": " +
                          what);
}

}  // namespace

const char* TierWritePolicyName(TierWritePolicy policy) {
  return policy == TierWritePolicy::kOnCommit ? "commit" : "second-use";
}

int PrefixHit::total() const {
  int n = dram_tokens;
  for (const int t : tier_tokens) n += t;
  return n;
}

// `mu` guards the pool's and the index's contents and the counters; the
// layout and the arena's address never change (BlockData reads them without
// the lock). Every helper requires `mu` held.
struct KvManager::State {
  State(const BlockLayout& layout, std::unique_ptr<BlockPool> pool,
        std::vector<TierOptions> tier_options, store::Codec codec, size_t chunk,
        size_t layered_range_bytes)
      : layout(layout),
        pool(std::move(pool)),
        index(this->pool.get()),
        tiers(std::move(tier_options)),
        codec(codec),
        chunk(chunk),
        layered_range_bytes(layered_range_bytes) {
    for (const TierOptions& t : tiers) {
      TierCounters c;
      c.name = std::string(t.tier->name());
      c.write = t.write;
      tier_counters.push_back(std::move(c));
    }
  }

  size_t block_tokens() const { return size_t(layout.block_tokens); }
  std::span<const int32_t> BlockTokens(std::span<const int32_t> tokens,
                                       size_t i) const {
    return tokens.subspan(i * block_tokens(), block_tokens());
  }

  BlockId AllocateEvicting();
  bool CanAllocate(size_t n) const;
  // Drops one reference to `block`; `indexed_as` names the index node whose
  // block it is (null for a private block, which is freed at refcount 0).
  void Unref(BlockId block, const Hash128* indexed_as);
  // How many leading entries of `chain` (h_1, h_2 ...) are indexed.
  size_t IndexedRun(std::span<const Hash128> chain) const;
  // Maps the indexed blocks of `chain` that follow the ones `seq` holds
  // (seq->chain is a head of `chain`; usually empty) into `seq` and
  // refreshes their path; returns how many seq holds now.
  size_t MapChain(std::span<const Hash128> chain, SequenceKv* seq);
  bool PrivatizeLastBlock(SequenceKv* seq);

  void ReleaseLocked(SequenceKv* seq);
  // Writes the blocks after the sequence's last whole chunk behind to the
  // kOnCommit tiers (as single-block objects) while it still holds them.
  // Takes the lock.
  void WriteTailBehind(const SequenceKv& seq);
  // h_1..h_n of the n full blocks of `tokens` under `root`.
  std::vector<Hash128> Chain(std::span<const int32_t> tokens,
                             const Hash128& root) const;
  // One object along a chain: the blocks chain[first, first + count),
  // keyed by the last of them.
  struct Piece {
    size_t first;
    size_t count;
  };
  // Where the tiers hold the chain past its first `start` blocks: per tier,
  // the objects it serves (tier t continues where tier t - 1 stopped; a
  // chunk may begin before that point), and the chain position reached.
  struct TierPlan {
    std::vector<std::vector<Piece>> pieces;  // per tier
    std::vector<size_t> ends;                // per tier: position reached
    size_t end = 0;                          // position reached by all
  };
  // Asks each tier's Exists for the chunk objects (chunk k holds blocks
  // [k C, (k + 1) C), keyed by its last) and the single-block objects past
  // `start`, and walks the chain: a chunk where one is held, else a single
  // block, else that tier stops. Called without `mu`.
  TierPlan PlanTiers(std::span<const Hash128> chain, size_t start) const;
  void CommitLocked(std::span<const int32_t> tokens, SequenceKv* seq);

  // An object to write behind: consecutive blocks encoded from the pool
  // after `mu` is released, while a sequence still holds them.
  struct PendingWrite {
    std::vector<BlockId> blocks;
    Hash128 parent;  // h of the block before the first (the root for none)
    Hash128 key;     // h of the last block
    uint8_t tiers;   // bit t: queue to tier t
  };
  // Bits of the tiers that follow `policy`.
  uint8_t TiersWith(TierWritePolicy policy) const;
  // Queues seq's blocks [first, first + count) as one object to the
  // `wanted` tiers its key (the last block, which must be indexed) is not in
  // yet, marking each of its indexed blocks as held there.
  void CollectObject(const SequenceKv& seq, size_t first, size_t count,
                     uint8_t wanted, std::vector<PendingWrite>* out);
  // The chunk objects whose last block lies in [begin, end) and, with
  // `tail`, single-block objects for the blocks of [begin, end) after the
  // last whole chunk before `end`.
  void CollectWrites(const SequenceKv& seq, size_t begin, size_t end,
                     uint8_t wanted, bool tail, std::vector<PendingWrite>* out);
  // Bits of the tiers above tier t that take a block loaded from t at once
  // (those that follow kOnCommit).
  uint8_t PromotedFrom(size_t t) const {
    return TiersWith(TierWritePolicy::kOnCommit) & uint8_t((1u << t) - 1);
  }
  // Reads the objects `pieces` of tier t along `chain`, decoding block
  // chain[i] into fresh[i - base] for from <= i < base + fresh.size() (the
  // blocks of a piece outside that range are decoded and dropped), and
  // queues each object to the PromotedFrom(t) tiers; in batches, each read,
  // verified and decoded on its own thread, several at once. Stops at the
  // first missing or bad object; returns the chain position filled up to.
  // Called without `mu`; the caller holds `fresh`.
  size_t LoadRun(size_t t, const Hash128& root, std::span<const Hash128> chain,
                 std::span<const Piece> pieces, size_t from, size_t base,
                 std::span<const BlockId> fresh);
  // Encodes and queues each write. Called without `mu`.
  void WriteBehind(const Hash128& root, std::span<const PendingWrite> writes);
  // Queues `object` to each tier in the bit mask `to`, moving it into the
  // last; returns the bits of the tiers that took it (a refused write is
  // counted by that tier, as dropped_writes).
  uint8_t PutToTiers(const Hash128& key, uint8_t to,
                     std::vector<uint8_t> object);
  // Loads into DRAM what the tiers hold of `chain` (under `root`) past its
  // indexed head; see KvManager::Prefetch. Called without `mu`.
  PrefixHit PrefetchChain(std::span<const Hash128> chain, const Hash128& root);
  // A rows chain mapped or published as seq's blocks [0, chain.size()):
  // queues them to the `wanted` tiers (whole chunks and single blocks), and,
  // with copy_last, moves the sequence onto `copy` (a fresh block) for the
  // last one. The shared last block stays referenced for the writes and is
  // returned: pass it to ReleaseShared after WriteBehind.
  struct Shared {
    BlockId block = -1;
    Hash128 hash;
    bool indexed = false;
  };
  Shared FinishRows(const Hash128& rows_root, size_t n, BlockId copy,
                    uint8_t wanted, SequenceKv* seq,
                    std::vector<PendingWrite>* writes);
  void ReleaseShared(const Shared& shared);

  Status ValidateTables(std::span<const SequenceKv* const> live) const;
  Status ValidateFreeList() const;
  Status ValidateNodes() const;

  mutable std::mutex mu;
  const BlockLayout layout;
  const std::unique_ptr<BlockPool> pool;
  PrefixIndex index;  // reads refcounts from *pool
  uint64_t queried_tokens = 0;
  uint64_t hit_tokens = 0;
  uint64_t evictions = 0;
  uint64_t cow_copies = 0;
  uint64_t allocations = 0;
  uint64_t rewrites = 0, rewrite_blocks_before = 0, rewrite_blocks_after = 0;
  uint64_t rows_published = 0, rows_hits = 0;

  const std::vector<TierOptions> tiers;
  const store::Codec codec;  // of the objects written to and read from tiers
  const size_t chunk;        // blocks per chunk object
  const size_t layered_range_bytes;
  std::vector<TierCounters> tier_counters;  // guarded by mu, name/policy fixed
  LoadObserver load_observer;               // set before any Prefetch
  // The chain hashes Prefetches are loading now (each claims its chain past
  // its DRAM prefix until its loaded blocks are indexed), guarded by mu. A
  // Prefetch whose next block is claimed waits on `loads_done` and maps
  // what that load brought instead of reading the same objects again.
  std::unordered_set<Hash128, Hash128Hasher> loading;
  std::condition_variable loads_done;
  uint64_t shared_loads = 0;
  uint64_t layered_loads = 0, layered_load_failures = 0;
};

// A free block (refcount 1), evicting LRU cached leaves while none is free;
// -1 when nothing is free or evictable.
BlockId KvManager::State::AllocateEvicting() {
  for (;;) {
    const BlockId id = pool->Allocate();
    if (id >= 0) {
      ++allocations;
      return id;
    }
    const std::optional<PrefixIndex::Evicted> victim = index.PopLru();
    if (!victim) return -1;
    pool->Free(victim->block);
    ++evictions;
  }
}

// Whether AllocateEvicting can succeed `n` times in a row. Evicting a leaf
// may expose its parent, so the evictable set is only a lower bound.
bool KvManager::State::CanAllocate(size_t n) const {
  const size_t free = pool->free_count();
  return free + index.evictable_count() >= n ||
         free + index.ReclaimableCount() >= n;
}

void KvManager::State::Unref(BlockId block, const Hash128* indexed_as) {
  if (pool->DecRef(block) > 0) return;
  if (indexed_as != nullptr) {
    index.SyncEvictable(*indexed_as);
  } else {
    pool->Free(block);
  }
}

size_t KvManager::State::IndexedRun(std::span<const Hash128> chain) const {
  size_t n = 0;
  while (n < chain.size() && index.Find(chain[n]) != nullptr) ++n;
  return n;
}

size_t KvManager::State::MapChain(std::span<const Hash128> chain,
                                  SequenceKv* seq) {
  const std::span<const Hash128> rest = chain.subspan(seq->chain.size());
  for (const Hash128& h : rest.first(IndexedRun(rest))) {
    const BlockId block = index.Find(h)->block;
    if (pool->IncRef(block) == 1) index.SyncEvictable(h);
    seq->blocks.push_back(block);
    seq->chain.push_back(h);
    seq->indexed.push_back(true);
  }
  if (!seq->chain.empty()) index.Touch(seq->chain.back());
  return seq->chain.size();
}

// The sequence will write its last prompt token into its last mapped block,
// which others can see: replaces it by a private copy (left unnamed, so
// Commit names it as a duplicate), or drops it when no block can be had or
// its types keep a full-precision residual (a sealed block cannot be
// written into again: its tokens are recomputed, as a cold run computes
// them). Returns whether the copy was made.
bool KvManager::State::PrivatizeLastBlock(SequenceKv* seq) {
  const BlockId shared = seq->blocks.back();
  const Hash128 hash = seq->chain.back();
  seq->chain.pop_back();
  seq->indexed.pop_back();
  const BlockId copy =
      kernels::KvHasResidual(layout.kv) ? BlockId{-1} : AllocateEvicting();
  if (copy >= 0) {
    std::memcpy(pool->data(copy), pool->data(shared), pool->block_bytes());
    seq->blocks.back() = copy;
    ++cow_copies;
  } else {
    seq->blocks.pop_back();
  }
  Unref(shared, &hash);
  return copy >= 0;
}

uint8_t KvManager::State::TiersWith(TierWritePolicy policy) const {
  uint8_t bits = 0;
  for (size_t t = 0; t < tiers.size(); ++t) {
    if (tiers[t].write == policy) bits |= uint8_t(1u << t);
  }
  return bits;
}

void KvManager::State::CollectObject(const SequenceKv& seq, size_t first,
                                     size_t count, uint8_t wanted,
                                     std::vector<PendingWrite>* out) {
  const size_t last = first + count - 1;
  if (!seq.indexed[last]) return;
  const uint8_t missing = wanted & ~index.Find(seq.chain[last])->in_tiers;
  if (missing == 0) return;
  PendingWrite w{{},
                 first == 0 ? seq.root : seq.chain[first - 1],
                 seq.chain[last],
                 missing};
  for (size_t i = first; i <= last; ++i) {
    if (seq.indexed[i]) index.MarkInTiers(seq.chain[i], missing);
    w.blocks.push_back(seq.blocks[i]);
  }
  out->push_back(std::move(w));
}

void KvManager::State::CollectWrites(const SequenceKv& seq, size_t begin,
                                     size_t end, uint8_t wanted, bool tail,
                                     std::vector<PendingWrite>* out) {
  if (wanted == 0) return;
  for (size_t i = begin; i < end; ++i) {
    if ((i + 1) % chunk == 0)
      CollectObject(seq, i + 1 - chunk, chunk, wanted, out);
  }
  if (!tail) return;
  for (size_t i = std::max(begin, end / chunk * chunk); i < end; ++i) {
    CollectObject(seq, i, 1, wanted, out);
  }
}

size_t KvManager::State::LoadRun(size_t t, const Hash128& root,
                                 std::span<const Hash128> chain,
                                 std::span<const Piece> pieces, size_t from,
                                 size_t base, std::span<const BlockId> fresh) {
  const uint8_t promote_to = PromotedFrom(t);
  store::Tier* tier = tiers[t].tier;
  const size_t limit = base + fresh.size();  // positions that have a block
  // Per object a batch's thread decoded, in order (a missing or bad one ends
  // the batch, and the load stops there): its bytes, kept only to promote
  // it (empty when no tier above takes it).
  using Batch = std::vector<std::vector<uint8_t>>;
  // Reads, verifies and decodes pieces [first, first + n) into their blocks,
  // straight from the tier's read buffers.
  auto load = [&, tier](size_t first, size_t n) {
    std::vector<Hash128> keys;
    for (size_t i = first; i < first + n; ++i) {
      const Piece& p = pieces[i];
      keys.push_back(chain[p.first + p.count - 1]);
    }
    // Blocks of a piece that are not wanted are decoded here and dropped
    // (allocated on first use: most loads have none).
    std::vector<uint8_t> scratch;
    std::vector<uint8_t*> into;
    std::vector<bool> decoded(n, false);
    Batch batch(n);
    const auto start = std::chrono::steady_clock::now();
    tier->Visit(keys, [&](size_t j, std::span<const uint8_t> object) {
      const Piece& p = pieces[first + j];
      Result<store::ObjectView> view =
          store::DecodeVerifiedObject(object, root, keys[j], layout, codec);
      if (!view.ok() || view->header.token_count != p.count * block_tokens()) {
        return;
      }
      into.clear();
      for (size_t i = p.first; i < p.first + p.count; ++i) {
        if (i >= from && i < limit) {
          into.push_back(pool->data(fresh[i - base]));
        } else {
          scratch.resize(pool->block_bytes());
          into.push_back(scratch.data());
        }
      }
      if (!store::DecodeObjectBlocks(*view, layout, into).ok()) return;
      decoded[j] = true;
      if (promote_to != 0) batch[j].assign(object.begin(), object.end());
    });
    if (load_observer) {
      size_t blocks = 0;
      for (size_t i = first; i < first + n; ++i) blocks += pieces[i].count;
      load_observer(t,
                    std::chrono::duration<double>(
                        std::chrono::steady_clock::now() - start)
                        .count(),
                    blocks);
    }
    // The objects up to the first one missing or bad.
    batch.resize(size_t(std::find(decoded.begin(), decoded.end(), false) -
                        decoded.begin()));
    return batch;
  };
  // Batches run on their own threads, kLoadBatchesInFlight at once, each
  // reading, verifying and decoding (so decoding a codec's objects uses
  // every core while the medium serves the next batches); this thread takes
  // them in order. Batches still in flight when a bad object ends the load
  // are waited for by the futures' destructors (they decode into blocks the
  // caller frees).
  struct InFlight {
    size_t first, n;
    std::future<Batch> batch;
  };
  std::deque<InFlight> reads;
  size_t issued = 0;  // pieces [0, issued) have a batch
  auto issue = [&] {
    const size_t first = issued;
    size_t bytes = 0;
    while (issued < pieces.size() &&
           (issued == first || bytes < kLoadBatchBytes)) {
      bytes += pieces[issued++].count * pool->block_bytes();
    }
    const size_t n = issued - first;
    reads.push_back({first, n, std::async(std::launch::async, load, first, n)});
  };
  size_t reached = from;
  while (issued < pieces.size() || !reads.empty()) {
    while (issued < pieces.size() && reads.size() < kLoadBatchesInFlight) {
      issue();
    }
    InFlight next = std::move(reads.front());
    reads.pop_front();
    Batch batch = next.batch.get();
    for (size_t j = 0; j < batch.size(); ++j) {
      const Piece& p = pieces[next.first + j];
      const Hash128& key = chain[p.first + p.count - 1];
      reached = std::min(p.first + p.count, limit);
      PutToTiers(key, promote_to, std::move(batch[j]));
      if (reached == limit) return reached;
    }
    if (batch.size() < next.n) return reached;
  }
  return reached;
}

uint8_t KvManager::State::PutToTiers(const Hash128& key, uint8_t to,
                                     std::vector<uint8_t> object) {
  uint8_t taken = 0;
  for (size_t t = 0; t < tiers.size(); ++t) {
    if ((to >> t & 1) == 0) continue;
    const bool last = (to >> (t + 1)) == 0;
    if (tiers[t].tier->Put(key, last ? std::move(object) : object).ok()) {
      taken |= uint8_t(1u << t);
    }
  }
  return taken;
}

void KvManager::State::WriteBehind(const Hash128& root,
                                   std::span<const PendingWrite> writes) {
  if (writes.empty()) return;
  std::vector<uint64_t> queued(tiers.size(), 0);
  std::vector<const uint8_t*> blocks;
  for (const PendingWrite& w : writes) {
    blocks.clear();
    for (const BlockId b : w.blocks) blocks.push_back(pool->data(b));
    const uint8_t taken = PutToTiers(
        w.key, w.tiers,
        store::EncodeObject(root, w.parent, w.key, layout, blocks, codec));
    for (size_t t = 0; t < tiers.size(); ++t) {
      if (taken >> t & 1) queued[t] += w.blocks.size();
    }
  }
  std::lock_guard lock(mu);
  for (size_t t = 0; t < tiers.size(); ++t) {
    tier_counters[t].queued_blocks += queued[t];
  }
}

Result<std::unique_ptr<KvManager>> KvManager::Create(
    const KvManagerOptions& options) {
  KV_RETURN_IF_ERROR(CheckLayout(options.layout));
  const size_t block_bytes = options.layout.block_bytes();
  const size_t n_blocks =
      std::min<size_t>(options.capacity_bytes / block_bytes, size_t{INT32_MAX});
  if (n_blocks == 0) {
    return Status::InvalidArgument(
        "kv cache: capacity " + std::to_string(options.capacity_bytes) +
        " bytes is below one block of " + std::to_string(block_bytes));
  }
  KV_RETURN_IF_ERROR(CheckTiers(options.tiers));
  if (options.chunk_blocks > kMaxChunkBlocks) {
    return Status::InvalidArgument("kv cache: chunk_blocks must be at most " +
                                   std::to_string(kMaxChunkBlocks) + ", not " +
                                   std::to_string(options.chunk_blocks));
  }
  const size_t chunk = options.chunk_blocks > 0
                           ? options.chunk_blocks
                           : AutoChunkBlocks(options.layout);
  const std::string codec_why =
      store::CodecSupports(options.tier_codec, options.layout);
  if (!codec_why.empty()) {
    return Status::InvalidArgument("kv cache: " + codec_why);
  }
  KV_ASSIGN_OR_RETURN(
      std::unique_ptr<BlockPool> pool,
      BlockPool::Create(block_bytes, BlockId(n_blocks), options.prefault));
  return std::unique_ptr<KvManager>(new KvManager(std::make_unique<State>(
      options.layout, std::move(pool), options.tiers, options.tier_codec, chunk,
      options.layered_range_bytes)));
}

KvManager::KvManager(std::unique_ptr<State> state) : state_(std::move(state)) {}
KvManager::~KvManager() = default;

const BlockLayout& KvManager::layout() const { return state_->layout; }
store::Codec KvManager::tier_codec() const { return state_->codec; }
size_t KvManager::chunk_blocks() const { return state_->chunk; }

size_t AutoChunkBlocks(const BlockLayout& layout) {
  return std::clamp<size_t>(kTargetObjectBytes / layout.block_bytes(), 1,
                            kMaxChunkBlocks);
}

uint8_t* KvManager::BlockData(BlockId id) const {
  KV_DCHECK(id >= 0 && id < state_->pool->capacity());
  return state_->pool->data(id);
}

int KvManager::Admit(std::span<const int32_t> tokens, SequenceKv* seq) {
  KV_CHECK(!tokens.empty());
  KV_CHECK(seq->blocks.empty() && seq->chain.empty() && seq->indexed.empty());
  State& s = *state_;
  std::vector<State::PendingWrite> writes;
  const std::vector<Hash128> chain = s.Chain(tokens, seq->root);
  int cached;
  {
    std::lock_guard lock(s.mu);
    const int n = int(tokens.size());
    const int b = int(s.block_tokens());
    cached = int(s.MapChain(chain, seq)) * b;
    if (!seq->chain.empty()) {
      s.index.CountHit(seq->chain.back());
      if (s.index.Find(seq->chain.front())->head_len == 0) {
        s.index.SetHead(seq->chain.front(), s.BlockTokens(tokens, 0));
      }
    }
    if (cached == n) cached = s.PrivatizeLastBlock(seq) ? n - 1 : n - b;
    s.queried_tokens += uint64_t(n);
    s.hit_tokens += uint64_t(cached);
    // Second use: the blocks this sequence now holds (so they stay intact
    // while being encoded below), in chunks and then single blocks.
    s.CollectWrites(*seq, 0, seq->chain.size(),
                    s.TiersWith(TierWritePolicy::kOnSecondUse),
                    /*tail=*/true, &writes);
  }
  s.WriteBehind(seq->root, writes);
  return cached;
}

Status KvManager::Fork(const SequenceKv& parent, int n, SequenceKv* child) {
  KV_CHECK(!parent.compacted && n > 0);
  KV_CHECK(child->blocks.empty() && child->chain.empty());
  State& s = *state_;
  std::lock_guard lock(s.mu);
  const size_t b = s.block_tokens();
  const size_t full = size_t(n) / b;
  const size_t held = (size_t(n) + b - 1) / b;
  KV_CHECK(held <= parent.blocks.size() && parent.chain.size() == full);
  BlockId copy = -1;
  if (held > full) {
    if (!s.CanAllocate(1)) {
      return Status::ResourceExhausted(
          "kv cache: no block for a copy of the prompt's last block");
    }
    copy = s.AllocateEvicting();
    KV_CHECK(copy >= 0);
    std::memcpy(s.pool->data(copy), s.pool->data(parent.blocks[full]),
                s.pool->block_bytes());
    ++s.cow_copies;
  }
  child->root = parent.root;
  for (size_t i = 0; i < full; ++i) {
    s.pool->IncRef(parent.blocks[i]);
    child->blocks.push_back(parent.blocks[i]);
  }
  child->chain = parent.chain;
  child->indexed = parent.indexed;
  if (copy >= 0) child->blocks.push_back(copy);
  return Status::OK();
}

Status KvManager::Reserve(int n_tokens, SequenceKv* seq) {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  const size_t b = s.block_tokens();
  const size_t want = (size_t(std::max(n_tokens, 0)) + b - 1) / b;
  if (want <= seq->blocks.size()) return Status::OK();
  const size_t needed = want - seq->blocks.size();
  if (!s.CanAllocate(needed)) {
    const size_t free = s.pool->free_count();
    return Status::ResourceExhausted(
        "kv cache: " + std::to_string(n_tokens) + " tokens need " +
        std::to_string(needed) + " more blocks, " +
        std::to_string(free + s.index.ReclaimableCount()) + " available (" +
        std::to_string(free) + " free)");
  }
  for (size_t i = 0; i < needed; ++i) {
    const BlockId id = s.AllocateEvicting();
    KV_CHECK(id >= 0);
    seq->blocks.push_back(id);
  }
  return Status::OK();
}

void KvManager::Commit(std::span<const int32_t> tokens, SequenceKv* seq) {
  if (seq->compacted) return;  // its blocks hold rows, not positions
  State& s = *state_;
  std::vector<State::PendingWrite> writes;
  {
    std::lock_guard lock(s.mu);
    const size_t first_new = seq->chain.size();
    s.CommitLocked(tokens, seq);
    // Each chunk as its last block is committed; the blocks after the last
    // chunk when the sequence is released.
    s.CollectWrites(*seq, first_new, seq->chain.size(),
                    s.TiersWith(TierWritePolicy::kOnCommit), /*tail=*/false,
                    &writes);
  }
  s.WriteBehind(seq->root, writes);
}

void KvManager::State::CommitLocked(std::span<const int32_t> tokens,
                                    SequenceKv* seq) {
  const size_t b = block_tokens();
  const size_t full = std::min(tokens.size() / b, seq->blocks.size());
  std::optional<Hash128> deepest_indexed;
  for (size_t i = seq->chain.size(); i < full; ++i) {
    const std::optional<Hash128> parent =
        i == 0 ? std::nullopt : std::optional(seq->chain[i - 1]);
    const Hash128 h =
        BlockHash(parent ? *parent : seq->root, BlockTokens(tokens, i));
    seq->chain.push_back(h);
    const bool parent_indexed = !parent || index.Find(*parent) != nullptr;
    const bool insert = parent_indexed && index.Find(h) == nullptr;
    if (insert) index.Insert(h, seq->blocks[i], parent);
    seq->indexed.push_back(insert);
    if (index.Find(h) != nullptr) deepest_indexed = h;
  }
  if (deepest_indexed) index.Touch(*deepest_indexed);
}

Status KvManager::Rewrite(size_t held, size_t n_blocks, const RewriteFill& fill,
                          SequenceKv* seq) {
  State& s = *state_;
  KV_CHECK(held <= seq->blocks.size());
  const std::vector<BlockId> from(seq->blocks.begin(),
                                  seq->blocks.begin() + held);
  // The spare blocks first, then fresh ones; spares past n_blocks stay.
  std::vector<BlockId> to(seq->blocks.begin() + held, seq->blocks.end());
  const size_t spare = to.size();
  {
    std::lock_guard lock(s.mu);
    const size_t needed = n_blocks > spare ? n_blocks - spare : 0;
    if (!s.CanAllocate(needed)) {
      return Status::ResourceExhausted("kv cache: no " +
                                       std::to_string(needed) +
                                       " blocks for a compacted sequence");
    }
    for (size_t i = 0; i < needed; ++i) to.push_back(s.AllocateEvicting());
  }
  // The sequence holds both sets: nobody else writes or evicts them.
  const Status filled = fill(from, std::span(to).first(n_blocks));
  if (!filled.ok()) {
    std::lock_guard lock(s.mu);
    for (size_t i = spare; i < to.size(); ++i) s.Unref(to[i], nullptr);
    return filled;
  }
  s.WriteTailBehind(*seq);
  std::lock_guard lock(s.mu);
  s.rewrite_blocks_before += held;
  s.rewrite_blocks_after += to.size();
  ++s.rewrites;
  seq->blocks = from;  // chain and indexed describe these
  s.ReleaseLocked(seq);
  seq->blocks = std::move(to);
  seq->compacted = true;
  return Status::OK();
}

KvManager::State::Shared KvManager::State::FinishRows(
    const Hash128& rows_root, size_t n, BlockId copy, uint8_t wanted,
    SequenceKv* seq, std::vector<PendingWrite>* writes) {
  SequenceKv rows;  // the rows chain as objects see it
  rows.root = rows_root;
  rows.blocks.assign(seq->blocks.begin(), seq->blocks.begin() + ptrdiff_t(n));
  rows.chain = seq->chain;
  rows.indexed = seq->indexed;
  CollectWrites(rows, 0, n, wanted, /*tail=*/true, writes);
  Shared shared;
  if (copy < 0) return shared;
  shared = {seq->blocks[n - 1], seq->chain.back(), seq->indexed.back()};
  std::memcpy(pool->data(copy), pool->data(shared.block), pool->block_bytes());
  seq->blocks[n - 1] = copy;
  seq->chain.pop_back();
  seq->indexed.pop_back();
  ++cow_copies;
  return shared;
}

void KvManager::State::ReleaseShared(const Shared& shared) {
  if (shared.block < 0) return;
  std::lock_guard lock(mu);
  Unref(shared.block, shared.indexed ? &shared.hash : nullptr);
}

bool KvManager::PublishRows(const Hash128& rows_root,
                            std::span<const Hash128> chain, bool copy_last,
                            SequenceKv* seq) {
  KV_CHECK(seq->compacted && seq->chain.empty() && !chain.empty() &&
           chain.size() <= seq->blocks.size());
  State& s = *state_;
  std::vector<State::PendingWrite> writes;
  State::Shared shared;
  {
    std::lock_guard lock(s.mu);
    // The last block is indexed below unless another sequence published it
    // first (then it stays private and needs no copy). The sequence holds
    // its blocks: allocating cannot evict them.
    BlockId copy = -1;
    if (copy_last && s.index.Find(chain.back()) == nullptr &&
        (copy = s.AllocateEvicting()) < 0) {
      return false;
    }
    bool any = false;
    for (size_t i = 0; i < chain.size(); ++i) {
      const std::optional<Hash128> parent =
          i == 0 ? std::nullopt : std::optional(chain[i - 1]);
      const bool insert = (!parent || s.index.Find(*parent) != nullptr) &&
                          s.index.Find(chain[i]) == nullptr;
      if (insert) s.index.Insert(chain[i], seq->blocks[i], parent);
      seq->chain.push_back(chain[i]);
      seq->indexed.push_back(insert);
      any |= insert;
    }
    KV_CHECK(copy < 0 || seq->indexed.back());
    const size_t run = s.IndexedRun(chain);
    if (run > 0) s.index.Touch(chain[run - 1]);
    s.rows_published += any;
    shared =
        s.FinishRows(rows_root, chain.size(), copy,
                     s.TiersWith(TierWritePolicy::kOnCommit), seq, &writes);
  }
  s.WriteBehind(rows_root, writes);
  s.ReleaseShared(shared);
  return true;
}

bool KvManager::AdmitRows(const Hash128& rows_root,
                          std::span<const Hash128> chain, bool copy_last,
                          SequenceKv* seq) {
  KV_CHECK(!chain.empty());
  KV_CHECK(seq->blocks.empty() && seq->chain.empty() && seq->indexed.empty());
  State& s = *state_;
  std::vector<State::PendingWrite> writes;
  State::Shared shared;
  {
    std::lock_guard lock(s.mu);
    if (s.IndexedRun(chain) < chain.size()) return false;
    s.MapChain(chain, seq);
    s.index.CountHit(chain.back());
    seq->compacted = true;
    // The chain is referenced now: allocating cannot evict it.
    const BlockId copy = copy_last ? s.AllocateEvicting() : BlockId{-1};
    if (copy_last && copy < 0) {
      s.ReleaseLocked(seq);
      return false;
    }
    ++s.rows_hits;
    shared =
        s.FinishRows(rows_root, chain.size(), copy,
                     s.TiersWith(TierWritePolicy::kOnSecondUse), seq, &writes);
  }
  s.WriteBehind(rows_root, writes);
  s.ReleaseShared(shared);
  return true;
}

bool KvManager::HoldsRows(std::span<const Hash128> chain) const {
  const State& s = *state_;
  std::lock_guard lock(s.mu);
  return s.IndexedRun(chain) == chain.size();
}

void KvManager::State::ReleaseLocked(SequenceKv* seq) {
  for (size_t i = 0; i < seq->blocks.size(); ++i) {
    const bool indexed = i < seq->indexed.size() && seq->indexed[i];
    Unref(seq->blocks[i], indexed ? &seq->chain[i] : nullptr);
  }
  seq->blocks.clear();
  seq->chain.clear();
  seq->indexed.clear();
  seq->compacted = false;
}

void KvManager::State::WriteTailBehind(const SequenceKv& seq) {
  // A compacted sequence's published rows were written when published.
  if (seq.compacted) return;
  std::vector<PendingWrite> writes;
  {
    std::lock_guard lock(mu);
    const size_t full = seq.chain.size();
    CollectWrites(seq, full / chunk * chunk, full,
                  TiersWith(TierWritePolicy::kOnCommit), /*tail=*/true,
                  &writes);
  }
  WriteBehind(seq.root, writes);
}

void KvManager::Release(SequenceKv* seq) {
  State& s = *state_;
  s.WriteTailBehind(*seq);
  std::lock_guard lock(s.mu);
  s.ReleaseLocked(seq);
}

int KvManager::Lookup(std::span<const int32_t> tokens,
                      const Hash128& root) const {
  const State& s = *state_;
  const std::vector<Hash128> chain = s.Chain(tokens, root);
  std::lock_guard lock(s.mu);
  return int(s.IndexedRun(chain) * s.block_tokens());
}

std::vector<Hash128> KvManager::State::Chain(std::span<const int32_t> tokens,
                                             const Hash128& root) const {
  std::vector<Hash128> chain(tokens.size() / block_tokens());
  Hash128 prev = root;
  for (size_t i = 0; i < chain.size(); ++i) {
    prev = chain[i] = BlockHash(prev, BlockTokens(tokens, i));
  }
  return chain;
}

KvManager::State::TierPlan KvManager::State::PlanTiers(
    std::span<const Hash128> chain, size_t start) const {
  const size_t n = chain.size();
  TierPlan plan;
  plan.pieces.resize(tiers.size());
  plan.ends.assign(tiers.size(), start);
  size_t p = start;
  for (size_t t = 0; t < tiers.size() && p < n; ++t) {
    // Keys: the chunks from the one holding block p on, then the single
    // blocks from p on (with chunks of one block, the singles alone).
    const size_t first_chunk = p / chunk;
    const size_t chunks =
        chunk > 1 ? n / chunk - std::min(n / chunk, first_chunk) : 0;
    std::vector<Hash128> keys;
    keys.reserve(chunks + (n - p));
    for (size_t k = first_chunk; k < first_chunk + chunks; ++k) {
      keys.push_back(chain[(k + 1) * chunk - 1]);
    }
    keys.insert(keys.end(), chain.begin() + ptrdiff_t(p), chain.end());
    const std::vector<bool> held = tiers[t].tier->Exists(keys);
    const size_t single0 = p;
    while (p < n) {
      const size_t k = p / chunk;
      if (k < first_chunk + chunks && held[k - first_chunk]) {
        plan.pieces[t].push_back({k * chunk, chunk});
        p = (k + 1) * chunk;
      } else if (held[chunks + (p - single0)]) {
        plan.pieces[t].push_back({p, 1});
        ++p;
      } else {
        break;
      }
    }
    plan.ends[t] = p;
    for (size_t u = t + 1; u < tiers.size(); ++u) plan.ends[u] = p;
  }
  plan.end = p;
  return plan;
}

PrefixHit KvManager::Probe(std::span<const int32_t> tokens,
                           const Hash128& root) const {
  const State& s = *state_;
  const size_t b = s.block_tokens();
  const std::vector<Hash128> chain = s.Chain(tokens, root);
  size_t in_dram;
  {
    std::lock_guard lock(s.mu);
    in_dram = s.IndexedRun(chain);
  }
  PrefixHit hit;
  hit.dram_tokens = int(in_dram * b);
  const State::TierPlan plan = s.PlanTiers(chain, in_dram);
  size_t at = in_dram;
  for (const size_t end : plan.ends) {
    hit.tier_tokens.push_back(int((end - at) * b));
    at = end;
  }
  return hit;
}

PrefixHit KvManager::Prefetch(std::span<const int32_t> tokens,
                              const Hash128& root) {
  return state_->PrefetchChain(state_->Chain(tokens, root), root);
}

PrefixHit KvManager::PrefetchRows(const Hash128& rows_root,
                                  std::span<const Hash128> chain) {
  return state_->PrefetchChain(chain, rows_root);
}

PrefixHit KvManager::State::PrefetchChain(std::span<const Hash128> chain,
                                          const Hash128& root) {
  State& s = *this;
  const size_t b = s.block_tokens();
  PrefixHit hit;
  hit.tier_tokens.assign(s.tiers.size(), 0);
  // `pin` holds the DRAM prefix (so the loaded blocks' parents stay indexed)
  // and then each loaded block, until they are all indexed.
  SequenceKv pin;
  pin.root = root;
  // The hashes this Prefetch claims (State::loading) until its loads are
  // indexed.
  std::vector<Hash128> claimed;
  {
    std::unique_lock lock(s.mu);
    bool waited = false;
    // The next block is being loaded by another Prefetch: wait for it, then
    // map what it brought (pin keeps the head mapped so far).
    while (s.MapChain(chain, &pin) < chain.size() &&
           s.loading.contains(chain[pin.chain.size()])) {
      if (!waited) ++s.shared_loads;
      waited = true;
      s.loads_done.wait(lock);
    }
    hit.dram_tokens = int(pin.chain.size() * b);
    for (const Hash128& h : chain.subspan(pin.chain.size())) {
      if (s.loading.insert(h).second) claimed.push_back(h);
    }
  }
  const size_t mapped = pin.chain.size();
  const State::TierPlan plan = s.PlanTiers(chain, mapped);
  const size_t wanted = plan.end - mapped;

  std::vector<BlockId> fresh;  // fresh[i] receives chain[mapped + i]
  if (wanted > 0) {
    std::lock_guard lock(s.mu);
    while (fresh.size() < wanted) {
      const BlockId id = s.AllocateEvicting();
      if (id < 0) break;
      fresh.push_back(id);
    }
  }
  // Read, verify and decode, tier by tier along the chain, without the
  // lock; the first missing or bad object ends the load.
  std::vector<uint8_t> source(fresh.size(), 0);  // tier index per block
  std::vector<uint64_t> failures(s.tiers.size(), 0);
  const size_t limit = mapped + fresh.size();
  size_t reached = mapped;
  for (size_t t = 0; t < s.tiers.size() && reached < limit; ++t) {
    if (plan.pieces[t].empty()) continue;
    const size_t end = std::min(plan.ends[t], limit);
    const size_t got =
        s.LoadRun(t, root, chain, plan.pieces[t], reached, mapped, fresh);
    std::fill(source.begin() + ptrdiff_t(reached - mapped),
              source.begin() + ptrdiff_t(got - mapped), uint8_t(t));
    reached = got;
    if (reached < end) {
      ++failures[t];
      break;
    }
  }
  const size_t loaded = reached - mapped;
  const std::span<const Hash128> keys =
      std::span<const Hash128>(chain).subspan(mapped);

  std::lock_guard lock(s.mu);
  for (size_t i = 0; i < loaded; ++i) {
    const Hash128& h = keys[i];
    const std::optional<Hash128> parent =
        pin.chain.empty() ? std::nullopt : std::optional(pin.chain.back());
    // The tiers that now hold the block: its source, and those it was
    // promoted to.
    const uint8_t in_tiers =
        uint8_t(1u << source[i]) | s.PromotedFrom(source[i]);
    if (const PrefixIndex::Node* node = s.index.Find(h)) {
      // Another sequence computed or loaded it meanwhile: use that one.
      s.Unref(fresh[i], nullptr);
      if (s.pool->IncRef(node->block) == 1) s.index.SyncEvictable(h);
      pin.blocks.push_back(node->block);
    } else {
      s.index.Insert(h, fresh[i], parent);
      pin.blocks.push_back(fresh[i]);
    }
    s.index.MarkInTiers(h, in_tiers);
    pin.chain.push_back(h);
    pin.indexed.push_back(true);
    ++s.tier_counters[source[i]].loaded_blocks;
    hit.tier_tokens[source[i]] += int(b);
  }
  for (size_t i = loaded; i < fresh.size(); ++i) s.Unref(fresh[i], nullptr);
  for (size_t t = 0; t < s.tiers.size(); ++t) {
    s.tier_counters[t].load_failures += failures[t];
  }
  if (!pin.chain.empty()) s.index.Touch(pin.chain.back());
  s.ReleaseLocked(&pin);
  for (const Hash128& h : claimed) s.loading.erase(h);
  if (!claimed.empty()) s.loads_done.notify_all();
  return hit;
}

// One object of a layered load: blocks [first, first + count) of the load
// (fresh[first..]), read from tier `tier`.
struct LayeredPiece {
  size_t tier;
  size_t first;
  size_t count;
};

struct LayeredLoad::Impl {
  Hash128 root;
  std::vector<Hash128> chain;        // h_1.. of the blocks mapped, then loaded
  size_t mapped = 0;                 // chain[0, mapped): the DRAM prefix
  size_t queried_tokens = 0;         // the prompt's length
  std::vector<BlockId> fresh;        // fresh[i] receives chain[mapped + i]
  std::vector<LayeredPiece> pieces;  // along the chain, in order
  PrefixHit planned;

  mutable std::mutex mu;
  mutable std::condition_variable cv;
  int layers_read = 0;    // layers [0, layers_read) read or given up
  bool done = false;      // RunLayeredLoad has verified what it could
  size_t verified = 0;    // leading blocks of `fresh` that verified
  bool finished = false;  // FinishLayeredLoad ran

  // Announces layers [0, n) read (and, with `all_done`, the verdict).
  void Publish(int n, bool all_done) {
    std::lock_guard lock(mu);
    layers_read = n;
    done = all_done;
    cv.notify_all();
  }
};

LayeredLoad::LayeredLoad(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LayeredLoad::~LayeredLoad() {
  KV_CHECK_MSG(impl_->finished || impl_->fresh.empty(),
               "a layered load was dropped before FinishLayeredLoad");
}

int LayeredLoad::tokens() const { return impl_->planned.total(); }

const PrefixHit& LayeredLoad::planned() const { return impl_->planned; }

void LayeredLoad::AwaitLayer(int layer) const {
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock,
                 [&] { return impl_->done || impl_->layers_read > layer; });
}

bool LayeredLoad::loaded() const {
  std::lock_guard lock(impl_->mu);
  return impl_->done;
}

std::shared_ptr<LayeredLoad> KvManager::BeginLayeredLoad(
    std::span<const int32_t> tokens, SequenceKv* seq) {
  KV_CHECK(seq->blocks.empty());
  State& s = *state_;
  const size_t b = s.block_tokens();
  if (s.codec != store::Codec::kRaw || tokens.empty() ||
      std::none_of(s.tiers.begin(), s.tiers.end(), [](const TierOptions& t) {
        return t.tier->reads_ranges();
      })) {
    return nullptr;
  }
  auto impl = std::make_unique<LayeredLoad::Impl>();
  LayeredLoad::Impl& l = *impl;
  l.root = seq->root;
  l.queried_tokens = tokens.size();
  // The blocks loaded are the whole blocks before the last token, which is
  // always computed; a prompt that ends on a block boundary and is stored
  // whole is left to Prefetch, which loads its last block too (Admit then
  // copies it and computes one token, not a block).
  const size_t loadable = (tokens.size() - 1) / b;
  l.chain = s.Chain(tokens, seq->root);  // its full blocks
  {
    std::lock_guard lock(s.mu);
    l.mapped = s.MapChain(l.chain, seq);
    if (l.mapped >= loadable || s.loading.contains(l.chain[l.mapped])) {
      s.ReleaseLocked(seq);
      return nullptr;
    }
  }
  const State::TierPlan plan = s.PlanTiers(l.chain, l.mapped);
  // The whole objects along the chain, from tiers that read ranges, that
  // end at or before the last loadable block.
  const size_t limit = plan.end == l.chain.size() && loadable < plan.end
                           ? l.mapped  // the whole prompt: Prefetch's
                           : std::min(plan.end, loadable);
  size_t at = l.mapped;
  for (size_t t = 0; t < s.tiers.size(); ++t) {
    if (plan.pieces[t].empty()) continue;
    if (!s.tiers[t].tier->reads_ranges()) break;
    for (const State::Piece& p : plan.pieces[t]) {
      if (p.first != at || p.first + p.count > limit) break;
      l.pieces.push_back({t, p.first - l.mapped, p.count});
      at += p.count;
    }
    if (at != plan.ends[t]) break;
  }
  std::lock_guard lock(s.mu);
  // Blocks for them, unless another load claimed one meanwhile (its
  // Prefetch waits for that load).
  const bool claimed_elsewhere = std::any_of(
      l.chain.begin() + ptrdiff_t(l.mapped), l.chain.begin() + ptrdiff_t(at),
      [&](const Hash128& h) { return s.loading.contains(h); });
  while (!claimed_elsewhere && l.fresh.size() < at - l.mapped) {
    const BlockId id = s.AllocateEvicting();
    if (id < 0) break;
    l.fresh.push_back(id);
  }
  // The pool may have had fewer: the objects that fit whole.
  while (!l.pieces.empty() &&
         l.pieces.back().first + l.pieces.back().count > l.fresh.size()) {
    l.pieces.pop_back();
  }
  const size_t used =
      l.pieces.empty() ? 0 : l.pieces.back().first + l.pieces.back().count;
  for (size_t i = used; i < l.fresh.size(); ++i) s.Unref(l.fresh[i], nullptr);
  l.fresh.resize(used);
  if (l.fresh.empty()) {
    s.ReleaseLocked(seq);
    return nullptr;
  }
  l.chain.resize(l.mapped + used);
  for (size_t i = l.mapped; i < l.chain.size(); ++i) {
    s.loading.insert(l.chain[i]);
  }
  seq->blocks.insert(seq->blocks.end(), l.fresh.begin(), l.fresh.end());
  ++s.layered_loads;
  l.planned.dram_tokens = int(l.mapped * b);
  l.planned.tier_tokens.assign(s.tiers.size(), 0);
  for (const LayeredPiece& p : l.pieces) {
    l.planned.tier_tokens[p.tier] += int(p.count * b);
  }
  return std::shared_ptr<LayeredLoad>(new LayeredLoad(std::move(impl)));
}

void KvManager::RunLayeredLoad(LayeredLoad& load) {
  State& s = *state_;
  LayeredLoad::Impl& l = *load.impl_;
  const auto start = std::chrono::steady_clock::now();
  const BlockLayout& layout = s.layout;
  const size_t block_bytes = layout.block_bytes();
  const size_t layer_bytes = layout.layer_bytes();
  const int n_layers = layout.n_layers;
  const int per_group = int(std::clamp<size_t>(
      s.layered_range_bytes / layer_bytes, 1, size_t(n_layers)));
  std::vector<std::array<uint8_t, store::kObjectHeaderBytes>> headers(
      l.pieces.size());
  // Pieces [0, valid) were read whole so far; a piece that was not ends
  // the load there (its blocks and those after it are recomputed).
  size_t valid = l.pieces.size();
  std::vector<Hash128> keys;
  std::vector<size_t> key_piece;  // piece of each key
  std::vector<store::Tier::RangeRead> ranges;
  for (int g0 = 0; g0 < n_layers; g0 += per_group) {
    const int g1 = std::min(n_layers, g0 + per_group);
    const size_t offset = size_t(g0) * layer_bytes;
    const size_t bytes = size_t(g1 - g0) * layer_bytes;
    for (size_t j = 0; j < valid;) {
      // The pieces of one tier, at once.
      const size_t t = l.pieces[j].tier;
      keys.clear();
      key_piece.clear();
      ranges.clear();
      for (; j < valid && l.pieces[j].tier == t; ++j) {
        const LayeredPiece& p = l.pieces[j];
        const size_t k = keys.size();
        keys.push_back(l.chain[l.mapped + p.first + p.count - 1]);
        key_piece.push_back(j);
        if (g0 == 0) ranges.push_back({k, 0, headers[j]});
        for (size_t i = 0; i < p.count; ++i) {
          uint8_t* block = s.pool->data(l.fresh[p.first + i]);
          ranges.push_back(
              {k,
               store::kObjectHeaderBytes + i * block_bytes + offset,
               {block + offset, bytes}});
        }
      }
      const std::vector<bool> read = s.tiers[t].tier->ReadRanges(keys, ranges);
      for (size_t k = 0; k < keys.size(); ++k) {
        if (!read[k]) {
          valid = std::min(valid, key_piece[k]);
          break;
        }
      }
    }
    if (g1 < n_layers) l.Publish(g1, false);
  }
  // Verify each object whole, from the last to the first (so that the head
  // of the chain ends up the most recently used in the tier, as Visit
  // leaves it); the load ends at the first, in chain order, that fails.
  std::vector<std::span<const uint8_t>> payload;
  std::vector<uint64_t> failures(s.tiers.size(), 0);
  for (size_t j = valid; j-- > 0;) {
    const LayeredPiece& p = l.pieces[j];
    const Hash128& key = l.chain[l.mapped + p.first + p.count - 1];
    payload.clear();
    for (size_t i = 0; i < p.count; ++i) {
      payload.push_back({s.pool->data(l.fresh[p.first + i]), block_bytes});
    }
    // The tier judges the bytes (and drops a damaged or forged object),
    // then the header must name what was asked for.
    bool ok =
        s.tiers[p.tier].tier->VerifyGathered(key, headers[j], payload).ok();
    if (ok) {
      const store::ObjectHeader header =
          store::ParseHeaderPrefix(headers[j]).value();
      ok = store::ExpectObjectHeader(header, l.root, key, layout,
                                     store::Codec::kRaw)
               .ok() &&
           header.token_count == p.count * s.block_tokens();
    }
    if (!ok) valid = j;
  }
  size_t verified = 0;  // blocks
  for (size_t j = 0; j < valid; ++j) verified += l.pieces[j].count;
  if (valid < l.pieces.size()) ++failures[l.pieces[valid].tier];
  // Promote what verified to the tiers above its own that take loads.
  for (size_t j = 0; j < valid; ++j) {
    const LayeredPiece& p = l.pieces[j];
    const uint8_t promote_to = s.PromotedFrom(p.tier);
    if (promote_to == 0) continue;
    std::vector<uint8_t> object;
    object.reserve(headers[j].size() + p.count * block_bytes);
    object.assign(headers[j].begin(), headers[j].end());
    for (size_t i = 0; i < p.count; ++i) {
      const uint8_t* block = s.pool->data(l.fresh[p.first + i]);
      object.insert(object.end(), block, block + block_bytes);
    }
    s.PutToTiers(l.chain[l.mapped + p.first + p.count - 1], promote_to,
                 std::move(object));
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  {
    std::lock_guard lock(s.mu);
    for (size_t t = 0; t < s.tiers.size(); ++t) {
      s.tier_counters[t].load_failures += failures[t];
    }
  }
  if (s.load_observer) {
    for (size_t t = 0; t < s.tiers.size(); ++t) {
      size_t blocks = 0;
      for (const LayeredPiece& p : l.pieces)
        blocks += p.tier == t ? p.count : 0;
      if (blocks > 0) s.load_observer(t, seconds, blocks);
    }
  }
  {
    std::lock_guard lock(l.mu);
    l.verified = verified;
  }
  l.Publish(n_layers, true);
}

int KvManager::FinishLayeredLoad(LayeredLoad& load, SequenceKv* seq) {
  State& s = *state_;
  LayeredLoad::Impl& l = *load.impl_;
  KV_CHECK(!l.finished);
  {
    std::unique_lock lock(l.mu);
    l.cv.wait(lock, [&] { return l.done; });
  }
  const size_t b = s.block_tokens();
  std::lock_guard lock(s.mu);
  KV_CHECK(seq->chain.size() == l.mapped);
  std::vector<uint8_t> source(l.fresh.size(), 0);  // tier per block
  for (const LayeredPiece& p : l.pieces) {
    std::fill_n(source.begin() + ptrdiff_t(p.first), p.count, uint8_t(p.tier));
  }
  for (size_t i = 0; i < l.verified; ++i) {
    const Hash128& h = l.chain[l.mapped + i];
    const std::optional<Hash128> parent =
        seq->chain.empty() ? std::nullopt : std::optional(seq->chain.back());
    const bool taken = s.index.Find(h) != nullptr;
    // Another sequence computed or loaded it meanwhile: this copy stays
    // private to the sequence (it computed over it).
    if (!taken) s.index.Insert(h, l.fresh[i], parent);
    s.index.MarkInTiers(h,
                        uint8_t(1u << source[i]) | s.PromotedFrom(source[i]));
    seq->chain.push_back(h);
    seq->indexed.push_back(!taken);
    ++s.tier_counters[source[i]].loaded_blocks;
  }
  if (!seq->chain.empty()) s.index.Touch(seq->chain.back());
  const size_t held = l.mapped + l.verified;
  s.queried_tokens += l.queried_tokens;
  s.hit_tokens += held * b;
  if (l.verified < l.fresh.size()) ++s.layered_load_failures;
  for (size_t i = l.mapped; i < l.chain.size(); ++i) {
    s.loading.erase(l.chain[i]);
  }
  s.loads_done.notify_all();
  l.finished = true;
  return int(held * b);
}

size_t KvManager::tier_count() const { return state_->tiers.size(); }

std::vector<TierCounters> KvManager::TierStats() const {
  const State& s = *state_;
  std::vector<TierCounters> out;
  {
    std::lock_guard lock(s.mu);
    out = s.tier_counters;
  }
  for (size_t t = 0; t < out.size(); ++t) {
    out[t].store = s.tiers[t].tier->Stats();
  }
  return out;
}

void KvManager::SetLoadObserver(LoadObserver observer) {
  std::lock_guard lock(state_->mu);
  state_->load_observer = std::move(observer);
}

size_t KvManager::Clear() {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  size_t n = 0;
  while (const std::optional<PrefixIndex::Evicted> victim = s.index.PopLru()) {
    s.pool->Free(victim->block);
    ++n;
  }
  return n;
}

std::vector<HotPrefix> KvManager::HottestPrefixes(size_t k) const {
  State& s = *state_;
  std::lock_guard lock(s.mu);
  std::vector<HotPrefix> out;
  for (const PrefixIndex::Hot& h : s.index.Hottest(k)) {
    HotPrefix p;
    p.tokens = h.depth * s.block_tokens();
    p.hits = h.node->hits;
    p.first_tokens.assign(h.root->head.begin(),
                          h.root->head.begin() + h.root->head_len);
    p.in_tiers = h.node->in_tiers;
    p.in_use = s.pool->refcount(h.node->block) > 0;
    out.push_back(std::move(p));
  }
  return out;
}

KvStats KvManager::Stats() const {
  const State& s = *state_;
  std::lock_guard lock(s.mu);
  KvStats st;
  st.capacity_blocks = size_t(s.pool->capacity());
  st.used_blocks = s.pool->used_count();
  st.free_blocks = s.pool->free_count();
  st.cached_blocks = st.capacity_blocks - st.used_blocks - st.free_blocks;
  st.block_tokens = s.block_tokens();
  st.block_bytes = s.pool->block_bytes();
  st.kv_format = s.layout.kv;
  st.bytes_per_token = s.layout.bytes_per_token();
  st.tier_codec = s.codec;
  st.tier_chunk_blocks = s.chunk;
  st.queried_tokens = s.queried_tokens;
  st.hit_tokens = s.hit_tokens;
  st.evictions = s.evictions;
  st.cow_copies = s.cow_copies;
  st.allocations = s.allocations;
  st.rewrites = s.rewrites;
  st.rewrite_blocks_before = s.rewrite_blocks_before;
  st.rewrite_blocks_after = s.rewrite_blocks_after;
  st.rows_published = s.rows_published;
  st.rows_hits = s.rows_hits;
  st.shared_loads = s.shared_loads;
  st.layered_loads = s.layered_loads;
  st.layered_load_failures = s.layered_load_failures;
  return st;
}

Status KvManager::Validate(std::span<const SequenceKv* const> live) const {
  const State& s = *state_;
  std::lock_guard lock(s.mu);
  KV_RETURN_IF_ERROR(s.ValidateTables(live));
  KV_RETURN_IF_ERROR(s.ValidateFreeList());
  KV_RETURN_IF_ERROR(s.ValidateNodes());
  return s.index.Validate();
}

// Block tables are well formed, their indexed entries agree with the index,
// and every block's refcount is the number of table entries holding it.
Status KvManager::State::ValidateTables(
    std::span<const SequenceKv* const> live) const {
  const BlockId cap = pool->capacity();
  std::vector<int> held(size_t(cap), 0);
  for (size_t k = 0; k < live.size(); ++k) {
    const SequenceKv& seq = *live[k];
    if (seq.chain.size() != seq.indexed.size() ||
        seq.chain.size() > seq.blocks.size()) {
      return Broken(k, "chain, indexed and blocks sizes disagree");
    }
    for (const BlockId id : seq.blocks) {
      if (id < 0 || id >= cap) {
        return Broken(k, "block " + std::to_string(id) + " out of range");
      }
      ++held[size_t(id)];
    }
    for (size_t i = 0; i < seq.chain.size(); ++i) {
      if (!seq.indexed[i]) continue;
      const PrefixIndex::Node* node = index.Find(seq.chain[i]);
      if (node == nullptr || node->block != seq.blocks[i]) {
        return Broken(k, "block " + std::to_string(i) +
                             " is marked indexed but the index disagrees");
      }
      const Hash128* parent = node->parent ? &node->parent->hash : nullptr;
      if ((i == 0) != (parent == nullptr) ||
          (parent != nullptr && *parent != seq.chain[i - 1])) {
        return Broken(k, "block " + std::to_string(i) +
                             ": index parent is not the previous chain entry");
      }
    }
  }
  for (BlockId id = 0; id < cap; ++id) {
    if (pool->refcount(id) != held[size_t(id)]) {
      return Status::Internal(
          "kv cache: block " + std::to_string(id) + " has refcount " +
          std::to_string(pool->refcount(id)) + " but block tables hold it " +
          std::to_string(held[size_t(id)]) + " times");
    }
  }
  return Status::OK();
}

// The free list holds each free block once, none referenced.
Status KvManager::State::ValidateFreeList() const {
  std::vector<uint8_t> seen(size_t(pool->capacity()), 0);
  for (const BlockId id : pool->free_list()) {
    const std::string name = "kv cache: free block " + std::to_string(id);
    if (id < 0 || id >= pool->capacity()) {
      return Status::Internal(name + " out of range");
    }
    if (seen[size_t(id)]++) return Status::Internal(name + " listed twice");
    if (!pool->is_free(id)) return Status::Internal(name + " not marked free");
    if (pool->refcount(id) != 0) return Status::Internal(name + " referenced");
  }
  size_t marked = 0;
  for (BlockId id = 0; id < pool->capacity(); ++id) marked += pool->is_free(id);
  if (marked != pool->free_count()) {
    return Status::Internal("kv cache: " + std::to_string(marked) +
                            " blocks marked free, free list holds " +
                            std::to_string(pool->free_count()));
  }
  return Status::OK();
}

// Index nodes own distinct, non-free blocks, and used + cached + free
// accounts for every block.
Status KvManager::State::ValidateNodes() const {
  std::vector<uint8_t> owned(size_t(pool->capacity()), 0);
  Status status;
  size_t cached = 0;
  index.ForEachNode([&](const PrefixIndex::Node& n) {
    if (!status.ok()) return;
    const std::string name = "kv cache: index node " + n.hash.Hex();
    if (n.block < 0 || n.block >= pool->capacity()) {
      status = Status::Internal(name + ": block out of range");
    } else if (owned[size_t(n.block)]++) {
      status = Status::Internal(name + ": block " + std::to_string(n.block) +
                                " belongs to two nodes");
    } else if (pool->is_free(n.block)) {
      status = Status::Internal(name + ": block " + std::to_string(n.block) +
                                " is on the free list");
    } else {
      cached += pool->refcount(n.block) == 0;
    }
  });
  KV_RETURN_IF_ERROR(status);
  size_t used = 0;
  for (BlockId id = 0; id < pool->capacity(); ++id) {
    used += pool->refcount(id) > 0;
  }
  if (used != pool->used_count()) {
    return Status::Internal(
        "kv cache: pool counts " + std::to_string(pool->used_count()) +
        " used blocks, " + std::to_string(used) + " are referenced");
  }
  if (used + cached + pool->free_count() != size_t(pool->capacity())) {
    return Status::Internal("kv cache: used " + std::to_string(used) +
                            " + cached " + std::to_string(cached) + " + free " +
                            std::to_string(pool->free_count()) +
                            " != capacity " + std::to_string(pool->capacity()));
  }
  return Status::OK();
}

}  // namespace kvstash::kvcache
