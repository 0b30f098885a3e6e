// KvManager: the paged, shared KV cache of a server, and the only lock holder
// of kvcache/.
//
// It composes the BlockPool (one arena of fixed-size blocks, refcounts, free
// list), each sequence's block table (SequenceKv) and the PrefixIndex (radix
// tree over block-hash chains, see block_hash.h):
//
//   Admit    maps the longest cached prefix of a prompt into a new sequence
//            (full blocks only), so only the rest is computed;
//   Reserve  gives a sequence blocks for the positions it is about to compute,
//            evicting cached blocks when the pool is short;
//   Commit   names the sequence's newly full blocks and enters them into the
//            index, so later requests can map them;
//   Release  drops a finished (or preempted, or cancelled) sequence: its
//            indexed blocks stay cached (evictable), the rest are freed.
//
// Below DRAM sit the tiers (store/tier.h: local disk, Redis), searched in the
// order given. They hold the same blocks as objects keyed by block hash, so
// they outlive the process and are shared between servers:
//   Prefetch walks the hash chain DRAM -> tier 0 -> tier 1 ..., loads what
//            the tiers hold past the DRAM prefix into fresh blocks (the I/O
//            runs without the lock, so other threads keep working) and
//            indexes them: a hit in a lower tier is promoted into DRAM, and
//            the next Admit maps it like any cached block;
//   write-behind: blocks newly indexed by Commit are encoded and queued to
//            every tier whose policy is kOnCommit (the tier's Put never
//            blocks); a kOnSecondUse tier gets them when an Admit maps them
//            from DRAM. An object loaded from tier t is also queued to the
//            tiers above t that follow kOnCommit (a Redis hit fills the local
//            disk).
// Objects: a tier object holds a chunk of C = chunk_blocks consecutive
//   blocks (chunk k holds blocks [k C, (k + 1) C) of a chain, keyed by the
//   hash of its last block), written when its last block is committed; the
//   blocks after a sequence's last whole chunk are written as single-block
//   objects when the sequence is released (or, second-use, mapped). A lookup
//   asks for the chunks and the single blocks along the chain at once and
//   walks it: a chunk where one is held, else a single block. So every
//   prefix that ended a stored sequence is found whole, and a prefix that
//   branches off inside another's chunk finds the chunks before the branch
//   (the rest is recomputed); a chunk partly in DRAM is read whole and its
//   other blocks dropped.
// Objects are verified on load (checksum, namespace root, key, layout,
// codec) and decoded by the tier codec; a bad or missing object ends the load
// there and its tokens are recomputed.
//
// Facts that hold (checked by Validate):
//   - used + cached + free = capacity, where used = blocks referenced by a
//     sequence, cached = indexed blocks no sequence references, free = the
//     free list;
//   - eviction takes the least recently used unreferenced *leaf* of the index
//     (a hit refreshes the whole path, so tails go before shared heads) and
//     never a block a sequence references;
//   - a partial block is never shared; a sequence never writes into a block
//     another holder can see (Admit copies the last shared block when the
//     prompt ends inside it: copy-on-write; for KV types with a
//     full-precision residual the block is dropped and recomputed instead);
//   - Admit always leaves at least the last prompt token to compute, so the
//     request gets logits.
//
// Thread-safety: every method may be called from any thread; one mutex guards
// the state. BlockData() takes no lock (the arena never moves); the caller
// owns the contents of the blocks its sequence holds between Reserve and
// Release.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/hash.h"
#include "base/status.h"
#include "kernels/block_layout.h"
#include "store/kv_codec.h"
#include "store/tier.h"

