// What the end-to-end serving tests share: the real stories260K model, a
// long token stream from the shared validation text, draining a request's
// events, and the reference every cached or batched output must equal (the
// same prompt generated greedily, alone, by the plain generate loop).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "base/check.h"
#include "engine/generate.h"
#include "kernels/kv_format.h"
#include "kernels/kv_format_testing.h"
#include "model/model.h"
#include "serve/scheduler.h"
#include "tests/testing/shared_data.h"

namespace kvstash::testing {

inline std::unique_ptr<Model> LoadStories() {
  auto m = Model::Load(SharedPath("models/stories260K/stories260K.bin"),
                       SharedPath("models/stories260K/tok512.bin"));
  KV_CHECK(m.ok());
  return std::move(m).value();
}

// Tokens of the first 60000 characters of the TinyStories validation text.
inline std::vector<int32_t> StoryTokens(const Model& model) {
  std::ifstream in(SharedPath("data/tinystories_val.txt"));
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str().substr(0, 60000);
  return model.tokenizer().Encode(s, /*add_bos=*/false);
}

using kernels::testing::AllKvFormats;
using kernels::testing::KvFormatTestName;

struct Outcome {
  std::vector<int32_t> tokens;
  RequestEvent finish;
};

// Drains a handle until its finish event; a request silent for a minute
// fails the test (and is cancelled).
inline Outcome Collect(RequestHandle& h) {
  Outcome out;
  RequestEvent ev;
  while (true) {
    if (!h.Next(&ev, std::chrono::milliseconds(60000))) {
      // A stuck request fails the test instead of hanging it.
      ADD_FAILURE() << "request timed out after " << out.tokens.size()
                    << " tokens";
      h.Cancel();
      out.finish.finish = RequestEnd::kError;
      return out;
    }
    if (ev.kind == RequestEvent::Kind::kFinish) {
      out.finish = ev;
      return out;
    }
    if (ev.kind == RequestEvent::Kind::kToken) out.tokens.push_back(ev.token);
  }
}

inline GenerationRequest Greedy(std::vector<int32_t> prompt, int max_tokens,
                                std::string salt = "") {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  r.cache_salt = std::move(salt);
  return r;
}

// Greedy outputs of prompts computed alone by the plain generate loop with
// K/V kept in `kv_format`, memoized (EOS is not part of the output, as in the
// scheduler's events).
class AloneReference {
 public:
  explicit AloneReference(const Model& model, kernels::KvFormat kv_format = {})
      : model_(model), kv_format_(kv_format) {}

  kernels::KvFormat kv_format() const { return kv_format_; }

  const std::vector<int32_t>& Get(const std::vector<int32_t>& prompt,
                                  int max_tokens) {
    auto key = std::make_pair(prompt, max_tokens);
    auto it = memo_.find(key);
    if (it != memo_.end()) return it->second;
    Transformer tf(model_);
    GenerateOptions o;
    o.n_predict = max_tokens;
    o.sampling.temperature = 0;
    o.kv_format = kv_format_;
    std::vector<int32_t> out;
    auto r = Generate(tf, prompt, o, [&](int32_t t) {
      if (t != model_.tokenizer().eos()) out.push_back(t);
      return true;
    });
    KV_CHECK(r.ok());
    return memo_.emplace(key, out).first->second;
  }

 private:
  const Model& model_;
  kernels::KvFormat kv_format_;
  std::map<std::pair<std::vector<int32_t>, int>, std::vector<int32_t>> memo_;
};

}  // namespace kvstash::testing
