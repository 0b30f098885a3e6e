// WeightMix: the type each weight matrix gets when kvstash writes a model
// (`kvstash convert`, `kvstash gen-model`): either one type for every matrix
// ("q8_0", "q4_k", ...), or llama.cpp's Q4_K_M mixture ("q4_k_m"), chosen per
// tensor by the rule of llama-quantize (src/llama-quant.cpp) for dense
// models:
//   output.weight                        Q6_K
//   token_embd.weight                    Q6_K when the output is tied to it
//                                        (no output.weight), else Q4_K
//   blk.N.attn_v.weight, ffn_down.weight Q6_K on the "more bits" layers
//                                        (UseMoreBits), else Q4_K
//   every other matrix                   Q4_K
// Norm weights and biases are not matrices: they stay f32 whatever the mix.
//
// A matrix whose rows (ne0, its column count) are not a whole number of the
// chosen type's blocks falls back, per tensor, to FallbackType. llama-quantize
// falls back from Q4_K / Q5_K / Q6_K to Q5_0 / Q5_1 / Q8_0; kvstash has no
// Q5_0 / Q5_1, so all three fall back to Q8_0 (never fewer bits than asked),
// and anything still not whole blocks (rows not a multiple of 32) to F16, as
// llama-quantize does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kernels/dtype.h"

namespace kvstash {

class WeightMix {
 public:
  enum class Kind { kUniform, kQ4_K_M };

  // Every matrix `type`. Implicit, so that a DType is a WeightMix.
  WeightMix(kernels::DType type = kernels::DType::kF16)  // NOLINT
      : kind_(Kind::kUniform), type_(type) {}
  static WeightMix Q4_K_M() { return WeightMix(Kind::kQ4_K_M); }

  // A DTypeName ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k",
  // "q6_k") or "q4_k_m", in either case; false for another name.
  static bool Parse(std::string_view name, WeightMix* out);
  // The names Parse accepts, comma-separated, for messages and --help.
  static std::string_view Names();

  Kind kind() const { return kind_; }
  // The name Parse reads back.
  std::string_view name() const;
  // The GGUF `general.file_type` of a file written with this mix: llama.cpp's
  // llama_ftype, which tools show as the file's type ("Q4_K - Medium"): 0
  // f32, 1 f16, 32 bf16, 7 q8_0, 2 q4_0, 14 q4_k (Q4_K_S, the small K-quant
  // file type), 16 q5_k (Q5_K_S), 18 q6_k, 15 q4_k_m.
  uint32_t GgufFileType() const;

  // The type the mix asks for matrix `tensor` (a llama.cpp tensor name:
  // token_embd.weight, output.weight, blk.N.attn_q.weight ...) of a model of
  // `n_layers` layers, tied when it has no output.weight; before fallback.
  kernels::DType Wanted(std::string_view tensor, int n_layers,
                        bool tied_output) const;

  // What is written for that matrix when its rows hold `cols` elements.
  struct Choice {
    kernels::DType wanted;  // Wanted(...)
    kernels::DType type;    // FallbackType(wanted, cols)
    bool fallback() const { return type != wanted; }
  };
  Choice TypeOf(std::string_view tensor, int n_layers, bool tied_output,
                uint64_t cols) const;

  bool operator==(const WeightMix&) const = default;

 private:
  explicit WeightMix(Kind kind) : kind_(kind), type_(kernels::DType::kQ4_K) {}

  Kind kind_;
  kernels::DType type_;  // kUniform only
};

// llama.cpp's name of a `general.file_type` value ("F16", "Q4_K - Medium",
// ...), or "" for a value it does not name.
std::string_view GgufFileTypeName(uint32_t file_type);

// llama-quantize's use_more_bits: layers 0 .. n/8 - 1, the last n - 7n/8
// layers, and every third layer in between get more bits in Q4_K_M.
bool UseMoreBits(int layer, int n_layers);

// `wanted` when `cols` is a whole number of its blocks; else Q8_0 for the
// K-quants when cols is a multiple of 32; else F16.
kernels::DType FallbackType(kernels::DType wanted, uint64_t cols);

// A matrix written in another type than its mix asked for.
struct WeightFallback {
  std::string tensor;
  kernels::DType wanted;
  kernels::DType type;
};

// "<tensor> stored as <type> (rows are not a whole number of <wanted>
// blocks)", the note `kvstash convert` and `gen-model` print for each.
std::string FallbackNote(const WeightFallback& f);

}  // namespace kvstash
