// The subcommands of the `kvstash` binary, one file each (apps/*_command.cc).
// Each Register* adds its subcommand to `parent`, binds its flags straight
// to the options the command runs with, and returns the Command main.cc
// runs when that subcommand was parsed. main.cc only registers them.
#pragma once

#include <CLI/CLI.hpp>

#include "apps/flags.h"

namespace kvstash::apps {

Command RegisterGenerate(CLI::App& parent);
Command RegisterPerplexity(CLI::App& parent);
Command RegisterInfo(CLI::App& parent);
Command RegisterConvert(CLI::App& parent);
Command RegisterGenModel(CLI::App& parent);
Command RegisterBench(CLI::App& parent);
// Under `bench` (the Command RegisterBench returned).
Command RegisterBenchServe(CLI::App& bench);
Command RegisterBenchTiers(CLI::App& bench);
Command RegisterBenchCodec(CLI::App& bench);
Command RegisterBenchLoad(CLI::App& bench);
Command RegisterEval(CLI::App& parent);
Command RegisterServe(CLI::App& parent);
Command RegisterDemo(CLI::App& parent);
Command RegisterCache(CLI::App& parent);

}  // namespace kvstash::apps
