// ServingStack: the model -> KvManager -> Scheduler -> HttpServer stack,
// assembled in one place for `kvstash serve`, `kvstash demo`, the serving
// and tier benchmarks and the tests that run a whole server.
//
// Contract. Create builds, in this order, the KV block pool
// (kvcache::KvManager from options.kv, whose layout takes the model's
// n_layers, n_kv_heads and head_dim; block_tokens, the KV types, the
// capacity, the tiers and their codec are the caller's), the Scheduler over
// it (options.scheduler; a context of 0 becomes the model's context length,
// 2048 when the model has none), and, when options.http, the HttpServer
// bound to options.server's host and port (0: any free port, see
// server().port()). Each piece validates its own options and the first
// error is returned; nothing is left half-built. The stack either borrows the
// model, the thread pool (null: forward passes run on the scheduler's loop
// thread) and the tiers that options.kv.tiers name, which must then outlive
// it, or owns them (the Create taking Parts). It is destroyed in reverse
// order: the HTTP server (stopped, and its background thread joined, first),
// the scheduler (which ends its loop and loader threads), the KV manager
// (which queues what is left to write behind to the tiers), then what it
// owns: the tiers, the pool, the model. Serve() runs the accept loop on the
// calling thread, ServeInBackground() on a thread of the stack's own; Stop()
// may be called from any thread. Otherwise each piece is as thread-safe as
// its own header says.
#pragma once

#include <memory>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kvcache/kv_manager.h"
#include "model/model.h"
#include "serve/http_server.h"
#include "serve/scheduler.h"
#include "store/tier.h"

namespace kvstash {

struct ServingStackOptions {
  // The serving defaults where they differ from the pieces': a 1 GiB pool,
  // the model's context.
  ServingStackOptions() {
    kv.capacity_bytes = size_t{1} << 30;
    scheduler.context = 0;
  }
  // layout.n_layers, n_kv_heads and head_dim are the model's (set by Create).
  kvcache::KvManagerOptions kv;
  SchedulerOptions scheduler;  // context 0: the model's (2048 without one)
  bool http = true;            // false: no HttpServer (in-process drivers)
  ServerOptions server;
};

class ServingStack {
 public:
  // What an owning stack holds besides its pieces; options.kv.tiers name
  // the Tier objects of `tiers`.
  struct Parts {
    std::unique_ptr<Model> model;
    std::unique_ptr<ThreadPool> pool;  // may be null
    std::vector<std::unique_ptr<store::Tier>> tiers;
  };

  // Borrows `model`, `pool` and the tiers of options.kv.tiers.
  static Result<std::unique_ptr<ServingStack>> Create(
      const Model& model, ThreadPool* pool, const ServingStackOptions& options);
  // Owns `parts`.
  static Result<std::unique_ptr<ServingStack>> Create(
      Parts parts, const ServingStackOptions& options);
  ~ServingStack();

  ServingStack(const ServingStack&) = delete;
  ServingStack& operator=(const ServingStack&) = delete;

  const Model& model() const { return *model_; }
  ThreadPool* pool() const { return pool_; }
  kvcache::KvManager& kv() const { return *kv_; }
  Scheduler& scheduler() const { return *scheduler_; }
  // Only with options.http.
  HttpServer& server() const { return *server_; }
  // Positions per sequence (the scheduler's context, resolved).
  int context() const { return context_; }

  // Serves until Stop(); IOError if the listening socket fails.
  Status Serve();
  // Serves on a thread of the stack's own until Stop().
  void ServeInBackground();
  // Stops the server and joins the background thread; what its Serve()
  // returned (OK without one).
  Status Stop();

 private:
  ServingStack() = default;
  Status Build(const ServingStackOptions& options);

  // Declared in construction order; destroyed in reverse.
  Parts owned_;
  const Model* model_ = nullptr;
  ThreadPool* pool_ = nullptr;
  std::unique_ptr<kvcache::KvManager> kv_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<HttpServer> server_;
  std::thread serving_;
  Status served_;
  int context_ = 0;
};

}  // namespace kvstash
