#include "engine/paged_kv_view.h"

#include <algorithm>
#include <cstring>

#include "base/check.h"

namespace kvstash {

using kernels::KvSide;

PagedKvView::PagedKvView(const kernels::BlockLayout& layout, uint8_t* arena,
                         std::span<const int32_t> blocks, KvResidual* residual,
                         const KvCompaction* compaction)
    : layout_(layout),
      residual_layout_(layout.residual_layout()),
      block_bytes_(layout.block_bytes()),
      arena_(arena),
      blocks_(blocks),
      residual_(residual),
      compaction_(compaction),
      has_residual_(kernels::KvHasResidual(layout.kv)) {
  KV_CHECK_MSG(layout.Check().empty(), layout.Check().c_str());
  KV_CHECK(!has_residual_ || residual != nullptr);
}

int PagedKvView::capacity() const {
  const int rows = static_cast<int>(blocks_.size()) * layout_.block_tokens;
  if (compaction_ == nullptr || !compaction_->compacted()) return rows;
  return rows + compaction_->end - compaction_->MaxRows(compaction_->end);
}

int PagedKvView::Rows(int layer, int kv_head, int n) const {
  if (compaction_ == nullptr || !compaction_->compacted()) return n;
  return compaction_->Rows(layer * layout_.n_kv_heads + kv_head, n);
}

int PagedKvView::read_window() const {
  return has_residual_ ? layout_.block_tokens : 0;
}

uint8_t* PagedKvView::ResidualBlock(int index) const {
  KV_DCHECK(index >= residual_->first &&
            index < residual_->first + residual_->count);
  return residual_->data.data() +
         size_t(index - residual_->first) * residual_layout_.block_bytes();
}

void PagedKvView::BeginWrite(int begin, int end) {
  KV_DCHECK(begin >= 0 && begin < end && end <= capacity());
  if (!has_residual_) return;
  const int bt = layout_.block_tokens;
  const int first = begin / bt, last = (end - 1) / bt;
  const size_t rb = residual_layout_.block_bytes();
  KvResidual& r = *residual_;
  // Keep the copy of block `first` when it is held (a block still being
  // filled); earlier blocks are sealed and no query of this pass sees them
  // at full precision.
  const bool keep = first >= r.first && first < r.first + r.count;
  if (keep && first != r.first) {
    std::memmove(r.data.data(), r.data.data() + size_t(first - r.first) * rb,
                 rb);
  }
  const int count = last - first + 1;
  if (r.data.size() < size_t(count) * rb) r.data.resize(size_t(count) * rb);
  if (!keep) std::memset(r.data.data(), 0, rb);
  r.first = first;
  r.count = count;
}

void PagedKvView::Write(int layer, int pos, const float* k, const float* v) {
  KV_DCHECK(layer >= 0 && layer < layout_.n_layers && pos >= 0 &&
            pos < capacity());
  const int bt = layout_.block_tokens;
  const size_t hd = layout_.head_dim;
  for (const KvSide side : {KvSide::kK, KvSide::kV}) {
    const kernels::KvType type = layout_.kv.type(side);
    const float* x = side == KvSide::kK ? k : v;
    const bool residual = kernels::KvHasResidual(type);
    const kernels::BlockLayout& l = residual ? residual_layout_ : layout_;
    const kernels::KvType stored = residual ? kernels::KvType::kF16 : type;
    for (int h = 0; h < layout_.n_kv_heads; ++h) {
      // Residual types are never compacted: their row is the position.
      const int row = Rows(layer, h, pos + 1) - 1;
      uint8_t* block = residual ? ResidualBlock(row / bt) : Block(row / bt);
      kernels::KvEncodeRow(stored, side, x + h * hd, hd,
                           block + l.Offset(layer, side, h, row % bt));
    }
  }
}

void PagedKvView::Seal(int layer, int begin, int end) {
  if (gate_) gate_(layer);
  if (!has_residual_) return;
  const int bt = layout_.block_tokens;
  const size_t hd = layout_.head_dim;
  // Blocks whose last position is in [begin, end): from the block holding
  // `begin` on.
  for (int index = begin / bt; (index + 1) * bt <= end; ++index) {
    const uint8_t* copy = ResidualBlock(index);
    uint8_t* block = Block(index);
    for (const KvSide side : {KvSide::kK, KvSide::kV}) {
      const kernels::KvType type = layout_.kv.type(side);
      if (!kernels::KvHasResidual(type)) continue;
      for (int h = 0; h < layout_.n_kv_heads; ++h) {
        kernels::KvSealRun(
            type, side,
            reinterpret_cast<const uint16_t*>(
                copy + residual_layout_.RunOffset(layer, side, h)),
            size_t(bt), hd, size_t(bt),
            block + layout_.RunOffset(layer, side, h));
      }
    }
  }
}

void PagedKvView::Read(int layer, int kv_head, int n,
                       std::vector<kernels::KvRun>* runs) const {
  KV_DCHECK(n > 0 && n <= capacity());
  runs->clear();
  n = Rows(layer, kv_head, n);
  const int bt = layout_.block_tokens;
  const size_t k_offset = layout_.RunOffset(layer, KvSide::kK, kv_head);
  const size_t v_offset = layout_.RunOffset(layer, KvSide::kV, kv_head);
  const int own = (n - 1) / bt;  // the query's block
  for (int i = 0, left = n; left > 0; ++i, left -= bt) {
    const uint8_t* block = Block(i);
    kernels::KvRun run{block + k_offset, block + v_offset,
                       size_t(std::min(left, bt)), layout_.kv.k, layout_.kv.v};
    if (has_residual_ && i == own) {
      const uint8_t* copy = ResidualBlock(i);
      if (kernels::KvHasResidual(run.k_type)) {
        run.k = copy + residual_layout_.RunOffset(layer, KvSide::kK, kv_head);
        run.k_type = kernels::KvType::kF16;
      }
      if (kernels::KvHasResidual(run.v_type)) {
        run.v = copy + residual_layout_.RunOffset(layer, KvSide::kV, kv_head);
        run.v_type = kernels::KvType::kF16;
      }
    }
    runs->push_back(run);
  }
}

}  // namespace kvstash
