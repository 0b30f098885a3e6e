#include "serve/tokenize_api.h"

#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

using json = nlohmann::json;

constexpr int kVocab = 512;  // stories260K's tok512

std::unique_ptr<Tokenizer> Tok512() {
  auto t = Tokenizer::FromLlama2c(
      testing::SharedPath("models/stories260K/tok512.bin"), kVocab);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(t).value() : nullptr;
}

TokenizeRequest TokenizeOk(std::string_view body) {
  auto r = ParseTokenizeRequest(body, ParseLimits{});
  if (const ApiError* e = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << body << " -> " << e->ToJson();
    return {};
  }
  return std::get<TokenizeRequest>(std::move(r));
}

// `body` must get a 400 (or `status`) naming `param` ("" for none).
void ExpectTokenizeError(std::string_view body, const std::string& param,
                         int status = 400) {
  SCOPED_TRACE(body);
  auto r = ParseTokenizeRequest(body, ParseLimits{.max_body_bytes = 256});
  ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << "accepted";
  const ApiError& e = std::get<ApiError>(r);
  EXPECT_EQ(e.http_status, status) << e.message;
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, param) << e.message;
  EXPECT_FALSE(e.message.empty());
}

void ExpectDetokenizeError(std::string_view body, const std::string& param) {
  SCOPED_TRACE(body);
  auto r = ParseDetokenizeRequest(body, ParseLimits{}, kVocab);
  ASSERT_TRUE(std::holds_alternative<ApiError>(r)) << "accepted";
  const ApiError& e = std::get<ApiError>(r);
  EXPECT_EQ(e.http_status, 400) << e.message;
  EXPECT_EQ(e.param, param) << e.message;
}

TEST(TokenizeParseTest, DefaultsAndFields) {
  TokenizeRequest r = TokenizeOk(R"({"content":"hi"})");
  EXPECT_EQ(r.content, "hi");
  EXPECT_FALSE(r.add_special);
  EXPECT_TRUE(r.parse_special);
  EXPECT_FALSE(r.with_pieces);
  r = TokenizeOk(R"({"content":"","add_special":true,"parse_special":false,)"
                 R"("with_pieces":true,"model":"ignored"})");
  EXPECT_EQ(r.content, "");
  EXPECT_TRUE(r.add_special);
  EXPECT_FALSE(r.parse_special);
  EXPECT_TRUE(r.with_pieces);
  r = TokenizeOk(R"({"content":"x","parse_special":null})");
  EXPECT_TRUE(r.parse_special);
}

TEST(TokenizeParseTest, BadBodiesNameTheParam) {
  ExpectTokenizeError(R"({})", "content");
  ExpectTokenizeError(R"({"content":null})", "content");
  ExpectTokenizeError(R"({"content":5})", "content");
  ExpectTokenizeError(R"({"content":["a"]})", "content");
  ExpectTokenizeError(R"({"content":"a","add_special":1})", "add_special");
  ExpectTokenizeError(R"({"content":"a","parse_special":"no"})",
                      "parse_special");
  ExpectTokenizeError(R"({"content":"a","with_pieces":[]})", "with_pieces");
  // The body as a whole.
  ExpectTokenizeError(R"({"content":)", "");
  ExpectTokenizeError(R"(["content"])", "");
  ExpectTokenizeError(R"({"content":"a","n":1e999})", "");
  ExpectTokenizeError(std::string(65, '[') + std::string(65, ']'), "");
  ExpectTokenizeError(R"({"content":")" + std::string(300, 'a') + R"("})", "",
                      413);
}

