// What a model file's reader must survive, shared by the model-file fuzz
// harnesses and tests/hostile_files_test.cc: a file that does not load gives
// an error with a message; a model that loads must tokenize, decode and run
// a short forward pass (what a server does right after), so a file that
// passes the reader's checks but lies about its shapes is caught here, not in
// production. A broken promise aborts (FUZZ_CHECK).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/local_kv_cache.h"
#include "engine/transformer.h"
#include "fuzz/fuzz_support.h"
#include "model/chat_template.h"
#include "model/model.h"

namespace kvstash::fuzz {

// Returns whether the model loaded.
inline bool LoadAndUse(const std::string& model_path,
                       const std::string& tokenizer_path) {
  Result<std::unique_ptr<Model>> model =
      Model::Load(model_path, tokenizer_path);
  if (!model.ok()) {
    FUZZ_CHECK(!model.status().message().empty());
    return false;
  }
  const Model& m = **model;
  const ModelConfig& c = m.config();
  std::vector<int32_t> ids = m.tokenizer().Encode("Once upon a time", true);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < c.vocab_size);
  if (ids.empty()) ids.push_back(0);
  ids.resize(std::min<size_t>(ids.size(), 4));
  (void)m.tokenizer().Decode(ids);
  LocalKvCache kv(c.n_layers, c.n_kv_heads, c.head_dim, int(ids.size()));
  std::vector<float> logits(size_t(c.vocab_size));
  Transformer t(m);
  FUZZ_CHECK(t.Forward(ids, 0, kv, false, logits.data()).ok());
  if (!m.chat_template().empty()) {
    const ChatMessage user{"user", "hi"};
    (void)RenderChat(DetectChatTemplate(m.chat_template()), {&user, 1}, true);
  }
  return true;
}

}  // namespace kvstash::fuzz
