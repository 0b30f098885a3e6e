// The flags of the serving stack that `kvstash serve` and `kvstash demo`
// start (serve/stack.h), and starting it from them.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "apps/flags.h"
#include "base/status.h"
#include "model/model.h"
#include "serve/stack.h"

namespace kvstash::apps {

struct ServeStackFlags {
  // Bound to flags field by field (scheduler limits and context, block
  // tokens, pool bytes, host, port, body limit, CORS origins); the adapters
  // below fill the rest of it.
  ServingStackOptions stack;
  RunOptions run;  // the pool and stack.kv.layout.kv
  // Who may call the server (at most one of these; KVSTASH_API_KEY in the
  // environment is a fourth way to give one key): stack.server.api_keys.
  std::string api_key;        // one key, visible in the process list
  std::string api_key_file;   // one key, read from a private file
  std::string api_keys_file;  // `KEY TENANT [admin]` lines, re-read on SIGHUP
  std::string model_id;       // empty: the model file's name
  TierFlags tiers;            // stack.kv.tiers, tier_codec, chunk_blocks
  KvPolicyFlags kv_policy;    // stack.server.kv_compression
};

// The flags of `f`; `network`: also those of the HTTP side (serve; the
// demo serves on a free loopback port).
void AddServeStackFlags(CLI::App* cmd, ServeStackFlags* f, bool network);

// Checks the flags, opens the tiers, builds the stack over `model` (read
// from `model_path`) and logs what it serves to stderr. InvalidArgument
// naming the flag for a bad value.
Result<std::unique_ptr<ServingStack>> StartServeStack(
    std::unique_ptr<Model> model, const std::string& model_path,
    const ServeStackFlags& f);

}  // namespace kvstash::apps
