// What the HTTP server's end-to-end tests share: an HttpServer serving on
// its own thread (RunningServer) or a whole stack (StartStack), a
// cpp-httplib client's requests reduced to status, body and content type, and
// the check that an answer is an OpenAI-style error. A test binary that
// includes this links cpp-httplib.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "serve/http_server.h"
#include "serve/stack.h"

namespace kvstash::testing {

struct HttpReply {
  int status = -1;  // -1: no response (the error is in `body`)
  std::string body;
  std::string content_type;
};

inline HttpReply FromResult(const httplib::Result& r) {
  HttpReply out;
  if (!r) {
    out.body = "transport error: " + httplib::to_string(r.error());
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  out.content_type = r->get_header_value("Content-Type");
  return out;
}

inline httplib::Client NewClient(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(10);
  c.set_read_timeout(60);
  c.set_write_timeout(60);
  return c;
}

inline HttpReply Post(int port, const std::string& path,
                      const std::string& body,
                      const httplib::Headers& headers = {}) {
  httplib::Client c = NewClient(port);
  return FromResult(c.Post(path.c_str(), headers, body, "application/json"));
}

inline HttpReply Post(int port, const std::string& path,
                      const nlohmann::json& body,
                      const httplib::Headers& headers = {}) {
  return Post(port, path, body.dump(), headers);
}

inline HttpReply Get(int port, const std::string& path,
                     const httplib::Headers& headers = {}) {
  httplib::Client c = NewClient(port);
  return FromResult(c.Get(path.c_str(), headers));
}

// The JSON in `text`; a discarded value when it is not JSON.
inline nlohmann::json ParseJson(const std::string& text) {
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

// Checks that `r` is an OpenAI error: `status` and a body
// {"error":{"message":..,"type":..,"param":..|null,"code":..}}; when `param`
// is given, error.param must equal it.
inline void ExpectApiError(const HttpReply& r, int status,
                           const std::string& what,
                           std::optional<std::string> param = std::nullopt) {
  SCOPED_TRACE(what);
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(r.content_type.rfind("application/json", 0), 0u)
      << "content type: " << r.content_type;
  const nlohmann::json j = ParseJson(r.body);
  ASSERT_TRUE(j.is_object()) << "not a JSON object: " << r.body;
  ASSERT_TRUE(j.contains("error") && j["error"].is_object()) << r.body;
  const nlohmann::json& e = j["error"];
  EXPECT_TRUE(e.contains("message") && e["message"].is_string() &&
              !e["message"].get<std::string>().empty())
      << r.body;
  EXPECT_TRUE(e.contains("type") && e["type"].is_string() &&
              !e["type"].get<std::string>().empty())
      << r.body;
  EXPECT_TRUE(e.contains("param") &&
              (e["param"].is_null() || e["param"].is_string()))
      << r.body;
  EXPECT_TRUE(e.contains("code")) << r.body;
  if (param && e.contains("param")) {
    EXPECT_EQ(e["param"], nlohmann::json(*param)) << r.body;
  }
}

// An HttpServer serving on its own thread until destroyed.
class RunningServer {
 public:
  static std::unique_ptr<RunningServer> Start(const Model& model,
                                              Scheduler& scheduler,
                                              kvcache::KvManager& kv,
                                              const ServerOptions& options) {
    auto server = HttpServer::Create(model, scheduler, kv, options);
    if (!server.ok()) {
      ADD_FAILURE() << "HttpServer::Create: " << server.status().ToString();
      return nullptr;
    }
    std::unique_ptr<RunningServer> r(new RunningServer);
    r->server_ = std::move(server).value();
    r->thread_ =
        std::thread([s = r.get()] { s->served_ = s->server_->Serve(); });
    // Ready once the accept loop answers (Stop() is only meaningful then).
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (Get(r->port(), "/health").status != 200) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "the server never answered /health";
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return r;
  }

  ~RunningServer() {
    server_->Stop();
    thread_.join();
    EXPECT_TRUE(served_.ok()) << served_.ToString();
  }

  int port() const { return server_->port(); }
  HttpServer& server() { return *server_; }

 private:
  RunningServer() = default;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  Status served_;
};

// A ServingStack over `model` (borrowed) serving on its own thread; null,
// with a test failure, when it cannot be built.
inline std::unique_ptr<ServingStack> StartStack(
    const Model& model, const ServingStackOptions& options) {
  auto stack = ServingStack::Create(model, nullptr, options);
  if (!stack.ok()) {
    ADD_FAILURE() << "ServingStack::Create: " << stack.status().ToString();
    return nullptr;
  }
  (*stack)->ServeInBackground();
  return std::move(stack).value();
}

}  // namespace kvstash::testing
