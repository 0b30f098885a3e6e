// End-to-end tests of POST /tokenize, POST /detokenize (llama.cpp's shapes)
// and the model details GET /v1/models reports: the real stories260K model
// behind a Scheduler, a KvManager (K as q8, V as f16, a zstd disk tier) and
// an HttpServer on a loopback port, driven by cpp-httplib.
#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kvcache/kv_manager.h"
#include "model/model.h"
#include "serve/http_server.h"
#include "serve/scheduler.h"
#include "serve/stack.h"
#include "store/disk_tier.h"
#include "tests/testing/running_server.h"
#include "tests/testing/shared_data.h"
#include "tests/testing/stories.h"

namespace kvstash {
namespace {

using testing::ExpectApiError;
using testing::Get;
using testing::HttpReply;
using testing::ParseJson;
using testing::Post;
using testing::RunningServer;
using Json = nlohmann::json;

constexpr int kContext = 256;
constexpr int kBlockTokens = 16;
constexpr size_t kMaxBodyBytes = size_t{64} << 10;
constexpr char kStory[] =
    "Once upon a time, there was a little girl named Lily. She loved to play "
    "outside in the sunshine.";

class TokenizeServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = testing::LoadStories().release();
    store::DiskTierOptions disk_options;
    disk_options.dir = testing::TempDir("tokenize_server_disk");
    auto disk = store::DiskTier::Open(disk_options);
    if (!disk.ok()) {
      ADD_FAILURE() << "DiskTier::Open: " << disk.status().ToString();
      return;
    }
    disk_ = disk->release();
    ServingStackOptions so;
    so.server = Options();
    so.kv.layout.block_tokens = kBlockTokens;
    so.kv.layout.kv = {kernels::KvType::kQ8, kernels::KvType::kF16};
    so.kv.capacity_bytes = size_t{4} << 20;
    so.kv.prefault = false;
    so.kv.tiers = {{disk_}};
    so.kv.tier_codec = store::Codec::kZstd;
    so.scheduler.context = kContext;
    stack_ = testing::StartStack(*model_, so).release();
    if (stack_ == nullptr) return;
    kv_ = &stack_->kv();
    scheduler_ = &stack_->scheduler();
  }

  static void TearDownTestSuite() {
    delete stack_;
    delete disk_;
    delete model_;
    stack_ = nullptr;
    scheduler_ = nullptr;
    kv_ = nullptr;
    disk_ = nullptr;
    model_ = nullptr;
  }

  static ServerOptions Options() {
    ServerOptions so;
    so.port = 0;
    so.max_body_bytes = kMaxBodyBytes;
    return so;
  }

  void SetUp() override {
    ASSERT_NE(stack_, nullptr) << "the suite's server did not start";
    port_ = stack_->server().port();
  }

  const Tokenizer& tok() const { return model_->tokenizer(); }

  // The ids /tokenize answers for `body`; a test failure unless it is 200
  // {"tokens":[ids]}.
  std::vector<int32_t> TokenIds(const Json& body) {
    const HttpReply r = Post(port_, "/tokenize", body);
    EXPECT_EQ(r.status, 200) << r.body;
    const Json j = ParseJson(r.body);
    if (!j.is_object() || !j.contains("tokens") || !j["tokens"].is_array()) {
      ADD_FAILURE() << r.body;
      return {};
    }
    for (const Json& t : j["tokens"]) {
      if (!t.is_number_integer()) {
        ADD_FAILURE() << r.body;
        return {};
      }
    }
    return j["tokens"].get<std::vector<int32_t>>();
  }

  static inline Model* model_ = nullptr;
  static inline store::DiskTier* disk_ = nullptr;
  static inline ServingStack* stack_ = nullptr;  // over model_ and disk_
  static inline kvcache::KvManager* kv_ = nullptr;
  static inline Scheduler* scheduler_ = nullptr;
  int port_ = 0;
};