TEST(DetokenizeParseTest, IdsInTheVocabulary) {
  auto r = ParseDetokenizeRequest(R"({"tokens":[1,403,511]})", ParseLimits{},
                                  kVocab);
  ASSERT_TRUE(std::holds_alternative<std::vector<int32_t>>(r));
  EXPECT_EQ(std::get<std::vector<int32_t>>(r),
            (std::vector<int32_t>{1, 403, 511}));
  r = ParseDetokenizeRequest(R"({"tokens":[]})", ParseLimits{}, kVocab);
  ASSERT_TRUE(std::holds_alternative<std::vector<int32_t>>(r));
  EXPECT_TRUE(std::get<std::vector<int32_t>>(r).empty());

  ExpectDetokenizeError(R"({})", "tokens");
  ExpectDetokenizeError(R"({"tokens":"1 2"})", "tokens");
  ExpectDetokenizeError(R"({"tokens":[1,"2"]})", "tokens[1]");
  ExpectDetokenizeError(R"({"tokens":[1.5]})", "tokens[0]");
  ExpectDetokenizeError(R"({"tokens":[3,512]})", "tokens[1]");
  ExpectDetokenizeError(R"({"tokens":[-1]})", "tokens[0]");
  ExpectDetokenizeError(R"({"tokens":[18446744073709551615]})", "tokens[0]");
  ExpectDetokenizeError(R"({"tokens":[[1]]})", "tokens[0]");
}

TEST(TokenizeResponseTest, IdsBosAndSpecialText) {
  std::unique_ptr<Tokenizer> tok = Tok512();
  ASSERT_NE(tok, nullptr);
  const auto ids = [&](const TokenizeRequest& r) {
    return json::parse(TokenizeResponse(*tok, r))["tokens"]
        .get<std::vector<int32_t>>();
  };
  const std::string text = "Once upon a time";
  EXPECT_EQ(ids({.content = text}), tok->Encode(text, /*add_bos=*/false));
  EXPECT_EQ(ids({.content = text, .add_special = true}),
            tok->Encode(text, /*add_bos=*/true));
  EXPECT_EQ(ids({.content = text, .add_special = true})[0], tok->bos());
  // BOS's text ("\n<s>\n" in llama2.c vocabularies) is BOS only when
  // special text is parsed.
  const std::string bos = tok->TokenText(tok->bos());
  EXPECT_EQ(bos, "\n<s>\n");
  EXPECT_EQ(ids({.content = "Once" + bos}),
            (std::vector<int32_t>{403, tok->bos()}));
  EXPECT_EQ(ids({.content = "Once" + bos, .parse_special = false}),
            tok->Encode("Once" + bos, false));
  EXPECT_GT(ids({.content = bos, .parse_special = false}).size(), 1u);
  EXPECT_EQ(json::parse(TokenizeResponse(*tok, {.content = ""})),
            json::parse(R"({"tokens":[]})"));
}

TEST(TokenizeResponseTest, PiecesAreTextOrBytes) {
  std::unique_ptr<Tokenizer> tok = Tok512();
  ASSERT_NE(tok, nullptr);
  // BOS, "Once", and "😀", which has no piece in tok512: its four byte
  // tokens, each invalid UTF-8 alone.
  const std::string text = "\n<s>\nOnce\xF0\x9F\x98\x80";
  const json j = json::parse(
      TokenizeResponse(*tok, {.content = text, .with_pieces = true}));
  EXPECT_EQ(j, json::parse(R"({"tokens":[
      {"id":1,"piece":"\n<s>\n"},
      {"id":403,"piece":" Once"},
      {"id":243,"piece":[240]},
      {"id":162,"piece":[159]},
      {"id":155,"piece":[152]},
      {"id":131,"piece":[128]}]})"));
}

TEST(DetokenizeResponseTest, RoundTripAndInvalidUtf8) {
  std::unique_ptr<Tokenizer> tok = Tok512();
  ASSERT_NE(tok, nullptr);
  const std::string text = "Lily saw a big red ball in the park.";
  for (bool bos : {false, true}) {
    EXPECT_EQ(json::parse(DetokenizeResponse(*tok, tok->Encode(text, bos))),
              json({{"content", text}}));
  }
  // A lone lead byte (0xC3, byte token 3 + 0xC3) is written as U+FFFD.
  EXPECT_EQ(json::parse(
                DetokenizeResponse(*tok, std::vector<int32_t>{403, 3 + 0xC3})),
            json({{"content", "Once\xEF\xBF\xBD"}}));
}

}  // namespace
}  // namespace kvstash
