// kvstash: the command-line entry point. Registers the subcommands (one
// file each, apps/commands.h), parses argv with CLI11 and runs the one
// given.
#include <CLI/CLI.hpp>
#include <vector>

#include "apps/app_util.h"
#include "apps/commands.h"

int main(int argc, char** argv) {
  using namespace kvstash::apps;
  CLI::App app{"kvstash: an LLM inference engine built around its KV cache"};
  app.require_subcommand(1);
  // --help shows each option's default from the struct it is bound to.
  app.option_defaults()->always_capture_default();

  std::vector<Command> commands = {
      RegisterGenerate(app), RegisterPerplexity(app), RegisterInfo(app),
      RegisterConvert(app),  RegisterGenModel(app),   RegisterBench(app)};
  CLI::App& bench = *commands.back().cmd;
  commands.push_back(RegisterBenchServe(bench));
  commands.push_back(RegisterBenchTiers(bench));
  commands.push_back(RegisterBenchCodec(bench));
  commands.push_back(RegisterBenchLoad(bench));
  commands.push_back(RegisterEval(app));
  commands.push_back(RegisterServe(app));
  commands.push_back(RegisterDemo(app));
  commands.push_back(RegisterCache(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    return Fail(e.what());
  }
  // Nested subcommands were registered after their parent: the last parsed
  // one is the one given.
  for (auto c = commands.rbegin(); c != commands.rend(); ++c) {
    if (c->cmd->parsed()) return c->run();
  }
  return Fail("no subcommand");
}
