// `kvstash perplexity`: NLL, perplexity and top-1 agreement of a text file.
#include <cstdio>
#include <iostream>
#include <memory>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "base/file.h"
#include "engine/generate.h"

namespace kvstash::apps {
namespace {

struct PerplexityCommandOptions {
  ModelOptions model;
  RunOptions run;
  std::string file;
  int ctx = 256;
  int windows = 0;  // 0: every full window of the file
  bool json = false;
};

int RunPerplexity(const PerplexityCommandOptions& options) {
  if (options.ctx < 2) return Fail("--ctx must be >= 2");
  if (options.windows < 0) return Fail("--windows must be >= 0");
  std::unique_ptr<ThreadPool> pool;
  kernels::KvFormat kv_format;
  if (Status s = ParseRunOptions(options.run, &pool, &kv_format); !s.ok()) {
    return Fail(s.message());
  }
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<std::string> text = ReadFile(options.file);
  if (!text.ok()) return Fail(text.status().message());
  const std::vector<int32_t> ids = (*model)->tokenizer().Encode(*text, false);
  Transformer transformer(**model, pool.get());
  Result<PerplexityResult> r =
      Perplexity(transformer, ids, options.ctx, options.windows, kv_format,
                 [](int done, int total) {
                   std::cerr << "\rperplexity: window " << done << "/" << total
                             << std::flush;
                   if (done == total) std::cerr << "\n";
                 });
  if (!r.ok()) return Fail(r.status().message());
  if (options.json) {
    PrintJson({{"nll", r->nll},
               {"ppl", r->ppl},
               {"top1", r->top1},
               {"tokens", r->tokens},
               {"windows", r->windows},
               {"ctx", options.ctx}});
  } else {
    std::printf(
        "windows %d x %d tokens, %lld predicted: nll %.4f  ppl %.4f  "
        "top1 %.4f\n",
        r->windows, options.ctx, static_cast<long long>(r->tokens), r->nll,
        r->ppl, r->top1);
  }
  return 0;
}

}  // namespace

Command RegisterPerplexity(CLI::App& parent) {
  auto o = std::make_shared<PerplexityCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "perplexity", "score a text file: NLL, perplexity, top-1 agreement");
  AddModelFlags(cmd, &o->model);
  AddRunFlags(cmd, &o->run);
  cmd->add_option("--file,-f", o->file, "UTF-8 text file")->required();
  cmd->add_option("--ctx", o->ctx, "window length in tokens, BOS first");
  cmd->add_option("--windows", o->windows,
                  "windows to score, 0 = all that fit");
  AddJsonFlag(cmd, &o->json);
  return {cmd, [o] { return RunPerplexity(*o); }};
}

}  // namespace kvstash::apps
