#include "apps/serve_stack.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "apps/app_util.h"
#include "apps/tiers.h"
#include "base/file.h"
#include "compress/policy.h"
#include "engine/kv_compaction.h"

namespace kvstash::apps {
namespace {

bool Loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// The keys the flags or KVSTASH_API_KEY give (none: an empty set).
Result<ApiKeys> ResolveApiKeys(const ServeStackFlags& o) {
  const char* env = std::getenv("KVSTASH_API_KEY");
  const bool from_env = env != nullptr && *env != '\0';
  if (int(!o.api_keys_file.empty()) + int(!o.api_key_file.empty()) +
          int(!o.api_key.empty()) + int(from_env) >
      1) {
    return Status::InvalidArgument(
        "give one of --api-keys, --api-key-file, --api-key and "
        "KVSTASH_API_KEY");
  }
  Result<ApiKeys> keys = ApiKeys();
  std::string source;
  if (!o.api_keys_file.empty()) {
    source = "--api-keys";
    keys = ApiKeys::Load(o.api_keys_file);
  } else if (!o.api_key_file.empty()) {
    source = "--api-key-file";
    Result<std::string> key = ReadSecretFile(o.api_key_file);
    keys = key.ok() ? ApiKeys::Single(*key) : Result<ApiKeys>(key.status());
  } else if (from_env) {
    source = "KVSTASH_API_KEY";
    keys = ApiKeys::Single(env);
  } else if (!o.api_key.empty()) {
    source = "--api-key";
    std::fprintf(stderr,
                 "kvstash: warning: --api-key is visible to every user of "
                 "this machine (ps); prefer --api-key-file\n");
    keys = ApiKeys::Single(o.api_key);
  }
  if (!keys.ok()) return keys.status().WithPrefix(source);
  return keys;
}

void LogStack(ServingStack& s, const ServerOptions& server,
              const std::vector<std::string>& tiers) {
  const kvcache::KvStats kv = s.kv().Stats();
  std::fprintf(stderr,
               "kvstash: serving %s on http://%s:%d (%zu threads, context %d, "
               "KV cache %s = %zu blocks of %zu tokens = %zu tokens at %s, "
               "%.0f bytes/token)\n",
               server.model_id.c_str(), server.host.c_str(), s.server().port(),
               s.pool()->NumWorkers(), s.context(),
               HumanBytes(kv.capacity_blocks * kv.block_bytes).c_str(),
               kv.capacity_blocks, kv.block_tokens, kv.capacity_tokens(),
               kernels::KvFormatName(kv.kv_format).c_str(), kv.bytes_per_token);
  for (const std::string& tier : tiers) {
    std::fprintf(stderr, "kvstash: KV tier %s\n", tier.c_str());
  }
  if (server.api_keys.empty()) {
    std::fprintf(stderr,
                 "kvstash: no API keys: one tenant, every caller an admin "
                 "(loopback only)\n");
  } else {
    std::fprintf(stderr,
                 "kvstash: %zu API keys; each tenant has its own cache "
                 "namespace\n",
                 server.api_keys.size());
  }
}

}  // namespace

void AddServeStackFlags(CLI::App* cmd, ServeStackFlags* f, bool network) {
  AddRunFlags(cmd, &f->run);
  ServingStackOptions& s = f->stack;
  if (network) {
    cmd->add_option("--host", s.server.host,
                    "address to bind (127.0.0.1: this machine only)");
    cmd->add_option("--port", s.server.port, "port");
    cmd->add_option("--api-keys", f->api_keys_file,
                    "a private file of API keys, one 'KEY TENANT [admin]' a "
                    "line (or JSON): each tenant its own cache namespace; "
                    "re-read on SIGHUP");
    cmd->add_option("--api-key-file", f->api_key_file,
                    "a private file holding one API key (an admin); also "
                    "KVSTASH_API_KEY");
    cmd->add_option("--api-key", f->api_key,
                    "one API key on the command line (others on this machine "
                    "can read it: prefer --api-key-file)");
    cmd->add_option("--cors-origin", s.server.cors_origins,
                    "an origin whose web pages may call the server "
                    "(repeatable; none by default)")
        ->default_str("");
    AddMiBOption(cmd, "--max-body-mb", &s.server.max_body_bytes,
                 "largest request body in MiB");
    cmd->add_flag("--special-in-content", s.server.special_tokens_in_content,
                  "let chat message text that spells a control token "
                  "('</s>', '<|im_start|>') become it: for trusted clients "
                  "only (off: only the template's markers do)");
    cmd->add_option("--model-id", f->model_id,
                    "model name in the API (the file name)");
    AddKvPolicyFlags(cmd, &f->kv_policy);
  }
  AddMiBOption(cmd, "--kv-cache-mb", &s.kv.capacity_bytes,
               "KV block pool size in MiB, allocated at start");
  cmd->add_option("--block-tokens", s.kv.layout.block_tokens,
                  "tokens per KV block");
  cmd->add_option("--max-batch-tokens", s.scheduler.max_batch_tokens,
                  "tokens per forward step, all sequences");
  cmd->add_option("--max-running", s.scheduler.max_running,
                  "sequences batched at once");
  cmd->add_option("--max-queue", s.scheduler.max_queue,
                  "waiting requests before 429");
  cmd->add_option("--ctx", s.scheduler.context,
                  "positions per sequence, 0 = the model's context");
  cmd->add_option("--layered-loads", s.scheduler.layered_loads,
                  "on: a prompt's suffix is computed while its prefix loads "
                  "from a tier, layer by layer; off: after the whole load")
      ->default_str("on");
  AddTierFlags(cmd, &f->tiers);
}

Result<std::unique_ptr<ServingStack>> StartServeStack(
    std::unique_ptr<Model> model, const std::string& model_path,
    const ServeStackFlags& f) {
  ServingStackOptions o = f.stack;
  ServingStack::Parts parts;
  parts.model = std::move(model);
  KV_RETURN_IF_ERROR(ParseRunOptions(f.run, &parts.pool, &o.kv.layout.kv));
  if (o.kv.layout.block_tokens < 1 || o.kv.layout.block_tokens > 1024) {
    return Status::InvalidArgument("--block-tokens must be in [1, 1024]");
  }
  if (o.server.port < 0 || o.server.port > 65535) {
    return Status::InvalidArgument("--port must be in [0, 65535]");
  }
  if (!f.kv_policy.policy.empty()) {
    o.server.kv_compression = f.kv_policy;
    const Status valid = compress::CheckPolicyOptions(f.kv_policy);
    if (!valid.ok()) return Status::InvalidArgument("--kv-" + valid.message());
    const std::string why = KvCompactionSupports(o.kv.layout.kv);
    if (!why.empty()) return Status::InvalidArgument("--kv-policy: " + why);
  }
  KV_ASSIGN_OR_RETURN(OpenedTiers tiers, OpenTiers(f.tiers));
  o.kv.tiers = tiers.options;
  o.kv.tier_codec = tiers.codec;
  o.kv.chunk_blocks = tiers.chunk_blocks;
  parts.tiers = std::move(tiers.tiers);
  KV_ASSIGN_OR_RETURN(o.server.api_keys, ResolveApiKeys(f));
  if (o.server.api_keys.empty() && !Loopback(o.server.host)) {
    return Status::InvalidArgument(
        "--host " + o.server.host +
        " without API keys would let anyone who reaches it use and clear "
        "the cache: give --api-keys, --api-key-file or KVSTASH_API_KEY, or "
        "serve 127.0.0.1");
  }
  if (o.server.max_body_bytes < (size_t{1} << 20) ||
      o.server.max_body_bytes > (size_t{1024} << 20)) {
    return Status::InvalidArgument("--max-body-mb must be in [1, 1024]");
  }
  o.server.model_id =
      f.model_id.empty() ? std::filesystem::path(model_path).filename().string()
                         : f.model_id;
  KV_ASSIGN_OR_RETURN(std::unique_ptr<ServingStack> s,
                      ServingStack::Create(std::move(parts), o));
  LogStack(*s, o.server, tiers.descriptions);
  return s;
}

}  // namespace kvstash::apps