TEST_F(TokenizeServerTest, TokenizeDetokenizeRoundTrip) {
  for (bool add_special : {false, true}) {
    SCOPED_TRACE(add_special ? "add_special" : "plain");
    const std::vector<int32_t> ids =
        TokenIds({{"content", kStory}, {"add_special", add_special}});
    EXPECT_EQ(ids, tok().Encode(kStory, add_special));
    const HttpReply r = Post(port_, "/detokenize", Json{{"tokens", ids}});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.content_type.rfind("application/json", 0), 0u);
    EXPECT_EQ(ParseJson(r.body), Json({{"content", kStory}})) << r.body;
  }
  // Empty both ways.
  EXPECT_TRUE(TokenIds({{"content", ""}}).empty());
  EXPECT_EQ(
      ParseJson(
          Post(port_, "/detokenize", std::string(R"({"tokens":[]})")).body),
      Json({{"content", ""}}));
}

TEST_F(TokenizeServerTest, AddSpecialPutsBosFirst) {
  const std::vector<int32_t> plain = TokenIds({{"content", kStory}});
  const std::vector<int32_t> with_bos =
      TokenIds({{"content", kStory}, {"add_special", true}});
  ASSERT_EQ(with_bos.size(), plain.size() + 1);
  EXPECT_EQ(with_bos[0], tok().bos());
  EXPECT_EQ(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()), plain);
  EXPECT_NE(plain[0], tok().bos());
}

// Each entry is {"id", "piece"}: the token's text, or its bytes when they
// are not valid UTF-8 alone; the pieces' bytes spell the content (with the
// tokenizer's prefix space).
TEST_F(TokenizeServerTest, WithPiecesShapes) {
  const std::string content = "Lily smiled \xF0\x9F\x98\x80";  // an emoji
  const HttpReply r = Post(port_, "/tokenize",
                           Json{{"content", content}, {"with_pieces", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = ParseJson(r.body);
  ASSERT_TRUE(j.contains("tokens") && j["tokens"].is_array()) << r.body;
  std::vector<int32_t> ids;
  std::string spelled;
  int byte_pieces = 0;
  for (const Json& t : j["tokens"]) {
    ASSERT_TRUE(t.is_object() && t.size() == 2 && t["id"].is_number_integer())
        << t.dump();
    ids.push_back(t["id"].get<int32_t>());
    const Json& piece = t["piece"];
    if (piece.is_string()) {
      spelled += piece.get<std::string>();
      continue;
    }
    ASSERT_TRUE(piece.is_array()) << t.dump();
    ++byte_pieces;
    for (const Json& b : piece) {
      ASSERT_TRUE(b.is_number_unsigned() && b.get<int>() < 256) << t.dump();
      spelled += static_cast<char>(b.get<int>());
    }
  }
  EXPECT_EQ(ids, tok().Encode(content, false));
  EXPECT_EQ(spelled, " " + content);
  EXPECT_EQ(byte_pieces, 4) << r.body;  // the emoji has no piece in tok512
  EXPECT_EQ(j["tokens"][0], Json({{"id", ids[0]}, {"piece", " Lily"}}))
      << r.body;
}

TEST_F(TokenizeServerTest, ControlTokenTextAndParseSpecial) {
  const std::string bos_text = tok().TokenText(tok().bos());  // "\n<s>\n"
  const std::string content = "Lily" + bos_text + "Tom";
  const std::vector<int32_t> parsed = TokenIds({{"content", content}});
  EXPECT_EQ(parsed, tok().EncodeWithSpecialTokens(content, false));
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), tok().bos()), 1);
  const std::vector<int32_t> plain =
      TokenIds({{"content", content}, {"parse_special", false}});
  EXPECT_EQ(plain, tok().Encode(content, false));
  EXPECT_EQ(std::count(plain.begin(), plain.end(), tok().bos()), 0);
  // BOS gives no text back (and the prefix space of the text after it is
  // dropped, as at the start); its text as plain tokens gives it back.
  EXPECT_EQ(ParseJson(Post(port_, "/detokenize", Json{{"tokens", parsed}}).body)
                .value("content", ""),
            "LilyTom");
  EXPECT_EQ(ParseJson(Post(port_, "/detokenize", Json{{"tokens", plain}}).body)
                .value("content", ""),
            content);
}

