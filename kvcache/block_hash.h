// The canonical names of KV blocks: a hash chain over the tokens of a prefix.
//
//   h_0 = RootHash(model identity, KV dtype and layout, block size, tier
//                  codec, salt)
//   h_i = XXH3-128(h_{i-1} || little-endian int32 token ids of block i)
//
// h_i names the K/V of the whole prefix up to the end of block i, so two
// processes on two machines compute the same name for the same prefix of the
// same model, and a different model, KV layout, tier codec (a lossy codec
// changes what a loaded block holds) or cache salt (tenant) gives different
// names. No seeds, pointers or host byte order enter a hash.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

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

}  // namespace kvstash::kvcache
