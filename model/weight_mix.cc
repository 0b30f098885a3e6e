#include "model/weight_mix.h"

#include <cctype>

namespace kvstash {
namespace {

using kernels::DType;

constexpr std::string_view kQ4_K_MName = "q4_k_m";

// The layer of a "blk.N.<suffix>" name and its suffix; false for another
// name.
bool SplitLayerName(std::string_view tensor, int* layer,
                    std::string_view* suffix) {
  constexpr std::string_view kPrefix = "blk.";
  if (tensor.substr(0, kPrefix.size()) != kPrefix) return false;
  size_t i = kPrefix.size();
  int n = 0;
  const size_t digits_begin = i;
  while (i < tensor.size() &&
         std::isdigit(static_cast<unsigned char>(tensor[i])) != 0 &&
         i - digits_begin < 9) {
    n = n * 10 + (tensor[i] - '0');
    ++i;
  }
  if (i == digits_begin || i >= tensor.size() || tensor[i] != '.') {
    return false;
  }
  *layer = n;
  *suffix = tensor.substr(i + 1);
  return true;
}

}  // namespace

bool WeightMix::Parse(std::string_view name, WeightMix* out) {
  std::string lower(name);
  for (char& c : lower) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (lower == kQ4_K_MName) {
    *out = Q4_K_M();
    return true;
  }
  DType t;
  if (!kernels::ParseDType(lower, &t)) return false;
  *out = WeightMix(t);
  return true;
}

std::string_view WeightMix::Names() {
  return "f32, f16, bf16, q8_0, q4_0, q4_k, q5_k, q6_k, q4_k_m";
}

std::string_view WeightMix::name() const {
  return kind_ == Kind::kQ4_K_M ? kQ4_K_MName : kernels::DTypeName(type_);
}

bool UseMoreBits(int layer, int n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 ||
         (layer - n_layers / 8) % 3 == 2;
}

DType WeightMix::Wanted(std::string_view tensor, int n_layers,
                        bool tied_output) const {
  if (kind_ == Kind::kUniform) return type_;
  // Q4_K_M.
  if (tensor == "output.weight") return DType::kQ6_K;
  if (tensor == "token_embd.weight") {
    return tied_output ? DType::kQ6_K : DType::kQ4_K;
  }
  int layer;
  std::string_view suffix;
  if (SplitLayerName(tensor, &layer, &suffix) &&
      (suffix == "attn_v.weight" || suffix == "ffn_down.weight") &&
      UseMoreBits(layer, n_layers)) {
    return DType::kQ6_K;
  }
  return DType::kQ4_K;
}

WeightMix::Choice WeightMix::TypeOf(std::string_view tensor, int n_layers,
                                    bool tied_output, uint64_t cols) const {
  const DType wanted = Wanted(tensor, n_layers, tied_output);
  return {wanted, FallbackType(wanted, cols)};
}

DType FallbackType(DType wanted, uint64_t cols) {
  if (cols % kernels::DTypeBlockElems(wanted) == 0) return wanted;
  if (kernels::IsKQuant(wanted) &&
      cols % kernels::DTypeBlockElems(DType::kQ8_0) == 0) {
    return DType::kQ8_0;
  }
  return DType::kF16;
}

std::string FallbackNote(const WeightFallback& f) {
  std::string note = f.tensor;
  note += " stored as ";
  note += kernels::DTypeName(f.type);
  note += " (rows are not a whole number of ";
  note += kernels::DTypeName(f.wanted);
  note += " blocks)";
  return note;
}

}  // namespace kvstash