namespace kvstash::kvcache {

using kernels::BlockLayout;

using BlockId = int32_t;

// When a committed block is written behind to a tier.
enum class TierWritePolicy {
  kOnCommit,     // as soon as it is full and indexed (the default)
  kOnSecondUse,  // when a later request maps it from DRAM: only reused blocks
};
const char* TierWritePolicyName(TierWritePolicy policy);

struct TierOptions {
  store::Tier* tier = nullptr;  // not owned; must outlive the KvManager
  TierWritePolicy write = TierWritePolicy::kOnCommit;
};

inline constexpr size_t kMaxTiers = 8;
inline constexpr size_t kMaxChunkBlocks = 1024;
// The object size chunk_blocks = 0 aims at. A local redis-server hands one
// client 2.0-2.3 GB/s in values of 128-512 KiB, 1.4 at 1 MiB and 0.9-1.1 at
// 2-8 MiB (PipelinedGetProbe, this machine); the disk's O_DIRECT reads gain
// little past 512 KiB. So blocks are grouped up to 512 KiB: one block per
// object at the 1b shape (512 KiB blocks), 2 at 110m, 51 for stories260K.
inline constexpr size_t kTargetObjectBytes = size_t{512} << 10;

// The chunk size chunk_blocks = 0 picks for `layout`: the most blocks whose
// bytes stay within kTargetObjectBytes, at least 1.
size_t AutoChunkBlocks(const BlockLayout& layout);

struct KvManagerOptions {
  BlockLayout layout;
  // Size of the block arena; the pool holds capacity_bytes / block_bytes
  // blocks (at least one is required).
  size_t capacity_bytes = size_t{256} << 20;
  // Touch every page at start (page faults during a step cost more than the
  // copy they serve); off in unit tests that create many small pools.
  bool prefault = true;
  // The tiers below DRAM, searched in this order (at most kMaxTiers).
  std::vector<TierOptions> tiers;
  // How blocks are encoded in tier objects (store/kv_codec.h); part of the
  // namespace: pass it to RootHash. InvalidArgument at Create when it cannot
  // code the layout's KV types.
  store::Codec tier_codec = store::Codec::kRaw;
  // Blocks per tier object (see "Objects" above), at most kMaxChunkBlocks;
  // 0: AutoChunkBlocks(layout); 1 writes one object per block at commit.
  // Servers sharing a tier should agree on it (objects of another chunk
  // size are found only where their keys coincide).
  size_t chunk_blocks = 0;
  // A layered load (BeginLayeredLoad) reads each block's layers in ranges
  // of about this many bytes, at least one layer each: one read of every
  // object per group of layers, announced to the forward pass as it lands.
  size_t layered_range_bytes = size_t{64} << 10;
};

// One sequence's view of the cache. Owned by the caller (one per running
// request); changed only by KvManager.
struct SequenceKv {
  Hash128 root;                 // h_0 of the sequence's namespace
  std::vector<BlockId> blocks;  // blocks[i] holds positions [i*B, (i+1)*B)
  std::vector<Hash128> chain;   // chain[i] = h_{i+1}: named full blocks
  // Per entry of `chain`: whether blocks[i] is the block the index maps that
  // hash to (false for a private duplicate or a copy-on-write copy).
  std::vector<bool> indexed;
  // Rewritten by token eviction (Rewrite): its blocks hold per (layer, kv
  // head) the rows it kept (engine/kv_compaction.h), not positions; they are
  // private unless they hold a published compacted prefix (PublishRows,
  // AdmitRows: then `chain` names them by their rows chain); Commit names
  // nothing and Reserve counts rows.
  bool compacted = false;
};

struct KvStats {
  size_t capacity_blocks = 0;
  size_t used_blocks = 0;    // referenced by at least one sequence
  size_t cached_blocks = 0;  // indexed, unreferenced (evictable over time)
  size_t free_blocks = 0;
  size_t block_tokens = 0;
  size_t block_bytes = 0;
  kernels::KvFormat kv_format;  // the types K and V are stored in
  double bytes_per_token = 0;   // K/V bytes per cached token, scales included
  store::Codec tier_codec = store::Codec::kRaw;  // of the tiers' objects
  size_t tier_chunk_blocks = 1;                  // blocks per chunk object
  size_t capacity_tokens() const { return capacity_blocks * block_tokens; }
  uint64_t queried_tokens = 0;  // prompt tokens passed to Admit
  uint64_t hit_tokens = 0;      // of which mapped from the cache
  uint64_t evictions = 0;       // blocks evicted on allocation pressure
  uint64_t cow_copies = 0;
  uint64_t allocations = 0;  // blocks taken for a sequence (computed, copied,
                             // loaded from a tier): each time, not each block
  uint64_t rewrites = 0;     // sequences compacted by token eviction
  // Blocks those sequences held before, and after, their rewrite.
  uint64_t rewrite_blocks_before = 0, rewrite_blocks_after = 0;
  uint64_t rows_published = 0;  // compacted prefixes named (PublishRows)
  uint64_t rows_hits = 0;       // compacted prefixes mapped (AdmitRows)
  // Prefetches that found their next blocks being loaded by another
  // Prefetch and waited to map what it loaded instead of reading them again
  // (counted when the wait begins).
  uint64_t shared_loads = 0;
  // Layered loads begun (BeginLayeredLoad), and those finished with a
  // block that did not arrive or verify (its sequence recomputes).
  uint64_t layered_loads = 0;
  uint64_t layered_load_failures = 0;
};

// How the cached prefix of a prompt splits over DRAM and the tiers (tokens,
// whole blocks each; the parts follow each other along the prompt).
struct PrefixHit {
  int dram_tokens = 0;
  std::vector<int> tier_tokens;  // per tier, in KvManagerOptions::tiers order
  int total() const;
};

// One tier's counters as the KvManager sees it, beside the tier's own.
struct TierCounters {
  std::string name;
  TierWritePolicy write = TierWritePolicy::kOnCommit;
  uint64_t loaded_blocks = 0;  // blocks brought into DRAM from the tier
  uint64_t load_failures = 0;  // announced by Exists, then missing or bad
  uint64_t queued_blocks = 0;  // blocks handed to the tier's Put and accepted
  store::TierStats store;
};

// A hot cached prefix (KvManager::HottestPrefixes): a chain of indexed
// blocks that Admits mapped whole, and no longer chain as often.
struct HotPrefix {
  size_t tokens = 0;  // whole blocks
  uint64_t hits = 0;  // Admits that mapped all of it
  // The first tokens of its first block (at most 16); empty for a chain
  // of compacted rows, whose blocks hold no positions.
  std::vector<int32_t> first_tokens;
  uint8_t in_tiers = 0;  // bit t: its last block is in (or queued for) tier t
  bool in_use = false;   // its last block is held by a sequence now
};

// A layered load (KvManager::BeginLayeredLoad): a prompt's cached prefix
// being read from the tiers layer by layer into blocks its sequence already
// holds, so that the prompt's own suffix is computed meanwhile. Shared by
// the loader thread that reads it and the forward pass that waits for it.
class LayeredLoad {
 public:
  ~LayeredLoad();
  LayeredLoad(const LayeredLoad&) = delete;
  LayeredLoad& operator=(const LayeredLoad&) = delete;

