#include "kvcache/block_hash.h"

#include <bit>

#include "store/object_format.h"

namespace kvstash::kvcache {

namespace {
// Versions the encoding below: change it whenever the encoding changes, so
// that names from an older encoding can never be mistaken for current ones.
constexpr std::string_view kDomainTag = "kvstash-kv-v3";
constexpr std::string_view kRowsDomainTag = "kvstash-rows-v1";
}  // namespace

Hash128 RootHash(const Hash128& model_identity, const BlockLayout& layout,
                 store::Codec codec, std::string_view salt) {
  Hasher128 h;
  h.Add(kDomainTag).Add(model_identity);
  h.AddU32(uint32_t(layout.n_layers))
      .AddU32(uint32_t(layout.n_kv_heads))
      .AddU32(uint32_t(layout.head_dim))
      .AddU32(uint32_t(layout.block_tokens))
      .AddU32(uint32_t(layout.kv.k))
      .AddU32(uint32_t(layout.kv.v));
  // Every parameter that changes a quantized block's bytes: the scale group,
  // the packing stripe and the rotation (the domain tag versions the
  // formulas of kernels/kv_format.h themselves).
  for (const kernels::KvSide side :
       {kernels::KvSide::kK, kernels::KvSide::kV}) {
    const kernels::KvType t = layout.kv.type(side);
    h.AddU32(uint32_t(kernels::KvGroupSize(size_t(layout.head_dim))))
        .AddU32(kernels::KvIsFloat(t)
                    ? 0u
                    : uint32_t(kernels::KvPackStripe(kernels::KvBits(t),
                                                     size_t(layout.head_dim))))
        .AddU32(uint32_t(kernels::KvRotated(t)));
  }
  h.AddU32(uint32_t(codec)).AddU32(store::kObjectFormatVersion);
  h.AddU64(salt.size()).Add(salt);
  return h.Finish();
}

Hash128 BlockHash(const Hash128& parent, std::span<const int32_t> tokens) {
  Hasher128 h;
  h.Add(parent);
  if constexpr (std::endian::native == std::endian::little) {
    h.Add(tokens.data(), tokens.size_bytes());
  } else {
    for (const int32_t t : tokens) h.AddU32(uint32_t(t));
  }
  return h.Finish();
}

Hash128 RowsRoot(const Hash128& root, std::string_view transform) {
  Hasher128 h;
  h.Add(kRowsDomainTag).Add(root);
  h.AddU64(transform.size()).Add(transform);
  return h.Finish();
}

std::vector<Hash128> RowsChain(const Hash128& rows_root,
                               std::span<const int32_t> tokens,
                               size_t n_blocks) {
  std::vector<Hash128> chain(n_blocks);
  Hash128 prev = BlockHash(rows_root, tokens);
  for (size_t j = 0; j < n_blocks; ++j) {
    const int32_t index = int32_t(j);
    prev = chain[j] = BlockHash(prev, std::span(&index, 1));
  }
  return chain;
}

}  // namespace kvstash::kvcache
