// Helpers of the KvManager tests: a small layout, a stand-in for the forward
// pass that stores a tag per position (a function of the namespace and the
// tokens so far), and prefill/cache runs built on it.
#pragma once

#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "base/check.h"
#include "kvcache/block_hash.h"
#include "kvcache/kv_manager.h"

namespace kvstash::kvcache::testing {

constexpr int kB = 4;  // block_tokens of the test layout

// The test layout in `kv` (f16 by default). Heads of 8 dims for the float
// types; 32 for the quantized ones, so that a row of every type holds the
// 8-byte tags Compute stores.
inline BlockLayout SmallLayout(kernels::KvFormat kv = {}) {
  BlockLayout l;
  l.n_layers = 2;
  l.n_kv_heads = 2;
  l.head_dim = kernels::KvIsFloat(kv.k) && kernels::KvIsFloat(kv.v) ? 8 : 32;
  l.block_tokens = kB;
  l.kv = kv;
  return l;
}

inline std::unique_ptr<KvManager> MakeManager(
    int blocks, std::vector<TierOptions> tiers = {}, kernels::KvFormat kv = {},
    size_t chunk_blocks = 16) {  // 0: auto
  KvManagerOptions o;
  o.layout = SmallLayout(kv);
  o.capacity_bytes = size_t(blocks) * o.layout.block_bytes();
  o.prefault = false;
  o.tiers = std::move(tiers);
  o.chunk_blocks = chunk_blocks;
  Result<std::unique_ptr<KvManager>> m = KvManager::Create(o);
  KV_CHECK(m.ok());
  return std::move(m).value();
}

inline SequenceKv Seq(const Hash128& root) {
  SequenceKv s;
  s.root = root;
  return s;
}

inline Hash128 Root(std::string_view salt, kernels::KvFormat kv = {}) {
  return RootHash(HashBytes("model", 5), SmallLayout(kv), store::Codec::kRaw,
                  salt);
}

inline std::vector<int32_t> Range(int32_t first, int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[size_t(i)] = first + i;
  return t;
}

inline std::vector<int32_t> Concat(std::vector<int32_t> a,
                                   const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// What the forward pass would store for position p: a function of the
// namespace and of tokens [0, p], so a block mapped under the wrong name or
// overwritten by another sequence shows up as a wrong tag.
inline uint64_t Tag(const Hash128& root, std::span<const int32_t> tokens,
                    int p) {
  uint64_t h = 1469598103934665603ull ^ root.lo;
  for (int i = 0; i <= p; ++i) {
    h = (h ^ uint32_t(tokens[size_t(i)])) * 1099511628211ull;
  }
  return h;
}

// Where position p's K or V row of layer 0, head 0 starts.
inline uint8_t* Slot(const KvManager& m, const SequenceKv& seq, int p,
                     kernels::KvSide side = kernels::KvSide::kK) {
  return m.BlockData(seq.blocks[size_t(p / kB)]) +
         m.layout().Offset(0, side, 0, p % kB);
}

// Stands in for the forward pass over positions [from, to).
inline void Compute(const KvManager& m, std::span<const int32_t> tokens,
                    int from, int to, const SequenceKv& seq) {
  for (int p = from; p < to; ++p) {
    const uint64_t tag = Tag(seq.root, tokens, p);
    std::memcpy(Slot(m, seq, p), &tag, sizeof(tag));
  }
}

// Whether positions [0, n) of `seq` hold what Compute stored for `tokens`.
inline bool Computed(const KvManager& m, std::span<const int32_t> tokens, int n,
                     const SequenceKv& seq) {
  for (int p = 0; p < n; ++p) {
    uint64_t tag;
    std::memcpy(&tag, Slot(m, seq, p), sizeof(tag));
    if (tag != Tag(seq.root, tokens, p)) return false;
  }
  return true;
}

// Admits `tokens`, computes the rest of the prompt and commits it; returns
// what Admit found cached.
inline int Prefill(KvManager& m, std::span<const int32_t> tokens,
                   SequenceKv* seq) {
  const int cached = m.Admit(tokens, seq);
  const Status s = m.Reserve(int(tokens.size()), seq);
  KV_CHECK_MSG(s.ok(), s.ToString().c_str());
  Compute(m, tokens, cached, int(tokens.size()), *seq);
  m.Commit(tokens, seq);
  return cached;
}

// Prefill and release: leaves the prompt's full blocks cached.
inline void CacheRun(KvManager& m, std::span<const int32_t> tokens,
                     const Hash128& root) {
  SequenceKv seq = Seq(root);
  Prefill(m, tokens, &seq);
  m.Release(&seq);
}

// Stands in for a compaction's output (rows, engine/kv_compaction.h): byte
// k of the i-th block of a sequence filled with `seed`.
inline uint8_t RowByte(int seed, size_t i, size_t k) {
  return uint8_t(size_t(seed) * 131 + i * 29 + k * 7 + k / 256);
}
inline void FillRows(const KvManager& m, BlockId id, int seed, size_t i) {
  uint8_t* p = m.BlockData(id);
  for (size_t k = 0; k < m.layout().block_bytes(); ++k) {
    p[k] = RowByte(seed, i, k);
  }
}
// Whether block `id` holds what FillRows(seed, i) wrote.
inline bool HasRows(const KvManager& m, BlockId id, int seed, size_t i) {
  const uint8_t* p = m.BlockData(id);
  for (size_t k = 0; k < m.layout().block_bytes(); ++k) {
    if (p[k] != RowByte(seed, i, k)) return false;
  }
  return true;
}

// A compacted sequence as Rewrite leaves it: `n_blocks` private blocks,
// filled by FillRows(seed), none named.
inline SequenceKv CompactedSeq(KvManager& m, const Hash128& root,
                               size_t n_blocks, int seed) {
  SequenceKv seq = Seq(root);
  seq.compacted = true;
  const Status s = m.Reserve(int(n_blocks) * m.layout().block_tokens, &seq);
  KV_CHECK_MSG(s.ok(), s.ToString().c_str());
  for (size_t i = 0; i < n_blocks; ++i) FillRows(m, seq.blocks[i], seed, i);
  return seq;
}

inline Status Valid(const KvManager& m, std::vector<const SequenceKv*> live) {
  return m.Validate(live);
}

}  // namespace kvstash::kvcache::testing
