// `kvstash eval`: runs engine/eval.h's Evaluate for the KV types the flags
// name and prints a table (or one JSON object).
#include <cstdio>
#include <iostream>
#include <sstream>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "apps/flags.h"
#include "apps/tiers.h"
#include "base/file.h"
#include "bench/svg_plot.h"
#include "compress/policy.h"
#include "engine/eval.h"
#include "store/kv_codec.h"
#include "store/object_format.h"

namespace kvstash::apps {
namespace {

// A candidate KV configuration (run.kv_type...) against a baseline one on
// the same model and text (engine/eval.h).
struct EvalCommandOptions {
  ModelOptions model;
  RunOptions run;  // the candidate's KV types
  std::string baseline_kv_type = "f16";
  std::string file;         // teacher-forced text
  std::string gen_prompts;  // one prompt per line; empty: none
  // ctx, windows, gen_tokens, candidate_chunk_blocks and compress_at bound
  // to flags; the rest filled from the flags below.
  EvalOptions eval;
  // Tier codec whose round trip the candidate's blocks pass through
  // (EvalOptions::candidate_blocks); "none": no round trip.
  std::string tier_codec = "none";
  KvPolicyFlags kv_policy;  // the candidate's token eviction
  bool sweep = false;       // every policy at every sweep ratio
  bool json = false;
  std::string plot;  // --sweep: an SVG of ppl_ratio by kept share; empty: none
};

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

void ShowProgress(const std::string& line) {
  std::cerr << "\reval: " << line << "      " << std::flush;
}

int CompressAt(const EvalOptions& eval) {
  return eval.compress_at > 0 ? eval.compress_at : eval.ctx / 2;
}

// The figures a sweep row and a single run share.
Json ResultJson(const EvalCommandOptions& options, const EvalOptions& eval,
                const EvalResult& r) {
  Json j{{"ppl_ratio", r.ppl_ratio},
         {"kl_mean", r.kl_mean},
         {"top1_agreement", r.top1_agreement},
         {"greedy_identical", r.greedy_identical}};
  if (eval.compressor != nullptr) {
    j["kv_policy"] = options.kv_policy.policy;
    j["kv_ratio"] = options.kv_policy.ratio;
    j["kv_merge"] = options.kv_policy.merge;
    j["kv_every"] = options.kv_policy.every;
    j["compress_at"] = CompressAt(eval);
    j["kept_fraction"] = r.kept_fraction;
    j["copy_accuracy_base"] = r.baseline.copy_accuracy;
    j["copy_accuracy"] = r.candidate.copy_accuracy;
    j["copy_tokens"] = r.copy_tokens;
  }
  return j;
}

// --sweep: every policy (or the one --kv-policy names) at every ratio of
// kSweepRatios, one row each.
constexpr double kSweepRatios[] = {0.25, 0.5, 0.75, 0.875};

int RunSweep(const EvalCommandOptions& options, Transformer& transformer,
             ThreadPool* pool, const std::vector<int32_t>& ids,
             EvalOptions eval) {
  if (eval.candidate_blocks) {
    return Fail("--sweep measures KV policies; drop --tier-codec");
  }
  std::vector<std::string> policies;
  if (!options.kv_policy.policy.empty()) {
    policies.push_back(options.kv_policy.policy);
  } else {
    for (const compress::PolicyInfo& p : compress::Policies()) {
      policies.emplace_back(p.name);
    }
  }
  if (!options.json) {
    std::printf(
        "eval sweep: ctx %d, %d windows, compressed at %d, candidate %s\n"
        "%-10s %6s %7s %9s %9s %8s %8s %8s %8s\n",
        options.eval.ctx, options.eval.windows, CompressAt(eval),
        kernels::KvFormatName(eval.candidate).c_str(), "policy", "ratio",
        "kept", "ppl_ratio", "kl_mean", "top1_agr", "copy_b", "copy_c",
        "greedy");
  }
  bench::PlotSpec plot;
  plot.title = "What token eviction costs: ppl ratio against f16 (" +
               kernels::KvFormatName(eval.candidate) + " KV, ctx " +
               std::to_string(options.eval.ctx) + ")";
  plot.x_label = "share of the compressed rows kept";
  plot.y_label = "perplexity ratio";
  for (const std::string& policy : policies) {
    plot.series.push_back({policy, {}});
    for (double ratio : kSweepRatios) {
      EvalCommandOptions row = options;
      row.kv_policy.policy = policy;
      row.kv_policy.ratio = ratio;
      Result<std::unique_ptr<KvCompressor>> compressor =
          MakeKvCompressor(row.kv_policy, transformer.model().config(), pool);
      if (!compressor.ok()) return Fail(compressor.status().message());
      eval.compressor = compressor->get();
      Result<EvalResult> r =
          Evaluate(transformer, ids, eval, [&](const std::string& line) {
            ShowProgress(policy + " " + std::to_string(ratio).substr(0, 5) +
                         ": " + line);
          });
      std::cerr << "\r" << std::string(60, ' ') << "\r";
      if (!r.ok()) return Fail(r.status().message());
      plot.series.back().points.push_back(
          {r->kept_fraction, r->ppl_ratio, r->ppl_ratio, r->ppl_ratio});
      if (options.json) {
        Json j = ResultJson(row, eval, *r);
        j["ctx"] = options.eval.ctx;
        j["windows"] = r->windows;
        j["kv_type"] = kernels::KvFormatName(eval.candidate);
        PrintJson(j);
      } else {
        std::printf("%-10s %6.3f %7.4f %9.4f %9.4f %8.4f %8.4f %8.4f %8.3f\n",
                    policy.c_str(), ratio, r->kept_fraction, r->ppl_ratio,
                    r->kl_mean, r->top1_agreement, r->baseline.copy_accuracy,
                    r->candidate.copy_accuracy, r->greedy_identical);
      }
      std::fflush(stdout);
    }
  }
  if (!options.plot.empty()) {
    if (Status st = bench::WriteSvgPlot(plot, options.plot); !st.ok()) {
      return Fail(st.message());
    }
  }
  return 0;
}

int RunEval(const EvalCommandOptions& options) {
  if (options.eval.ctx < 2) return Fail("--ctx must be >= 2");
  if (options.eval.windows < 0) return Fail("--windows must be >= 0");
  if (options.eval.gen_tokens < 0) return Fail("--gen-tokens must be >= 0");
  std::unique_ptr<ThreadPool> pool;
  EvalOptions eval = options.eval;
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
  if (options.eval.candidate_chunk_blocks < 1) {
    return Fail("--tier-chunk-blocks must be >= 1 for eval");
  }
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
  if (options.eval.compress_at < 0) return Fail("--compress-at must be >= 0");
  if (!options.kv_policy.policy.empty() || options.sweep) {
    const int at = CompressAt(eval);
    if (at < 2 || at > options.eval.ctx - 2) {
      return Fail("--compress-at " + std::to_string(at) +
                  " must be in [2, ctx - 2] = [2, " +
                  std::to_string(options.eval.ctx - 2) + "]");
    }
    const std::string why = KvCompactionSupports(eval.candidate);
    if (!why.empty()) return Fail("--kv-policy: " + why);
  }
  if (!options.plot.empty() && !options.sweep) {
    return Fail("--plot draws a --sweep");
  }
  if (options.sweep) {
    return RunSweep(options, transformer, pool.get(), ids, eval);
  }
  Result<std::unique_ptr<KvCompressor>> compressor =
      MakeKvCompressor(options.kv_policy, (*model)->config(), pool.get());
  if (!compressor.ok()) return Fail(compressor.status().message());
  eval.compressor = compressor->get();
  Result<EvalResult> r = Evaluate(transformer, ids, eval, ShowProgress);
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
    Json j = ResultJson(options, eval, *r);
    j["model"] = options.model.model_path;
    j["file"] = options.file;
    j["ctx"] = options.eval.ctx;
    j["windows"] = r->windows;
    j["tokens"] = r->tokens;
    j["baseline"] = side(r->baseline, eval.baseline);
    j["candidate"] = side(r->candidate, eval.candidate);
    j["ppl_base"] = r->baseline.ppl;
    j["ppl"] = r->candidate.ppl;
    j["kl_p99"] = r->kl_p99;
    j["kl_max"] = r->kl_max;
    j["rms_dp"] = r->rms_dp;
    j["gen_prompts"] = r->gen_prompts;
    j["gen_tokens"] = options.eval.gen_tokens;
    j["first_divergence"] = r->first_divergence;
    j["kv_bytes_per_token_base"] = r->baseline.kv_bytes_per_token;
    j["kv_bytes_per_token"] = r->candidate.kv_bytes_per_token;
    j["kv_bytes_ratio"] = r->kv_bytes_ratio;
    j["tier_codec"] = options.tier_codec;
    j["tier_chunk_blocks"] = options.eval.candidate_chunk_blocks;
    j["stored_bytes_ratio"] = r->stored_bytes_ratio;
    PrintJson(j);
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
      r->windows, options.eval.ctx, static_cast<long long>(r->tokens),
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
  if (eval.compressor != nullptr) {
    std::printf(
        "  kv policy %s%s at ratio %.3f, compressed at %d: kept %.4f of the "
        "rows\n"
        "  copy accuracy   %9.4f   %9.4f   (%lld copy tokens)\n",
        options.kv_policy.policy.c_str(),
        options.kv_policy.merge ? "+merge" : "", options.kv_policy.ratio,
        CompressAt(eval), r->kept_fraction, r->baseline.copy_accuracy,
        r->candidate.copy_accuracy, static_cast<long long>(r->copy_tokens));
  }
  if (r->gen_prompts > 0) {
    std::printf(
        "  greedy: %d prompts x %d tokens, identical %.3f, first "
        "divergence",
        r->gen_prompts, options.eval.gen_tokens, r->greedy_identical);
    for (int d : r->first_divergence) std::printf(" %d", d);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

Command RegisterEval(CLI::App& parent) {
  auto o = std::make_shared<EvalCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "eval",
      "what a lossy KV configuration costs: perplexity ratio, KL divergence, "
      "top-1 agreement and greedy divergence against a baseline, and the "
      "KV bytes per token of both");
  AddModelFlags(cmd, &o->model);
  AddRunFlags(cmd, &o->run);
  cmd->add_option("--baseline-kv-type", o->baseline_kv_type,
                  "KV type of the baseline, K and V");
  cmd->add_option("--file,-f", o->file, "UTF-8 text file")->required();
  cmd->add_option("--ctx", o->eval.ctx, "window length in tokens, BOS first");
  cmd->add_option("--windows", o->eval.windows,
                  "teacher-forced windows, 0 = all that fit");
  cmd->add_option("--gen-prompts", o->gen_prompts,
                  "file of prompts, one per line, for greedy generation "
                  "(none)");
  cmd->add_option("--gen-tokens", o->eval.gen_tokens,
                  "greedy tokens per prompt");
  AddTierCodecFlag(cmd, &o->tier_codec);
  cmd->add_option("--tier-chunk-blocks", o->eval.candidate_chunk_blocks,
                  "blocks per object through --tier-codec: a chunk is "
                  "restored once complete");
  AddKvPolicyFlags(cmd, &o->kv_policy);
  cmd->add_option("--compress-at", o->eval.compress_at,
                  "with --kv-policy: positions of each window computed "
                  "before compressing; only later predictions are scored "
                  "(0: ctx / 2)");
  cmd->add_flag("--sweep", o->sweep,
                "every --kv-policy at ratios 0.25, 0.5, 0.75, 0.875: one "
                "table (with --json: one JSON object per line)");
  cmd->add_option("--plot", o->plot,
                  "with --sweep: also write an SVG chart of ppl_ratio "
                  "against the share kept, one line per policy");
  AddJsonFlag(cmd, &o->json);
  return {cmd, [o] { return RunEval(*o); }};
}

}  // namespace kvstash::apps