  // Positions the sequence holds from its start: its DRAM prefix and the
  // blocks being loaded (whole blocks before the prompt's last token).
  int tokens() const;
  // The split found: dram_tokens mapped, tier_tokens being loaded.
  const PrefixHit& planned() const;
  // Returns once layer `layer` of every block being loaded has been read,
  // or given up (FinishLayeredLoad then says which blocks verified).
  // Thread-safe.
  void AwaitLayer(int layer) const;
  // Whether RunLayeredLoad has ended (every layer read and every object
  // judged): AwaitLayer returns at once. Thread-safe.
  bool loaded() const;

 private:
  friend class KvManager;
  struct Impl;
  explicit LayeredLoad(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class KvManager {
 public:
  // InvalidArgument for a bad layout (BlockLayout::Check: zero sizes, a KV
  // type that cannot store the heads) or a capacity below one block;
  // ResourceExhausted when the arena cannot be mapped.
  static Result<std::unique_ptr<KvManager>> Create(
      const KvManagerOptions& options);
  ~KvManager();

  const BlockLayout& layout() const;
  store::Codec tier_codec() const;
  size_t chunk_blocks() const;  // resolved: >= 1
  // Start of a block's bytes ([layer][K|V][kv_head][token][head_dim]).
  uint8_t* BlockData(BlockId id) const;

  // Starts `seq` (which must hold no blocks) for `tokens` (non-empty):
  // computes the hash chain of its full blocks under seq->root, maps the
  // longest indexed prefix (refcount +1 each, refreshing the path), and
  // returns the number of positions whose K/V are now present: at most
  // tokens.size() - 1. When that cap falls inside the last mapped block, the
  // block is copied into a private one first (or, if no block can be had,
  // dropped so its tokens are recomputed). Counts queried and hit tokens.
  int Admit(std::span<const int32_t> tokens, SequenceKv* seq);

  // Parallel sampling (n > 1 choices of one prompt): gives `child`, which
  // must hold no blocks, the K/V of `parent`'s positions [0, n). The full
  // blocks are shared (one more reference each, named as the parent names
  // them: every full block must be committed); the block holding position
  // n - 1, when not full, is the first block the two can diverge in, and the
  // child gets its own copy of it (copy-on-write, counted in cow_copies).
  // ResourceExhausted, child unchanged, when that copy cannot be had.
  // REQUIRES: parent is not compacted; 0 < n <= the positions it holds.
  Status Fork(const SequenceKv& parent, int n, SequenceKv* child);

  // Ensures seq->blocks covers positions (rows, when compacted) [0,
  // n_tokens), allocating fresh
  // blocks and evicting LRU cached leaves when the free list is short. All or
  // nothing: ResourceExhausted (seq unchanged) when the blocks cannot be had.
  Status Reserve(int n_tokens, SequenceKv* seq);

  // `tokens` are the sequence's tokens whose K/V are stored (positions
  // [0, tokens.size())). Names every newly full block and enters it into the
  // index, unless its hash is already indexed or its parent's is not (the
  // parent can be gone only where the sequence holds a private duplicate of
  // it); such a block stays private to the sequence and is freed on Release.
  void Commit(std::span<const int32_t> tokens, SequenceKv* seq);

  // Token eviction: the sequence's blocks [0, held) hold what is compacted;
  // `n_blocks` private blocks receive it: first the sequence's blocks past
  // `held` (room Reserve gave it beforehand), then fresh ones. Calls
  // fill(from = blocks [0, held), to = those blocks) without the lock, then
  // drops the sequence's references to [0, held) as Release does (indexed
  // ones stay cached, the tail is written behind to the tiers); the
  // sequence keeps the receiving blocks and any spare ones after them, and
  // is marked compacted. ResourceExhausted when the fresh blocks cannot be
  // had, or fill's error; the sequence is unchanged then.
  using RewriteFill = std::function<Status(std::span<const BlockId> from,
                                           std::span<const BlockId> to)>;
  Status Rewrite(size_t held, size_t n_blocks, const RewriteFill& fill,
                 SequenceKv* seq);

  // Compacted prefixes that later requests reuse. The rows a token eviction
  // policy kept of a prefix (engine/kv_compaction.h) are named by a rows
  // chain (block_hash.h: RowsChain under the policy's RowsRoot) and live in
  // the index and the tiers like any block: evicted leaf-first, written
  // behind as objects of the rows root, loaded by PrefetchRows. Only a
  // request that names the same policy, parameters and prefix can map them.
  // `copy_last`: the last block is not full (its rows end inside it), so a
  // sequence that goes on writing rows there gets a private copy of it.
  //
  // PublishRows: `seq` is compacted and its blocks [0, chain.size()) hold
  // the prefix's rows, unnamed; names and indexes them (a block another
  // sequence published meanwhile stays private), queues them to the
  // kOnCommit tiers, and gives the sequence its copy of the last block.
  // Returns whether they were published: not when that copy cannot be had.
  bool PublishRows(const Hash128& rows_root, std::span<const Hash128> chain,
                   bool copy_last, SequenceKv* seq);
  // Maps every block of `chain` into `seq` (which must hold no blocks; it
  // is marked compacted), refreshing them, queues them to the kOnSecondUse
  // tiers and makes the copy of the last block. Returns false, leaving seq
  // empty, when a block of the chain is not in DRAM or the copy cannot be
  // had.
  bool AdmitRows(const Hash128& rows_root, std::span<const Hash128> chain,
                 bool copy_last, SequenceKv* seq);
  // Whether every block of `chain` is in DRAM. No side effects.
  bool HoldsRows(std::span<const Hash128> chain) const;
  // Prefetch for a rows chain: loads what the tiers hold past the blocks in
  // DRAM (counts in rows: block_tokens per block).
  PrefixHit PrefetchRows(const Hash128& rows_root,
                         std::span<const Hash128> chain);

  // Drops the sequence's references (seq is left empty, root kept). Indexed
  // blocks nobody references become cached; the others return to the free
  // list.
  void Release(SequenceKv* seq);

  // Tokens of the longest indexed prefix of `tokens` under `root` (a multiple
  // of the block size). No side effects.
  int Lookup(std::span<const int32_t> tokens, const Hash128& root) const;

  // The split of the longest cached prefix of `tokens` (full blocks only)
  // over DRAM and the tiers, asking each tier's Exists along the chain past
  // the part above it. Nothing is loaded or refreshed.
  PrefixHit Probe(std::span<const int32_t> tokens, const Hash128& root) const;

  // Loads into DRAM the blocks of `tokens`' prefix (full blocks only) that
  // DRAM lacks and the tiers hold, as described above, and returns the split
  // it found: dram_tokens as mapped before loading, tier_tokens as loaded.
  // The loaded blocks are indexed and unreferenced (cached): an Admit of the
  // same prompt maps them, unless pool pressure evicted them in between.
  // Stops early, without error, when blocks run out or an object is missing
  // or bad (counted). Concurrent Prefetches of one prefix read it once: the
  // blocks past a Prefetch's DRAM prefix are claimed until its load is
  // indexed, and a Prefetch whose next block is claimed waits for that load
  // and maps what it brought (counted as DRAM tokens, in shared_loads), then
  // loads the rest itself. Callers pass the whole prompt: a prompt that ends on
  // a block boundary gets its last block too (Admit maps it and copies it on
  // write, so one token is computed; the chunk holding it is found by its
  // key, which a prompt cut before its last token could not name).
  PrefixHit Prefetch(std::span<const int32_t> tokens, const Hash128& root);

  // Layered loads (LMCache's layer-wise mode): the suffix of a prompt is
  // computed while its cached prefix is still being read from the tiers,
  // layer by layer, instead of after the whole load.
  //   BeginLayeredLoad  maps `tokens`' DRAM prefix into `seq` (which must
  //       hold no blocks) as Admit does and gives it private blocks for the
  //       whole blocks before the last token that the tiers hold past it,
  //       claimed as a Prefetch claims them. nullptr, seq left empty, when
  //       the load cannot be layered: another Prefetch is loading the next
  //       block, the tier codec is not raw, a tier on the way cannot read
  //       ranges (Tier::reads_ranges), a chunk object starts inside the
  //       DRAM prefix or past the blocks that could be had, or the tiers
  //       hold nothing past DRAM. Call Prefetch then.
  //   RunLayeredLoad    (a loader thread) reads the objects' ranges group of
  //       layers by group into those blocks, announcing each group
  //       (AwaitLayer), then verifies every object whole (Tier::
  //       VerifyGathered: the tier's MAC, the header's identity) and
  //       promotes the verified ones to the tiers above, as Prefetch does.
  //   FinishLayeredLoad (the owner of `seq`, after computing over it and
  //       before using its logits, committing or releasing it) waits for
  //       RunLayeredLoad, names and indexes the blocks that verified as the
  //       sequence's (a block another sequence indexed meanwhile stays
  //       private), releases the claims, and returns the positions of
  //       `seq` that hold verified K/V: tokens() when all did. Blocks past
  //       that hold bytes that did not verify: whatever was computed over
  //       them must be recomputed (release the sequence and admit it again).
  // A forward pass over the sequence waits for layer l of the load before
  // it reads layer l (LayeredLoad::AwaitLayer, from its KvView's Seal).
  // Counts queried and hit tokens as Admit does (at Finish).
  std::shared_ptr<LayeredLoad> BeginLayeredLoad(std::span<const int32_t> tokens,
                                                SequenceKv* seq);
  void RunLayeredLoad(LayeredLoad& load);
  int FinishLayeredLoad(LayeredLoad& load, SequenceKv* seq);

  size_t tier_count() const;
  std::vector<TierCounters> TierStats() const;
  // Called after each batch of objects a Prefetch read from tier `tier`:
  // its wall time (reading, verifying and decoding it) and block count (for
  // latency histograms). Set once, before any Prefetch; called without the
  // lock, from the thread that loaded the batch.
  using LoadObserver =
      std::function<void(size_t tier, double seconds, size_t blocks)>;
  void SetLoadObserver(LoadObserver observer);

  // Evicts every cached block no sequence references; returns the count.
  size_t Clear();

  KvStats Stats() const;

  // The k hottest cached prefixes, most hits first (ties: most recently
  // used). One pass over the index under the lock; nothing is copied but
  // the k results.
  std::vector<HotPrefix> HottestPrefixes(size_t k) const;

  // Walks the pool and the index and checks the facts above (counts add up,
  // refcounts match the block tables given, every index node's parent is
  // indexed, evictable set = unreferenced leaves). `live` are the sequences
  // currently holding blocks. Internal error naming the first broken fact.
  Status Validate(std::span<const SequenceKv* const> live) const;

 private:
  struct State;
  explicit KvManager(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace kvstash::kvcache
