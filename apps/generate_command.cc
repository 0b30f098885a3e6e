// `kvstash generate`: stream a continuation of a prompt (engine/generate.h).
#include <iostream>
#include <memory>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "engine/generate.h"
#include "engine/kv_compaction.h"

namespace kvstash::apps {
namespace {

struct GenerateCommandOptions {
  ModelOptions model;
  RunOptions run;  // the pool and gen.kv_format
  std::string prompt;
  GenerateOptions gen;  // n_predict and sampling bound to flags
  bool json = false;
  KvPolicyFlags kv_policy;  // evict prompt tokens after the prefill
};

int RunGenerate(const GenerateCommandOptions& options) {
  if (Status s = options.gen.sampling.Validate(); !s.ok())
    return Fail(s.message());
  if (options.gen.n_predict < 0) return Fail("--n-predict must be >= 0");
  std::unique_ptr<ThreadPool> pool;
  GenerateOptions gen = options.gen;
  if (Status s = ParseRunOptions(options.run, &pool, &gen.kv_format); !s.ok()) {
    return Fail(s.message());
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  const Tokenizer& tok = (*model)->tokenizer();
  const std::vector<int32_t> prompt = tok.Encode(options.prompt, true);
  if (prompt.empty()) return Fail("the prompt encodes to no tokens");
  const int ctx = (*model)->config().context_length;
  if (int(prompt.size()) + gen.n_predict > ctx) {
    std::cerr << "kvstash: warning: " << prompt.size() << " prompt + "
              << gen.n_predict << " new tokens exceed the model's "
              << "training context of " << ctx << "\n";
  }

  Result<std::unique_ptr<KvCompressor>> compressor =
      MakeKvCompressor(options.kv_policy, (*model)->config(), pool.get());
  if (!compressor.ok()) return Fail(compressor.status().message());
  if (*compressor != nullptr) {
    const std::string why = KvCompactionSupports(gen.kv_format);
    if (!why.empty()) return Fail("--kv-policy: " + why);
  }
  gen.compressor = compressor->get();
  Transformer transformer(**model, pool.get());
  int32_t prev = prompt.back();
  TokenCallback stream = [&](int32_t token) {
    std::cout << tok.DecodeToken(prev, token) << std::flush;
    prev = token;
    return true;
  };
  if (!options.json) std::cout << options.prompt << std::flush;
  Result<GenerateResult> r = Generate(transformer, prompt, gen,
                                      options.json ? TokenCallback() : stream);
  if (!r.ok()) return Fail(r.status().message());
  if (!options.json) {
    std::cout << std::endl;
    std::cerr << "prefill: " << r->prompt_ids.size() << " tokens, "
              << r->prefill_tokens_per_s()
              << " tok/s; decode: " << r->gen_ids.size() << " tokens, "
              << r->decode_tokens_per_s() << " tok/s";
    if (gen.compressor != nullptr) {
      std::cerr << "; " << options.kv_policy.policy << " compression "
                << r->compress_seconds << " s (" << 1 + r->recompressions
                << " times), " << r->kv_blocks_held << " KV blocks held";
    }
    std::cerr << "\n";
    return 0;
  }
  PrintJson({{"prompt_ids", r->prompt_ids},
             {"gen_ids", r->gen_ids},
             {"text", tok.Decode(r->gen_ids, prompt.back())},
             {"prefill_tokens_per_s", r->prefill_tokens_per_s()},
             {"decode_tokens_per_s", r->decode_tokens_per_s()},
             {"compress_seconds", r->compress_seconds},
             {"recompressions", r->recompressions},
             {"kv_blocks_held", r->kv_blocks_held}});
  return 0;
}

}  // namespace

Command RegisterGenerate(CLI::App& parent) {
  auto o = std::make_shared<GenerateCommandOptions>();
  SamplerOptions& s = o->gen.sampling;
  CLI::App* cmd = parent.add_subcommand("generate", "generate text");
  AddModelFlags(cmd, &o->model);
  AddRunFlags(cmd, &o->run);
  AddKvPolicyFlags(cmd, &o->kv_policy);
  cmd->add_option("--prompt,-p", o->prompt, "prompt text")->required();
  cmd->add_option("--n-predict,-n", o->gen.n_predict, "tokens to generate");
  cmd->add_option("--temp", s.temperature, "temperature; 0 = greedy");
  cmd->add_option("--top-k", s.top_k, "top-k, 0 = off");
  cmd->add_option("--top-p", s.top_p, "top-p, 1 = off");
  cmd->add_option("--min-p", s.min_p, "min-p, 0 = off");
  cmd->add_option("--repeat-penalty", s.repetition_penalty,
                  "repetition penalty, 1 = off");
  cmd->add_option("--repeat-last-n", s.repeat_last_n,
                  "tokens the penalty looks back over");
  cmd->add_option("--seed", s.seed, "sampling seed");
  cmd->add_flag("--json", o->json,
                "print one JSON object instead of streaming text");
  return {cmd, [o] { return RunGenerate(*o); }};
}

}  // namespace kvstash::apps
