#include "serve/stack.h"

#include <utility>

namespace kvstash {

Result<std::unique_ptr<ServingStack>> ServingStack::Create(
    const Model& model, ThreadPool* pool, const ServingStackOptions& options) {
  std::unique_ptr<ServingStack> s(new ServingStack);
  s->model_ = &model;
  s->pool_ = pool;
  KV_RETURN_IF_ERROR(s->Build(options));
  return s;
}

Result<std::unique_ptr<ServingStack>> ServingStack::Create(
    Parts parts, const ServingStackOptions& options) {
  if (parts.model == nullptr) {
    return Status::InvalidArgument("ServingStack: no model");
  }
  std::unique_ptr<ServingStack> s(new ServingStack);
  s->owned_ = std::move(parts);
  s->model_ = s->owned_.model.get();
  s->pool_ = s->owned_.pool.get();
  KV_RETURN_IF_ERROR(s->Build(options));
  return s;
}

Status ServingStack::Build(const ServingStackOptions& options) {
  const ModelConfig& c = model_->config();
  kvcache::KvManagerOptions kvo = options.kv;
  kvo.layout.n_layers = c.n_layers;
  kvo.layout.n_kv_heads = c.n_kv_heads;
  kvo.layout.head_dim = c.head_dim;
  KV_ASSIGN_OR_RETURN(kv_, kvcache::KvManager::Create(kvo));
  SchedulerOptions so = options.scheduler;
  if (so.context == 0) {
    so.context = c.context_length > 0 ? c.context_length : 2048;
  }
  context_ = so.context;
  KV_ASSIGN_OR_RETURN(scheduler_, Scheduler::Create(*model_, pool_, *kv_, so));
  if (options.http) {
    KV_ASSIGN_OR_RETURN(server_, HttpServer::Create(*model_, *scheduler_, *kv_,
                                                    options.server));
  }
  return Status::OK();
}

ServingStack::~ServingStack() { (void)Stop(); }

Status ServingStack::Serve() {
  if (server_ == nullptr) {
    return Status::InvalidArgument("ServingStack: built without http");
  }
  return server_->Serve();
}

void ServingStack::ServeInBackground() {
  serving_ = std::thread([this] { served_ = Serve(); });
}

Status ServingStack::Stop() {
  if (server_ != nullptr) server_->Stop();
  if (serving_.joinable()) serving_.join();
  return served_;
}

}  // namespace kvstash
