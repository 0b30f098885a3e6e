// `kvstash serve`: the OpenAI-compatible server (serve/stack.h) on the
// flags' model until SIGINT or SIGTERM; SIGHUP re-reads --api-keys.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <thread>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "apps/serve_stack.h"

namespace kvstash::apps {
namespace {

struct ServeCommandOptions {
  ModelOptions model;
  ServeStackFlags stack;
};

int RunServe(const ServeCommandOptions& options) {
  // Buffers of 1 MiB and more (request bodies, their parse) are mapped and
  // unmapped, never kept in a worker thread's heap: a body near the limit
  // does not grow the server's memory for good (glibc would otherwise raise
  // the threshold after the first such free and keep the next ones).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // SIGINT/SIGTERM are taken by a waiting thread (every thread started from
  // here inherits the blocked mask) and stop the server cleanly.
  // SIGHUP re-reads --api-keys.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  Result<std::unique_ptr<Model>> model = LoadModel(options.model);
  if (!model.ok()) return Fail(model.status().message());
  Result<std::unique_ptr<ServingStack>> stack = StartServeStack(
      std::move(*model), options.model.model_path, options.stack);
  if (!stack.ok()) return Fail(stack.status().message());
  HttpServer& server = (*stack)->server();
  const std::string& keys_file = options.stack.api_keys_file;
  std::thread waiter([&] {
    int sig = 0;
    while (sigwait(&stop_signals, &sig) == 0 && sig == SIGHUP) {
      if (keys_file.empty()) continue;
      Result<ApiKeys> keys = ApiKeys::Load(keys_file);
      if (!keys.ok()) {
        std::fprintf(stderr,
                     "kvstash: SIGHUP: keeping the API keys in force: %s\n",
                     keys.status().message().c_str());
        continue;
      }
      std::fprintf(stderr, "kvstash: SIGHUP: %zu API keys from %s\n",
                   keys->size(), keys_file.c_str());
      server.SetApiKeys(std::move(*keys));
    }
    server.Stop();
  });
  const Status served = server.Serve();
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  if (!served.ok()) return Fail(served.message());
  std::fprintf(stderr, "kvstash: stopped\n");
  return 0;
}

}  // namespace

Command RegisterServe(CLI::App& parent) {
  auto o = std::make_shared<ServeCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "serve",
      "OpenAI-compatible HTTP server with a shared, paged prefix cache and "
      "continuous batching");
  AddModelFlags(cmd, &o->model);
  AddServeStackFlags(cmd, &o->stack, /*network=*/true);
  return {cmd, [o] { return RunServe(*o); }};
}

}  // namespace kvstash::apps
