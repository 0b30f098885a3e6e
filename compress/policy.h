// Token eviction policies: which tokens of a sequence's KV cache each
// (layer, kv head) keeps under a budget, applied to a cache that frees the
// rows it drops (engine/kv_compaction.h).
//
// A policy scores the rows of every (layer, kv head) from what the forward
// pass already has (the stored keys and values, the queries of the last
// positions, kept by a QueryWindow attached as the pass's QueryObserver),
// sets a budget per (layer, head) for the eviction ratio r (the fraction of
// rows dropped: round((1 - r) rows) kept on average), protects the rows it
// promises (attention sinks, a recent window), keeps the best-scored others,
// optionally folds the evicted rows into kept ones (merge), and compacts the
// cache. Each scorer, allocator and the merge step is one small file
// (compress/policies.h names the papers); defaults are the papers', scaled
// to the context: the observation window is n / 16 queries (1 to 64), sinks
// are 4 rows.
//
// Applied once after a prefill (SnapKV-style), and with `every` again every
// N positions back to that first compaction's budget (Recompress).
// Query-agnostic policies (their choice depends only on the document:
// streaming, knorm, expected, lacache) give the same cache for the same text
// whatever follows it, which is what makes a compressed prefix shareable.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/kv_compaction.h"
#include "model/model_config.h"

namespace kvstash::compress {

struct PolicyOptions {
  std::string policy;  // a PolicyInfo name
  double ratio = 0;    // fraction of rows evicted, in [0, 1)
  bool merge = false;  // fold evicted rows into the most similar kept row
  // > 0: after the first compression, every `every` positions computed the
  // cache is compressed again, back to the rows the first one kept per
  // (layer, kv head): a fixed budget while decoding, as H2O, TOVA and
  // StreamingLLM keep. 0: once.
  int every = 0;
};

struct PolicyInfo {
  std::string_view name;
  std::string_view summary;  // one line, for help texts and the README
  bool query_agnostic;
  bool needs_attention;  // scores from attention of held queries
};

// Every policy, in a fixed order.
std::span<const PolicyInfo> Policies();
// The names, comma separated.
std::string PolicyNames();
// The policy called `name`, or null.
const PolicyInfo* FindPolicy(std::string_view name);

// OK, or InvalidArgument naming the field: an unknown policy, a ratio
// outside [0, 1), a negative `every`.
Status CheckPolicyOptions(const PolicyOptions& options);

// The canonical text of `options` that names the rows a prefix_only policy
// keeps of a document (kvcache::RowsRoot): "policy=NAME;ratio=R;merge=0|1",
// R the shortest decimal that reads back as the same double. Change the
// rows' domain tag (kvcache/block_hash.cc) when a policy's choice changes.
std::string PolicyNamespace(const PolicyOptions& options);

// A compressor for sequences of `config`'s model, scoring the (layer, kv
// head) pairs in parallel on `pool` (may be null; must outlive it).
// InvalidArgument as CheckPolicyOptions. Its Compress refuses
// (InvalidArgument) a cache whose KV format cannot evict tokens
// (KvCompactionSupports).
Result<std::unique_ptr<KvCompressor>> MakeCompressor(
    const ModelConfig& config, const PolicyOptions& options,
    ThreadPool* pool = nullptr);

}  // namespace kvstash::compress
