#include "engine/kv_compaction.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace kvstash {

using kernels::KvSide;

int KvCompaction::MaxRows(int n) const {
  if (end == 0) return n;
  const int most =
      kept.empty() ? 0 : *std::max_element(kept.begin(), kept.end());
  return most + (n - end);
}

double KvCompaction::MeanKept() const {
  double sum = 0;
  for (int32_t k : kept) sum += k;
  return sum / double(kept.size());
}

std::string KvCompactionSupports(const kernels::KvFormat& format) {
  if (kernels::KvHasResidual(format)) {
    return "KV format " + kernels::KvFormatName(format) +
           " keeps per-channel scales over a block's tokens (KIVI), so its "
           "tokens cannot be evicted one by one; use a per-token type "
           "(f32, f16, bf16, q8, q4, q4h)";
  }
  return "";
}

int CompressionPoint(const KvCompressor& compressor, int n_prompt,
                     int context) {
  if (!compressor.prefix_only() || n_prompt < 2) return n_prompt;
  return context >= 1 && context < n_prompt ? context : n_prompt - 1;
}

bool RecompressDue(const KvCompressor& compressor,
                   const KvCompaction& compaction, int n) {
  return compressor.every() > 0 && compaction.compacted() &&
         n - compaction.end >= compressor.every();
}

namespace {

Status CheckSelection(const kernels::BlockLayout& layout, int capacity_rows,
                      int to_rows, int n, const KvSelection& selection,
                      const KvCompaction& compaction) {
  const size_t heads = size_t(layout.n_layers) * size_t(layout.n_kv_heads);
  if (selection.rows.size() != heads) {
    return Status::InvalidArgument(
        "compact: " + std::to_string(selection.rows.size()) +
        " row lists for " + std::to_string(heads) + " (layer, kv head) pairs");
  }
  if (n < compaction.end || compaction.MaxRows(n) > capacity_rows) {
    return Status::InvalidArgument("compact: " + std::to_string(n) +
                                   " positions are not all held");
  }
  for (size_t i = 0; i < heads; ++i) {
    const std::vector<int32_t>& rows = selection.rows[i];
    const int held = compaction.Rows(int(i), n);
    for (size_t j = 0; j < rows.size(); ++j) {
      if (rows[j] < 0 || rows[j] >= held || (j > 0 && rows[j] <= rows[j - 1])) {
        return Status::InvalidArgument(
            "compact: the rows of (layer " +
            std::to_string(i / size_t(layout.n_kv_heads)) + ", kv head " +
            std::to_string(i % size_t(layout.n_kv_heads)) +
            ") are not ascending rows of the " + std::to_string(held) +
            " held");
      }
    }
  }
  size_t most = 0;
  for (const std::vector<int32_t>& rows : selection.rows) {
    most = std::max(most, rows.size());
  }
  if (most > size_t(to_rows)) {
    return Status::InvalidArgument("compact: " + std::to_string(most) +
                                   " rows kept do not fit in " +
                                   std::to_string(to_rows));
  }
  for (const KvSelection::RowUpdate& u : selection.updates) {
    if (u.layer < 0 || u.layer >= layout.n_layers || u.kv_head < 0 ||
        u.kv_head >= layout.n_kv_heads ||
        u.k.size() != size_t(layout.head_dim) ||
        u.v.size() != size_t(layout.head_dim) ||
        !std::binary_search(
            selection.rows[size_t(u.layer * layout.n_kv_heads + u.kv_head)]
                .begin(),
            selection.rows[size_t(u.layer * layout.n_kv_heads + u.kv_head)]
                .end(),
            u.row)) {
      return Status::InvalidArgument(
          "compact: a row update of a row not kept or of the wrong size");
    }
  }
  return Status::OK();
}

}  // namespace

Status CompactRows(const kernels::BlockLayout& layout, uint8_t* arena,
                   std::span<const int32_t> from, std::span<const int32_t> to,
                   int n, const KvSelection& selection,
                   KvCompaction* compaction) {
  const std::string why = KvCompactionSupports(layout.kv);
  if (!why.empty()) return Status::InvalidArgument("compact: " + why);
  const int bt = layout.block_tokens;
  KV_RETURN_IF_ERROR(CheckSelection(layout, int(from.size()) * bt,
                                    int(to.size()) * bt, n, selection,
                                    *compaction));
  const size_t block_bytes = layout.block_bytes();
  const size_t hd = size_t(layout.head_dim);
  const bool in_place = from.data() == to.data();
  auto row_at = [&](std::span<const int32_t> blocks, int layer, KvSide side,
                    int head, int row) {
    return arena + size_t(blocks[size_t(row / bt)]) * block_bytes +
           layout.Offset(layer, side, head, row % bt);
  };
  const int heads = layout.n_kv_heads;
  // The rows of `to` that end up past a pair's kept ones: those of the
  // blocks that held positions [0, n).
  const int cleared_end = std::min(int(to.size()), (n + bt - 1) / bt) * bt;
  for (int layer = 0; layer < layout.n_layers; ++layer) {
    for (int head = 0; head < heads; ++head) {
      const std::vector<int32_t>& rows =
          selection.rows[size_t(layer * heads + head)];
      for (const KvSide side : {KvSide::kK, KvSide::kV}) {
        const size_t row_bytes = layout.row_bytes(side);
        // In place, rows[i] >= i: moving in ascending order never overwrites
        // a row still to be moved.
        for (size_t i = 0; i < rows.size(); ++i) {
          if (in_place && rows[i] == int32_t(i)) continue;
          std::memcpy(row_at(to, layer, side, head, int(i)),
                      row_at(from, layer, side, head, rows[i]), row_bytes);
        }
        for (int r = int(rows.size()); r < cleared_end; ++r) {
          std::memset(row_at(to, layer, side, head, r), 0, row_bytes);
        }
      }
    }
  }
  for (const KvSelection::RowUpdate& u : selection.updates) {
    const std::vector<int32_t>& rows =
        selection.rows[size_t(u.layer * heads + u.kv_head)];
    const int at =
        int(std::lower_bound(rows.begin(), rows.end(), u.row) - rows.begin());
    kernels::KvEncodeRow(layout.kv.k, KvSide::kK, u.k.data(), hd,
                         row_at(to, u.layer, KvSide::kK, u.kv_head, at));
    kernels::KvEncodeRow(layout.kv.v, KvSide::kV, u.v.data(), hd,
                         row_at(to, u.layer, KvSide::kV, u.kv_head, at));
  }
  compaction->end = n;
  compaction->kept.resize(selection.rows.size());
  for (size_t i = 0; i < selection.rows.size(); ++i) {
    compaction->kept[i] = int32_t(selection.rows[i].size());
  }
  return Status::OK();
}

}  // namespace kvstash
