// The canonical names of KV blocks: a hash chain over the tokens of a prefix.
//
//   h_0 = RootHash(model identity, KV dtype and layout, block size, tier
//                  codec, tier object format version, salt)
//   h_i = XXH3-128(h_{i-1} || little-endian int32 token ids of block i)
//
// h_i names the K/V of the whole prefix up to the end of block i, so two
// processes on two machines compute the same name for the same prefix of the
// same model, and a different model, KV layout, tier codec (a lossy codec
// changes what a loaded block holds) or cache salt (tenant) gives different
// names. The tier object format version (store/object_format.h) is part of
// it too: builds that write different object formats can share a disk or
// Redis tier (a rolling upgrade) without reading, or deleting as damaged,
// each other's objects. No seeds, pointers or host byte order enter a hash.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/hash.h"
#include "kernels/block_layout.h"
#include "store/kv_codec.h"

namespace kvstash::kvcache {

using kernels::BlockLayout;

// h_0 of a namespace. `model_identity` is the hash of the model's weights
// (Model::identity()); `codec` the tier codec (KvManager::tier_codec());
// `salt` isolates tenants ("" = shared namespace).
Hash128 RootHash(const Hash128& model_identity, const BlockLayout& layout,
                 store::Codec codec, std::string_view salt);

// h_i from h_{i-1} and the token ids of block i.
Hash128 BlockHash(const Hash128& parent, std::span<const int32_t> tokens);

// The rows a token eviction policy kept of a prefix (engine/kv_compaction.h)
// are named apart from its positions, so that a compacted prefix is mapped
// only by a request asking for the same compression:
//   RowsRoot(h_0, transform) = XXH3-128(domain tag || h_0 || transform),
//     `transform` the canonical text of the policy and its parameters
//     (compress::PolicyNamespace);
//   r_0 = XXH3-128(XXH3-128(rows root || tokens of the prefix) || int32 0),
//   r_j = XXH3-128(r_{j-1} || int32 j) for the j-th block of its rows.
Hash128 RowsRoot(const Hash128& root, std::string_view transform);
// r_0 .. r_{n_blocks - 1} of the rows of the prefix `tokens`.
std::vector<Hash128> RowsChain(const Hash128& rows_root,
                               std::span<const int32_t> tokens,
                               size_t n_blocks);

}  // namespace kvstash::kvcache
