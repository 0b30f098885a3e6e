#include "engine/paged_kv_view.h"

#include "base/check.h"

namespace kvstash {

PagedKvView::PagedKvView(const kernels::BlockLayout& layout, uint8_t* arena,
                         std::span<const int32_t> blocks)
    : layout_(layout),
      block_bytes_(layout.block_bytes()),
      arena_(arena),
      blocks_(blocks) {
  KV_CHECK(kernels::IsAttentionKvType(layout.kv_type));
  KV_CHECK(layout.block_tokens > 0);
}

int PagedKvView::capacity() const {
  return static_cast<int>(blocks_.size()) * layout_.block_tokens;
}

void PagedKvView::Write(int layer, int pos, const float* k, const float* v) {
  KV_DCHECK(layer >= 0 && layer < layout_.n_layers && pos >= 0 &&
            pos < capacity());
  uint8_t* block = Block(pos / layout_.block_tokens);
  const int token = pos % layout_.block_tokens;
  const size_t hd = layout_.head_dim;
  for (int h = 0; h < layout_.n_kv_heads; ++h) {
    kernels::QuantizeRow(layout_.kv_type, k + h * hd, hd,
                         block + layout_.Offset(layer, 0, h, token));
    kernels::QuantizeRow(layout_.kv_type, v + h * hd, hd,
                         block + layout_.Offset(layer, 1, h, token));
  }
}

void PagedKvView::Read(int layer, int kv_head, int n,
                       std::vector<kernels::KvRun>* runs) const {
  KV_DCHECK(n > 0 && n <= capacity());
  runs->clear();
  const size_t k_offset = layout_.Offset(layer, 0, kv_head, 0);
  const size_t v_offset = layout_.Offset(layer, 1, kv_head, 0);
  const int bt = layout_.block_tokens;
  for (int i = 0, left = n; left > 0; ++i, left -= bt) {
    const uint8_t* block = Block(i);
    runs->push_back({block + k_offset, block + v_offset,
                     size_t(std::min(left, bt))});
  }
}

}  // namespace kvstash
