// kvstash: the command-line entry point. Parses flags with CLI11 into the
// Options structs of apps/commands.h and dispatches to a subcommand.
#include <CLI/CLI.hpp>
#include <iostream>

#include "apps/commands.h"
#include "compress/policy.h"

namespace {

// `required`: false where a nested subcommand may take the flags instead.
void AddModelFlags(CLI::App* cmd, kvstash::apps::ModelOptions* m,
                   bool required = true) {
  CLI::Option* model =
      cmd->add_option("--model,-m", m->model_path,
                      "model file: GGUF, or a llama2.c checkpoint");
  if (required) model->required();
  cmd->add_option("--tokenizer", m->tokenizer_path,
                  "tokenizer.bin of a llama2.c checkpoint (GGUF files carry "
                  "their own vocabulary)");
}

void AddRunFlags(CLI::App* cmd, kvstash::apps::RunOptions* r) {
  cmd->add_option("--threads,-t", r->threads, "threads, 0 = one per core (0)");
  cmd->add_option("--kv-type", r->kv_type,
                  "KV cache type of K and V: f32, f16, bf16, q8, q4, q4h, "
                  "kivi2, kivi4 (f16)");
  cmd->add_option("--kv-type-k", r->kv_type_k,
                  "KV type of the keys (overrides --kv-type)");
  cmd->add_option("--kv-type-v", r->kv_type_v,
                  "KV type of the values (overrides --kv-type)");
}

void AddKvPolicyFlags(CLI::App* cmd, kvstash::apps::KvPolicyFlags* f) {
  cmd->add_option(
      "--kv-policy", f->policy,
      "token eviction policy: " + kvstash::compress::PolicyNames() + " (none)");
  cmd->add_option("--kv-ratio", f->ratio,
                  "fraction of the tokens --kv-policy evicts, in [0, 1) (0.5)");
  cmd->add_flag("--kv-merge", f->merge,
                "fold each evicted token into its most similar kept token");
  cmd->add_option("--kv-every", f->every,
                  "after the first compression, compress again every N "
                  "positions back to its budget (a fixed budget while "
                  "decoding); 0: once (0)");
}

void AddTierCodecFlag(CLI::App* cmd, std::string* codec) {
  cmd->add_option("--tier-codec", *codec,
                  "how blocks are stored in the tiers: none, zstd "
                  "(lossless), cachegen (lossy, float KV types; measure it "
                  "with kvstash eval --tier-codec) (none)");
}

void AddTierChunkFlag(CLI::App* cmd, int* blocks) {
  cmd->add_option("--tier-chunk-blocks", *blocks,
                  "blocks per tier object: chunks of N consecutive blocks, "
                  "the blocks after a request's last chunk one by one; 1: "
                  "one object per block; 0: as many as fit in 512 KiB (0)");
}

void AddTierFlags(CLI::App* cmd, kvstash::apps::TierFlags* t) {
  cmd->add_option("--disk-cache", t->disk_cache,
                  "directory of a persistent KV cache tier (none)");
  cmd->add_option("--disk-cache-gb", t->disk_cache_gb,
                  "disk tier capacity in GiB (16)");
  cmd->add_option("--disk-io", t->disk_io,
                  "disk tier I/O: auto, direct (O_DIRECT + io_uring), "
                  "buffered (auto)");
  cmd->add_option("--disk-write", t->disk_write,
                  "write blocks to disk on commit or on second-use (commit)");
  cmd->add_option("--redis", t->redis,
                  "Redis KV tier shared by servers: "
                  "redis://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...] (none)");
  cmd->add_option("--redis-password-file", t->redis_password_file,
                  "file holding the Redis password (AUTH; overrides the "
                  "URL's, keeps its user) (none)");
  cmd->add_option("--redis-prefix", t->redis_prefix,
                  "prefix of Redis keys (kvstash:)");
  cmd->add_option("--redis-ttl", t->redis_ttl,
                  "Redis key expiry in seconds, 0 = none (0)");
  cmd->add_option("--redis-write", t->redis_write,
                  "write blocks to Redis on commit or on second-use (commit)");
  cmd->add_option("--tier-key-file", t->tier_key_file,
                  "file (mode 600) holding the secret that seals and "
                  "verifies tier objects, the same on every server of a "
                  "fleet; or KVSTASH_TIER_KEY in the environment (none: the "
                  "disk tier makes its own, Redis needs one)");
  cmd->add_flag("--redis-insecure", t->redis_insecure,
                "use Redis without a tier key: whoever can write to it "
                "controls the KV every server reads");
  AddTierCodecFlag(cmd, &t->tier_codec);
  AddTierChunkFlag(cmd, &t->tier_chunk_blocks);
}

void AddStackFlags(CLI::App* cmd, kvstash::apps::ServeStackOptions* s,
                   bool network) {
  AddRunFlags(cmd, &s->run);
  if (network) {
    cmd->add_option("--host", s->host,
                    "address to bind (127.0.0.1: this machine only)");
    cmd->add_option("--port", s->port, "port (8080)");
    cmd->add_option("--api-keys", s->api_keys_file,
                    "a private file of API keys, one 'KEY TENANT [admin]' a "
                    "line (or JSON): each tenant its own cache namespace; "
                    "re-read on SIGHUP");
    cmd->add_option("--api-key-file", s->api_key_file,
                    "a private file holding one API key (an admin); also "
                    "KVSTASH_API_KEY");
    cmd->add_option("--api-key", s->api_key,
                    "one API key on the command line (others on this machine "
                    "can read it: prefer --api-key-file)");
    cmd->add_option("--cors-origin", s->cors_origins,
                    "an origin whose web pages may call the server "
                    "(repeatable; none by default)");
    cmd->add_option("--max-body-mb", s->max_body_mb,
                    "largest request body in MiB (8)");
    cmd->add_flag("--special-in-content", s->special_in_content,
                  "let chat message text that spells a control token "
                  "('</s>', '<|im_start|>') become it: for trusted clients "
                  "only (off: only the template's markers do)");
    cmd->add_option("--model-id", s->model_id,
                    "model name in the API (the file name)");
    AddKvPolicyFlags(cmd, &s->kv_policy);
  }
  cmd->add_option("--kv-cache-mb", s->kv_cache_mb,
                  "KV block pool size in MiB, allocated at start (1024)");
  cmd->add_option("--block-tokens", s->block_tokens,
                  "tokens per KV block (16)");
  cmd->add_option("--max-batch-tokens", s->max_batch_tokens,
                  "tokens per forward step, all sequences (512)");
  cmd->add_option("--max-running", s->max_running,
                  "sequences batched at once (64)");
  cmd->add_option("--max-queue", s->max_queue,
                  "waiting requests before 429 (256)");
  cmd->add_option("--ctx", s->ctx,
                  "positions per sequence, 0 = the model's context (0)");
  AddTierFlags(cmd, &s->tiers);
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
  AddKvPolicyFlags(generate, &gen.kv_policy);
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
      "convert",
      "write a model (GGUF or llama2.c) as a GGUF of one weight type");
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
  gen_model
      ->add_option("--vocab", genm.vocab_path,
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
  AddModelFlags(bench_cmd, &bench.model, /*required=*/false);
  AddRunFlags(bench_cmd, &bench.run);
  AddKvPolicyFlags(bench_cmd, &bench.kv_policy);
  bench_cmd->add_option("--prompt-tokens", bench.prompt_tokens,
                        "prefill batch (512)");
  bench_cmd->add_option("--gen-tokens", bench.gen_tokens, "decode steps (128)");
  bench_cmd->add_option("--depth", bench.depth,
                        "context filled before decode is measured (0)");
  bench_cmd->add_option("--repeat", bench.repeat, "runs (3)");
  bench_cmd->add_option("--baseline-kv-type", bench.baseline_kv_type,
                        "also measure a KV cache of this type (K and V) in "
                        "each run, before the one of --kv-type, and report "
                        "the ratios (none)");
  bench_cmd->add_flag("--json", bench.json, "print one JSON object");

  BenchServeCommandOptions bench_serve;
  CLI::App* bench_serve_cmd = bench_cmd->add_subcommand(
      "serve",
      "prefix-cache and batching benchmark: cold vs warm TTFT, cached + new "
      "prompt time, 1 vs N decode streams, bookkeeping share");
  AddModelFlags(bench_serve_cmd, &bench_serve.model);
  AddRunFlags(bench_serve_cmd, &bench_serve.run);
  bench_serve_cmd->add_option("--prompt-tokens", bench_serve.prompt_tokens,
                              "long prompt (2000)");
  bench_serve_cmd->add_option("--new-tokens", bench_serve.new_tokens,
                              "fresh tail after the cached part (100)");
  bench_serve_cmd->add_option("--streams", bench_serve.streams,
                              "concurrent decode streams (16)");
  bench_serve_cmd->add_option("--gen-tokens", bench_serve.gen_tokens,
                              "tokens per decode stream (64)");
  bench_serve_cmd->add_option(
      "--choices", bench_serve.choices,
      "n of the parallel-sampling phase: a cold prompt with n choices "
      "against one (8)");
  bench_serve_cmd->add_option("--repeat", bench_serve.repeat, "runs (3)");
  bench_serve_cmd->add_option("--block-tokens", bench_serve.block_tokens,
                              "tokens per KV block (16)");
  bench_serve_cmd->add_option("--kv-cache-mb", bench_serve.kv_cache_mb,
                              "KV block pool in MiB (1024)");
  bench_serve_cmd->add_option("--max-batch-tokens",
                              bench_serve.max_batch_tokens,
                              "tokens per forward step (512)");
  AddKvPolicyFlags(bench_serve_cmd, &bench_serve.kv_policy);
  bench_serve_cmd->add_flag("--json", bench_serve.json,
                            "print one JSON object");

  BenchTiersCommandOptions bench_tiers;
  CLI::App* bench_tiers_cmd = bench_cmd->add_subcommand(
      "tiers",
      "KV tier benchmark: restore throughput from disk and Redis against "
      "probes of the same media, warm vs cold TTFT, decode with write-behind "
      "on and off");
  AddModelFlags(bench_tiers_cmd, &bench_tiers.model);
  AddRunFlags(bench_tiers_cmd, &bench_tiers.run);
  bench_tiers_cmd->add_option("--disk-cache", bench_tiers.disk_cache,
                              "disk tier directory (none: no disk rows)");
  bench_tiers_cmd->add_option("--disk-io", bench_tiers.disk_io,
                              "auto, direct or buffered (auto)");
  bench_tiers_cmd->add_option("--redis", bench_tiers.redis,
                              "redis://[USER:PASSWORD@]HOST:PORT[,...] "
                              "(none: no Redis rows)");
  bench_tiers_cmd->add_option(
      "--tier-key-file", bench_tiers.tier_key_file,
      "tier key secret (else KVSTASH_TIER_KEY, else a random key)");
  AddTierCodecFlag(bench_tiers_cmd, &bench_tiers.tier_codec);
  AddTierChunkFlag(bench_tiers_cmd, &bench_tiers.tier_chunk_blocks);
  bench_tiers_cmd->add_option("--prompt-tokens", bench_tiers.prompt_tokens,
                              "prompt restored from the tiers (4096)");
  bench_tiers_cmd->add_option("--gen-tokens", bench_tiers.gen_tokens,
                              "tokens generated after it (32)");
  bench_tiers_cmd->add_option(
      "--suffix-tokens", bench_tiers.suffix_tokens,
      "new tokens after the restored prompt for the suffix rows, 0 = none "
      "(512)");
  bench_tiers_cmd->add_option("--streams", bench_tiers.streams,
                              "decode streams for the write-behind rows (4)");
  bench_tiers_cmd->add_option("--decode-tokens", bench_tiers.decode_tokens,
                              "tokens per decode stream (128)");
  bench_tiers_cmd->add_option("--repeat", bench_tiers.repeat, "runs (3)");
  bench_tiers_cmd->add_option("--block-tokens", bench_tiers.block_tokens,
                              "tokens per KV block (16)");
  bench_tiers_cmd->add_option("--kv-cache-mb", bench_tiers.kv_cache_mb,
                              "KV block pool in MiB (1024)");
  bench_tiers_cmd->add_flag("--json", bench_tiers.json,
                            "print one JSON object");

  BenchCodecCommandOptions bench_codec;
  CLI::App* bench_codec_cmd = bench_cmd->add_subcommand(
      "codec",
      "tier codec benchmark: object size against f16 and encode / decode "
      "throughput of none, zstd and cachegen on the model's real KV blocks, "
      "one thread");
  AddModelFlags(bench_codec_cmd, &bench_codec.model);
  AddRunFlags(bench_codec_cmd, &bench_codec.run);
  bench_codec_cmd->add_option("--file,-f", bench_codec.file,
                              "UTF-8 text to prefill (random token ids)");
  bench_codec_cmd->add_option("--prompt-tokens", bench_codec.prompt_tokens,
                              "tokens prefilled (1024)");
  bench_codec_cmd->add_option("--object-blocks", bench_codec.object_blocks,
                              "blocks per object (1)");
  bench_codec_cmd->add_option("--block-tokens", bench_codec.block_tokens,
                              "tokens per KV block (16)");
  bench_codec_cmd->add_option("--repeat", bench_codec.repeat, "runs (3)");
  bench_codec_cmd->add_flag("--json", bench_codec.json,
                            "print one JSON object");

  BenchLoadCommandOptions bench_load;
  kvstash::bench::LoadBenchOptions& load = bench_load.load;
  CLI::App* bench_load_cmd = bench_cmd->add_subcommand(
      "load",
      "HTTP load generator against a running server: N clients sending "
      "completions and chats, streamed or not, over shared prefixes, some "
      "streams cancelled, some requests bad; requests/s, TTFT and "
      "inter-token percentiles, failures by kind, the server's RSS; exits 1 "
      "when a well-formed request failed or a bad one was accepted");
  bench_load_cmd->add_option("--url", load.url, "the server: http://HOST:PORT")
      ->required();
  bench_load_cmd->add_option("--clients", load.clients,
                             "concurrent clients, one connection each (16)");
  bench_load_cmd->add_option("--duration", load.duration_s,
                             "seconds of load; requests in flight then end "
                             "(60)");
  bench_load_cmd->add_option(
      "--api-key-file", bench_load.api_key_file,
      "a private file holding the API key (else KVSTASH_API_KEY); RSS is "
      "read from /metrics with it, which needs an admin key");
  bench_load_cmd->add_option("--max-tokens", load.max_tokens,
                             "max_tokens of each well-formed request (32)");
  bench_load_cmd->add_option("--seed", load.seed,
                             "seed of the prompts and of the mix (1)");
  bench_load_cmd->add_option("--prompts-file", bench_load.prompts_file,
                             "text whose words the prompts are made of, "
                             "passages taken in order (built-in words)");
  bench_load_cmd->add_option("--documents", load.documents,
                             "shared passages the prompts start with (4)");
  bench_load_cmd->add_option("--document-words", load.document_words,
                             "words per passage; a passage, a question and "
                             "--max-tokens must fit the server's context (80)");
  bench_load_cmd->add_option("--question-words", load.question_words,
                             "words per question after the passage (12)");
  bench_load_cmd->add_option("--chat-share", load.chat_share,
                             "share of chat completions (0.5)");
  bench_load_cmd->add_option("--stream-share", load.stream_share,
                             "share of streamed requests (0.5)");
  bench_load_cmd->add_option("--cancel-share", load.cancel_share,
                             "share of streams closed mid-way (0.2)");
  bench_load_cmd->add_option("--cancel-after", load.cancel_after,
                             "chunks of text a cancelled stream reads (3)");
  bench_load_cmd->add_option("--unique-share", load.unique_share,
                             "share of prompts with a passage of their own "
                             "instead of a shared one (0.2)");
  bench_load_cmd->add_option("--bad-share", load.bad_share,
                             "share of bad requests, which must get a 4xx "
                             "(0.05)");
  bench_load_cmd->add_option("--timeout", load.timeout_s,
                             "seconds to connect, and of silence before a "
                             "request times out (120)");
  bench_load_cmd->add_option("--rss-every", load.rss_every_s,
                             "seconds between reads of the server's RSS (5)");
  bench_load_cmd->add_option("--progress-every", load.progress_every_s,
                             "seconds between progress lines on stderr (10)");
  bench_load_cmd->add_flag("--json", bench_load.json, "print one JSON object");

  EvalCommandOptions eval;
  CLI::App* eval_cmd = app.add_subcommand(
      "eval",
      "what a lossy KV configuration costs: perplexity ratio, KL divergence, "
      "top-1 agreement and greedy divergence against a baseline, and the "
      "KV bytes per token of both");
  AddModelFlags(eval_cmd, &eval.model);
  AddRunFlags(eval_cmd, &eval.run);
  eval_cmd->add_option("--baseline-kv-type", eval.baseline_kv_type,
                       "KV type of the baseline, K and V (f16)");
  eval_cmd->add_option("--file,-f", eval.file, "UTF-8 text file")->required();
  eval_cmd->add_option("--ctx", eval.ctx,
                       "window length in tokens, BOS first (256)");
  eval_cmd->add_option("--windows", eval.windows,
                       "teacher-forced windows, 0 = all that fit (32)");
  eval_cmd->add_option("--gen-prompts", eval.gen_prompts,
                       "file of prompts, one per line, for greedy generation "
                       "(none)");
  eval_cmd->add_option("--gen-tokens", eval.gen_tokens,
                       "greedy tokens per prompt (128)");
  AddTierCodecFlag(eval_cmd, &eval.tier_codec);
  eval_cmd->add_option("--tier-chunk-blocks", eval.tier_chunk_blocks,
                       "blocks per object through --tier-codec: a chunk is "
                       "restored once complete (1)");
  AddKvPolicyFlags(eval_cmd, &eval.kv_policy);
  eval_cmd->add_option("--compress-at", eval.compress_at,
                       "with --kv-policy: positions of each window computed "
                       "before compressing; only later predictions are "
                       "scored (ctx / 2)");
  eval_cmd->add_flag("--sweep", eval.sweep,
                     "every --kv-policy at ratios 0.25, 0.5, 0.75, 0.875: one "
                     "table (with --json: one JSON object per line)");
  eval_cmd->add_flag("--json", eval.json, "print one JSON object");

  ServeCommandOptions serve;
  CLI::App* serve_cmd = app.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server with a shared, paged prefix cache and "
      "continuous batching");
  AddModelFlags(serve_cmd, &serve.model);
  AddStackFlags(serve_cmd, &serve.stack, /*network=*/true);

