#include "model/weight_mix.h"

#include <cctype>
#include <utility>

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

uint32_t WeightMix::GgufFileType() const {
  if (kind_ == Kind::kQ4_K_M) return 15;
  switch (type_) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kBF16:
      return 32;
    case DType::kQ8_0:
      return 7;
    case DType::kQ4_0:
      return 2;
    case DType::kQ4_K:
      return 14;
    case DType::kQ5_K:
      return 16;
    case DType::kQ6_K:
      return 18;
  }
  return 0;
}

std::string_view GgufFileTypeName(uint32_t file_type) {
  // llama.cpp's llama_ftype values and names (llama_ftype_name), for the
  // types a downloaded file may hold; the IQ and ternary ones are left out.
  static constexpr std::pair<uint32_t, std::string_view> kNames[] = {
      {0, "all F32"},        {1, "F16"},
      {2, "Q4_0"},           {3, "Q4_1"},
      {7, "Q8_0"},           {8, "Q5_0"},
      {9, "Q5_1"},           {10, "Q2_K - Medium"},
      {11, "Q3_K - Small"},  {12, "Q3_K - Medium"},
      {13, "Q3_K - Large"},  {14, "Q4_K - Small"},
      {15, "Q4_K - Medium"}, {16, "Q5_K - Small"},
      {17, "Q5_K - Medium"}, {18, "Q6_K"},
      {21, "Q2_K - Small"},  {32, "BF16"}};
  for (const auto& [value, name] : kNames) {
    if (value == file_type) return name;
  }
  return "";
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
