// `kvstash eval`: runs engine/eval.h's Evaluate for the KV types the flags
// name and prints a table (or one JSON object).
#include <cstdio>
#include <iostream>
#include <sstream>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "apps/tiers.h"
#include "base/file.h"
#include "engine/eval.h"
#include "store/kv_codec.h"
#include "store/object_format.h"

namespace kvstash::apps {
namespace {

// The non-empty lines of `text`, each without its line ending.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// The round trip of a block through `codec` (encode, decode in place); the
// bytes stored are the object's: its header and the encoded payload.
BlockTransform CodecRoundTrip(store::Codec codec,
                              const kernels::BlockLayout& layout) {
  return [codec, layout](std::span<uint8_t* const> blocks) -> Result<size_t> {
    KV_ASSIGN_OR_RETURN(const size_t payload,
                        store::RoundTrip(codec, layout, blocks));
    return store::kObjectHeaderBytes + payload;
  };
}

}  // namespace

int RunEval(const EvalCommandOptions& options) {
  if (options.ctx < 2) return Fail("--ctx must be >= 2");
  if (options.windows < 0) return Fail("--windows must be >= 0");
  if (options.gen_tokens < 0) return Fail("--gen-tokens must be >= 0");
  std::unique_ptr<ThreadPool> pool;
  EvalOptions eval;
  if (Status s = ParseRunOptions(options.run, &pool, &eval.candidate);
      !s.ok()) {
    return Fail(s.message());
  }
  kernels::KvType baseline;
  if (!kernels::ParseKvType(options.baseline_kv_type, &baseline)) {
    return Fail("--baseline-kv-type '" + options.baseline_kv_type +
                "' is not one of " + kernels::KvTypeNames());
  }
  eval.baseline = {baseline, baseline};
  eval.ctx = options.ctx;
  eval.windows = options.windows;
  eval.gen_tokens = options.gen_tokens;
  Result<store::Codec> codec = ParseTierCodec(options.tier_codec);
  if (!codec.ok()) return Fail(codec.status().message());
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  const Tokenizer& tok = (*model)->tokenizer();
  if (*codec != store::Codec::kRaw) {
    const ModelConfig& c = (*model)->config();
    const kernels::BlockLayout layout{c.n_layers, c.n_kv_heads, c.head_dim, 16,
                                      eval.candidate};
    const std::string why = store::CodecSupports(*codec, layout);
    if (!why.empty()) return Fail("--tier-codec: " + why);
    eval.candidate_blocks = CodecRoundTrip(*codec, layout);
  }
  if (options.tier_chunk_blocks < 1) {
    return Fail("--tier-chunk-blocks must be >= 1 for eval");
  }
  eval.candidate_chunk_blocks = options.tier_chunk_blocks;
  Result<std::string> text = ReadFile(options.file);
  if (!text.ok()) return Fail(text.status().message());
  const std::vector<int32_t> ids = tok.Encode(*text, false);
  if (!options.gen_prompts.empty()) {
    Result<std::string> prompts = ReadFile(options.gen_prompts);
    if (!prompts.ok()) return Fail(prompts.status().message());
    for (const std::string& line : Lines(*prompts)) {
      eval.gen_prompts.push_back(tok.Encode(line, true));
    }
    if (eval.gen_prompts.empty()) {
      return Fail("--gen-prompts " + options.gen_prompts + " has no prompt");
    }
  }
  Transformer transformer(**model, pool.get());
  Result<EvalResult> r =
      Evaluate(transformer, ids, eval, [](const std::string& line) {
        std::cerr << "\reval: " << line << "      " << std::flush;
      });
  std::cerr << "\n";
  if (!r.ok()) return Fail(r.status().message());
  const std::string base_name = kernels::KvFormatName(eval.baseline);
  const std::string cand_name = kernels::KvFormatName(eval.candidate);
  if (options.json) {
    auto side = [](const EvalSide& s, const kernels::KvFormat& f) {
      return Json{{"kv_type_k", kernels::KvTypeName(f.k)},
                  {"kv_type_v", kernels::KvTypeName(f.v)},
                  {"ppl", s.ppl},
                  {"nll", s.nll},
                  {"top1", s.top1},
                  {"kv_bytes_per_token", s.kv_bytes_per_token},
                  {"stored_bytes_per_token", s.stored_bytes_per_token}};
    };
    PrintJson({{"model", options.model.model_path},
               {"file", options.file},
               {"ctx", options.ctx},
               {"windows", r->windows},
               {"tokens", r->tokens},
               {"baseline", side(r->baseline, eval.baseline)},
               {"candidate", side(r->candidate, eval.candidate)},
               {"ppl_base", r->baseline.ppl},
               {"ppl", r->candidate.ppl},
               {"ppl_ratio", r->ppl_ratio},
               {"kl_mean", r->kl_mean},
               {"kl_p99", r->kl_p99},
               {"kl_max", r->kl_max},
               {"top1_agreement", r->top1_agreement},
               {"rms_dp", r->rms_dp},
               {"gen_prompts", r->gen_prompts},
               {"gen_tokens", options.gen_tokens},
               {"greedy_identical", r->greedy_identical},
               {"first_divergence", r->first_divergence},
               {"kv_bytes_per_token_base", r->baseline.kv_bytes_per_token},
               {"kv_bytes_per_token", r->candidate.kv_bytes_per_token},
               {"kv_bytes_ratio", r->kv_bytes_ratio},
               {"tier_codec", options.tier_codec},
               {"tier_chunk_blocks", options.tier_chunk_blocks},
               {"stored_bytes_ratio", r->stored_bytes_ratio}});
    return 0;
  }
  std::printf(
      "eval: %d windows x %d tokens (%lld scored); candidate %s vs baseline "
      "%s\n"
      "                  baseline   candidate\n"
      "  ppl             %9.4f   %9.4f   ratio %.4f\n"
      "  top1            %9.4f   %9.4f   agreement %.4f\n"
      "  KV bytes/token  %9.1f   %9.1f   ratio %.4f\n"
      "  KL(base||cand)  mean %.3g  p99 %.3g  max %.3g;  rms dp %.4f\n",
      r->windows, options.ctx, static_cast<long long>(r->tokens),
      cand_name.c_str(), base_name.c_str(), r->baseline.ppl, r->candidate.ppl,
      r->ppl_ratio, r->baseline.top1, r->candidate.top1, r->top1_agreement,
      r->baseline.kv_bytes_per_token, r->candidate.kv_bytes_per_token,
      r->kv_bytes_ratio, r->kl_mean, r->kl_p99, r->kl_max, r->rms_dp);
  if (eval.candidate_blocks) {
    std::printf(
        "  tier codec %s: %.1f bytes/token stored (objects), %.4f of "
        "the baseline's KV\n",
        options.tier_codec.c_str(), r->candidate.stored_bytes_per_token,
        r->stored_bytes_ratio);
  }
  if (r->gen_prompts > 0) {
    std::printf(
        "  greedy: %d prompts x %d tokens, identical %.3f, first "
        "divergence",
        r->gen_prompts, options.gen_tokens, r->greedy_identical);
    for (int d : r->first_divergence) std::printf(" %d", d);
    std::printf("\n");
  }
  return 0;
}

}  // namespace kvstash::apps