  DemoCommandOptions demo;
  CLI::App* demo_cmd = app.add_subcommand(
      "demo",
      "first run: writes a small random model, serves it, and shows a long "
      "prompt's time to first token cold and from the cache");
  demo_cmd->add_option("--vocab", demo.vocab_path,
                       "vocabulary GGUF (../shared/vocab/"
                       "ggml-vocab-llama-spm.gguf)");
  demo_cmd->add_option("--cache-dir", demo.cache_dir,
                       "where the demo model is kept (~/.cache/kvstash)");
  demo_cmd->add_option("--prompt-tokens", demo.prompt_tokens,
                       "length of the shared prompt (1500)");
  AddStackFlags(demo_cmd, &demo.stack, /*network=*/false);

  CacheCommandOptions cache;
  CLI::App* cache_cmd = app.add_subcommand(
      "cache",
      "inspect a disk KV cache: stats, verify (MACs and checksums), clear, "
      "rekey (clear, and drop the directory's own key)");
  cache_cmd->add_option("action", cache.action, "stats, verify, clear or rekey")
      ->required()
      ->check(CLI::IsMember({"stats", "verify", "clear", "rekey"}));
  cache_cmd->add_option("--disk-cache", cache.dir, "the cache directory")
      ->required();
  cache_cmd->add_flag("--remove-bad", cache.remove_bad,
                      "verify: delete the objects that fail");
  cache_cmd->add_option("--tier-key-file", cache.tier_key_file,
                        "verify: the key the servers use (else "
                        "KVSTASH_TIER_KEY, else the directory's TIER_KEY)");
  cache_cmd->add_flag("--json", cache.json, "print one JSON object");

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
  if (bench_serve_cmd->parsed()) return RunBenchServe(bench_serve);
  if (bench_load_cmd->parsed()) return RunBenchLoad(bench_load);
  if (bench_tiers_cmd->parsed()) return RunBenchTiers(bench_tiers);
  if (bench_codec_cmd->parsed()) return RunBenchCodec(bench_codec);
  if (bench_cmd->parsed()) return RunBench(bench);
  if (eval_cmd->parsed()) return RunEval(eval);
  if (serve_cmd->parsed()) return RunServe(serve);
  if (demo_cmd->parsed()) return RunDemo(demo);
  if (cache_cmd->parsed()) return RunCache(cache);
  return Fail("no subcommand");
}
