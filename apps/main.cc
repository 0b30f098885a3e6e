// kvstash: the command-line entry point. Parses flags with CLI11 into the
// Options structs of apps/commands.h and dispatches to a subcommand.
#include <CLI/CLI.hpp>
#include <iostream>

#include "apps/commands.h"

namespace {

void AddModelFlags(CLI::App* cmd, kvstash::apps::ModelOptions* m) {
  cmd->add_option("--model,-m", m->model_path,
                  "model file: GGUF, or a llama2.c checkpoint")
      ->required();
  cmd->add_option("--tokenizer", m->tokenizer_path,
                  "tokenizer.bin of a llama2.c checkpoint (GGUF files carry "
                  "their own vocabulary)");
}

void AddRunFlags(CLI::App* cmd, kvstash::apps::RunOptions* r) {
  cmd->add_option("--threads,-t", r->threads, "threads, 0 = one per core (0)");
  cmd->add_option("--kv-type", r->kv_type,
                  "KV cache element type: f32, f16, bf16 (f16)");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kvstash::apps;
  CLI::App app{"kvstash: an LLM inference engine built around its KV cache"};
  app.require_subcommand(1);

  GenerateCommandOptions gen;
  gen.sampling.temperature = 0.8f;
  CLI::App* generate = app.add_subcommand("generate", "generate text");
  AddModelFlags(generate, &gen.model);
  AddRunFlags(generate, &gen.run);
  generate->add_option("--prompt,-p", gen.prompt, "prompt text")->required();
  generate->add_option("--n-predict,-n", gen.n_predict,
                       "tokens to generate (default 128)");
  generate->add_option("--temp", gen.sampling.temperature,
                       "temperature; 0 = greedy (default 0.8)");
  generate->add_option("--top-k", gen.sampling.top_k, "top-k, 0 = off (40)");
  generate->add_option("--top-p", gen.sampling.top_p, "top-p, 1 = off (0.95)");
  generate->add_option("--min-p", gen.sampling.min_p, "min-p, 0 = off (0.05)");
  generate->add_option("--repeat-penalty", gen.sampling.repetition_penalty,
                       "repetition penalty, 1 = off (1)");
  generate->add_option("--repeat-last-n", gen.sampling.repeat_last_n,
                       "tokens the penalty looks back over (64)");
  generate->add_option("--seed", gen.sampling.seed, "sampling seed (0)");
  generate->add_flag("--json", gen.json,
                     "print one JSON object instead of streaming text");

  PerplexityCommandOptions ppl;
  CLI::App* perplexity = app.add_subcommand(
      "perplexity", "score a text file: NLL, perplexity, top-1 agreement");
  AddModelFlags(perplexity, &ppl.model);
  AddRunFlags(perplexity, &ppl.run);
  perplexity->add_option("--file,-f", ppl.file, "UTF-8 text file")->required();
  perplexity->add_option("--ctx", ppl.ctx,
                         "window length in tokens, BOS first (256)");
  perplexity->add_option("--windows", ppl.windows,
                         "windows to score, 0 = all that fit (0)");
  perplexity->add_flag("--json", ppl.json, "print one JSON object");

  InfoCommandOptions info;
  CLI::App* info_cmd =
      app.add_subcommand("info", "print a model's config and tensors");
  AddModelFlags(info_cmd, &info.model);

  ConvertCommandOptions conv;
  CLI::App* convert = app.add_subcommand(
      "convert", "write a model (GGUF or llama2.c) as a GGUF of one weight type");
  AddModelFlags(convert, &conv.model);
  convert->add_option("--type", conv.type,
                      "weight type: f32, f16, bf16, q8_0, q4_0 (f16)");
  convert->add_option("--out,-o", conv.out_path, "output .gguf path")
      ->required();

  GenModelCommandOptions genm;
  CLI::App* gen_model = app.add_subcommand(
      "gen-model",
      "write a random-weight Llama GGUF with a real vocabulary (benchmarks)");
  gen_model->add_option("--preset", genm.preset, "110m or 1b (110m)");
  gen_model->add_option("--type", genm.type,
                        "weight type: f32, f16, bf16, q8_0, q4_0 (f16)");
  gen_model->add_option("--vocab", genm.vocab_path,
                        "vocabulary GGUF to copy tokenizer.* metadata from, "
                        "e.g. ../shared/vocab/ggml-vocab-llama-spm.gguf")
      ->required();
  gen_model->add_option("--out,-o", genm.out_path, "output .gguf path")
      ->required();
  gen_model->add_option("--seed", genm.seed, "weight seed (0)");
  gen_model->add_option("--threads,-t", genm.threads, "threads, 0 = all (0)");
  gen_model->add_option("--dim", genm.dim, "override: embedding width");
  gen_model->add_option("--layers", genm.layers, "override: layers");
  gen_model->add_option("--heads", genm.heads, "override: query heads");
  gen_model->add_option("--kv-heads", genm.kv_heads, "override: KV heads");
  gen_model->add_option("--ffn", genm.ffn, "override: FFN width");
  gen_model->add_option("--ctx", genm.ctx, "override: context length (8192)");

  BenchCommandOptions bench;
  CLI::App* bench_cmd = app.add_subcommand(
      "bench",
      "prefill and decode speed, with memory-bandwidth and compute-peak "
      "probes measured in the same run");
  AddModelFlags(bench_cmd, &bench.model);
  AddRunFlags(bench_cmd, &bench.run);
  bench_cmd->add_option("--prompt-tokens", bench.prompt_tokens,
                        "prefill batch (512)");
  bench_cmd->add_option("--gen-tokens", bench.gen_tokens,
                        "decode steps (128)");
  bench_cmd->add_option("--depth", bench.depth,
                        "context filled before decode is measured (0)");
  bench_cmd->add_option("--repeat", bench.repeat, "runs (3)");
  bench_cmd->add_flag("--json", bench.json, "print one JSON object");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    return Fail(e.what());
  }
  if (generate->parsed()) return RunGenerate(gen);
  if (perplexity->parsed()) return RunPerplexity(ppl);
  if (info_cmd->parsed()) return RunInfo(info);
  if (convert->parsed()) return RunConvert(conv);
  if (gen_model->parsed()) return RunGenModel(genm);
  if (bench_cmd->parsed()) return RunBench(bench);
  return Fail("no subcommand");
}