TEST_F(TokenizeServerTest, BadBodiesGetOpenAiErrors) {
  ExpectApiError(Post(port_, "/tokenize", std::string(R"({})")), 400,
                 "no content", "content");
  ExpectApiError(Post(port_, "/tokenize", std::string(R"({"content":7})")), 400,
                 "content a number", "content");
  ExpectApiError(Post(port_, "/tokenize",
                      std::string(R"({"content":"a","add_special":"yes"})")),
                 400, "add_special a string", "add_special");
  ExpectApiError(Post(port_, "/tokenize",
                      std::string(R"({"content":"a","parse_special":0})")),
                 400, "parse_special a number", "parse_special");
  ExpectApiError(Post(port_, "/tokenize",
                      std::string(R"({"content":"a","with_pieces":{}})")),
                 400, "with_pieces an object", "with_pieces");
  ExpectApiError(Post(port_, "/tokenize", std::string(R"({"content":)")), 400,
                 "not JSON");
  ExpectApiError(Post(port_, "/detokenize", std::string(R"({})")), 400,
                 "no tokens", "tokens");
  ExpectApiError(Post(port_, "/detokenize", std::string(R"({"tokens":"1 2"})")),
                 400, "tokens a string", "tokens");
  ExpectApiError(
      Post(port_, "/detokenize", std::string(R"({"tokens":[1,"2"]})")), 400,
      "an id a string", "tokens[1]");
  ExpectApiError(
      Post(port_, "/detokenize", Json{{"tokens", {1, tok().vocab_size()}}}),
      400, "an id past the vocabulary", "tokens[1]");
  ExpectApiError(Post(port_, "/detokenize", std::string(R"({"tokens":[-1]})")),
                 400, "a negative id", "tokens[0]");
  // The screening every POST gets, and httplib's body limit.
  httplib::Client c = testing::NewClient(port_);
  ExpectApiError(testing::FromResult(
                     c.Post("/tokenize", R"({"content":"a"})", "text/plain")),
                 415, "not application/json");
  ExpectApiError(Post(port_, "/tokenize",
                      Json{{"content", std::string(kMaxBodyBytes + 1, 'a')}}),
                 413, "a body over the limit");
  // The server still answers on a fresh connection.
  EXPECT_EQ(TokenIds({{"content", "Lily"}}), tok().Encode("Lily", false));
}

TEST_F(TokenizeServerTest, ApiKeyIsRequiredWhenSet) {
  ServerOptions so = Options();
  Result<ApiKeys> keys = ApiKeys::Parse(
      "admin-key-0123456789 ops admin\ntenant-key-0123456789 acme\n");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  so.api_keys = *keys;
  auto keyed = RunningServer::Start(*model_, *scheduler_, *kv_, so);
  ASSERT_NE(keyed, nullptr);
  const int port = keyed->port();
  for (const char* path : {"/tokenize", "/detokenize"}) {
    SCOPED_TRACE(path);
    const Json body = std::string(path) == "/tokenize"
                          ? Json{{"content", kStory}}
                          : Json{{"tokens", tok().Encode(kStory, false)}};
    ExpectApiError(Post(port, path, body), 401, "no key");
    ExpectApiError(Post(port, path, body, {{"Authorization", "Bearer wrong"}}),
                   401, "wrong key");
    for (const char* key : {"admin-key-0123456789", "tenant-key-0123456789"}) {
      const HttpReply r = Post(
          port, path, body, {{"Authorization", std::string("Bearer ") + key}});
      EXPECT_EQ(r.status, 200) << key << ": " << r.body;
    }
  }
}

TEST_F(TokenizeServerTest, ModelsShowTheContextAndTheKvCache) {
  const HttpReply r = Get(port_, "/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  const Json j = ParseJson(r.body);
  ASSERT_TRUE(j.contains("data") && j["data"].size() == 1) << r.body;
  const Json& m = j["data"][0];
  EXPECT_EQ(m.value("max_model_len", -1), kContext) << r.body;
  // The values and names /kv/stats reports.
  const Json stats = ParseJson(Get(port_, "/kv/stats").body);
  EXPECT_EQ(m["kvstash"], Json({{"kv_type_k", "q8"},
                                {"kv_type_v", "f16"},
                                {"block_tokens", kBlockTokens},
                                {"capacity_tokens", stats["capacity_tokens"]},
                                {"tier_codec", "zstd"},
                                {"tiers", {"disk"}}}))
      << r.body;
  EXPECT_EQ(stats.value("kv_type_k", ""), "q8");
  EXPECT_EQ(stats.value("tier_codec", ""), "zstd");
  EXPECT_GT(stats.value("capacity_tokens", 0), 0);
}

}  // namespace
}  // namespace kvstash
