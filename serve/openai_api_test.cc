#include "serve/openai_api.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace kvstash {
namespace {

using json = nlohmann::json;

constexpr Endpoint kCompletions = Endpoint::kCompletions;
constexpr Endpoint kChat = Endpoint::kChatCompletions;

CompletionRequest ParseOk(Endpoint endpoint, std::string_view body,
                          const ParseLimits& limits = {}) {
  auto r = ParseCompletionRequest(endpoint, body, limits);
  if (const ApiError* e = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << body << " -> " << e->ToJson();
    return {};
  }
  return std::get<CompletionRequest>(std::move(r));
}

ApiError ParseError(Endpoint endpoint, std::string_view body,
                    const ParseLimits& limits = {}) {
  auto r = ParseCompletionRequest(endpoint, body, limits);
  if (!std::holds_alternative<ApiError>(r)) {
    ADD_FAILURE() << body << " was accepted";
    return {};
  }
  return std::get<ApiError>(std::move(r));
}

// `fields` added to a minimal valid body of `endpoint` must give a 400
// naming `param`.
void ExpectRejected(Endpoint endpoint, const std::string& fields,
                    const std::string& param, const ParseLimits& limits = {}) {
  const std::string base =
      endpoint == kCompletions
          ? R"({"prompt":"hi")"
          : R"({"messages":[{"role":"user","content":"hi"}])";
  const std::string body = base + (fields.empty() ? "" : ",") + fields + "}";
  SCOPED_TRACE(body);
  const ApiError e = ParseError(endpoint, body, limits);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, param) << e.message;
  EXPECT_FALSE(e.message.empty());
}

void ExpectRejectedBoth(const std::string& fields, const std::string& param) {
  ExpectRejected(kCompletions, fields, param);
  ExpectRejected(kChat, fields, param);
}

TEST(OpenAiParseTest, CompletionWithEveryField) {
  const CompletionRequest r = ParseOk(kCompletions, R"({
    "model": "stories", "prompt": "Once upon a time", "max_tokens": 32,
    "temperature": 0.7, "top_p": 0.9, "seed": 42, "stop": ["\n\n", "END"],
    "stream": true, "stream_options": {"include_usage": true}, "n": 1,
    "cache_salt": "tenant-a", "top_k": 40, "min_p": 0.05,
    "repetition_penalty": 1.1, "logprobs": null, "echo": false,
    "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0.0,
    "logit_bias": {}, "suffix": "", "response_format": {"type": "text"},
    "user": "someone", "some_future_field": {"nested": [1, 2, 3]}})");
  EXPECT_EQ(r.endpoint, kCompletions);
  EXPECT_EQ(r.model, "stories");
  EXPECT_EQ(std::get<std::string>(r.prompt), "Once upon a time");
  EXPECT_EQ(r.max_tokens, 32);
  EXPECT_FLOAT_EQ(r.temperature, 0.7f);
  EXPECT_FLOAT_EQ(r.top_p, 0.9f);
  EXPECT_EQ(r.seed, 42u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.cache_salt, "tenant-a");
  EXPECT_EQ(r.top_k, 40);
  EXPECT_FLOAT_EQ(r.min_p, 0.05f);
  EXPECT_FLOAT_EQ(r.repetition_penalty, 1.1f);
  EXPECT_TRUE(r.messages.empty());
}

TEST(OpenAiParseTest, Defaults) {
  const CompletionRequest r = ParseOk(kCompletions, R"({"prompt":"x"})");
  EXPECT_FALSE(r.model.has_value());
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_FLOAT_EQ(r.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.top_p, 1.0f);
  EXPECT_EQ(r.top_k, 0);
  EXPECT_FLOAT_EQ(r.min_p, 0.0f);
  EXPECT_FLOAT_EQ(r.repetition_penalty, 1.0f);
  EXPECT_FALSE(r.seed.has_value());
  EXPECT_TRUE(r.stop.empty());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.include_usage);
  EXPECT_FALSE(r.cache_salt.has_value());
}

TEST(OpenAiParseTest, NullMeansAbsent) {
  const CompletionRequest r = ParseOk(kChat, R"({
    "messages": [{"role": "user", "content": "x"}], "model": null,
    "max_tokens": null, "max_completion_tokens": null, "temperature": null,
    "top_p": null, "seed": null, "stop": null, "stream": null,
    "stream_options": null, "n": null, "cache_salt": null, "tools": null,
    "tool_choice": null, "logprobs": null, "top_logprobs": null,
    "response_format": null, "logit_bias": null})");
  EXPECT_FALSE(r.model.has_value());
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_FLOAT_EQ(r.temperature, 1.0f);
  EXPECT_TRUE(r.stop.empty());
}

TEST(OpenAiParseTest, PromptForms) {
  EXPECT_EQ(std::get<std::string>(
                ParseOk(kCompletions, R"({"prompt":["only one"]})").prompt),
            "only one");
  EXPECT_EQ(
      std::get<std::string>(ParseOk(kCompletions, R"({"prompt":""})").prompt),
      "");
  EXPECT_EQ(
      std::get<std::vector<int32_t>>(
          ParseOk(kCompletions, R"({"prompt":[1, 15043, 2147483647]})").prompt),
      (std::vector<int32_t>{1, 15043, 2147483647}));

  EXPECT_EQ(ParseError(kCompletions, R"({"model":"m"})").param, "prompt");
  for (const char* bad :
       {R"({"prompt":[]})", R"({"prompt":5})", R"({"prompt":{"text":"x"}})",
        R"({"prompt":["a","b"]})", R"({"prompt":[[1,2]]})",
        R"({"prompt":[[1],[2]]})"}) {
    SCOPED_TRACE(bad);
    const ApiError e = ParseError(kCompletions, bad);
    EXPECT_EQ(e.http_status, 400);
    EXPECT_EQ(e.param, "prompt");
  }
  EXPECT_NE(
      ParseError(kCompletions, R"({"prompt":["a","b"]})").message.find("batch"),
      std::string::npos);
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt":[1,"a"]})").param,
            "prompt[1]");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt":[1,-1]})").param,
            "prompt[1]");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt":[2147483648]})").param,
            "prompt[0]");
  EXPECT_EQ(ParseError(kCompletions, R"({"prompt":[1.5]})").param, "prompt[0]");
}

TEST(OpenAiParseTest, ChatMessageForms) {
  const CompletionRequest r = ParseOk(kChat, R"({"messages":[
    {"role":"developer","content":"Be terse."},
    {"role":"user","content":[{"type":"text","text":"Hello, "},
                              {"type":"text","text":"world"}], "name":"bob"},
    {"role":"assistant","content":null},
    {"role":"assistant"},
    {"role":"user","content":[]}],
    "max_tokens": 10, "max_completion_tokens": 20})");
  ASSERT_EQ(r.messages.size(), 5u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[0].content, "Be terse.");
  EXPECT_EQ(r.messages[1].role, "user");
  EXPECT_EQ(r.messages[1].content, "Hello, world");
  EXPECT_EQ(r.messages[2].role, "assistant");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(r.messages[3].content, "");
  EXPECT_EQ(r.messages[4].content, "");
  EXPECT_EQ(r.max_tokens, 20);  // max_completion_tokens wins
  EXPECT_EQ(r.endpoint, kChat);
}

TEST(OpenAiParseTest, ChatMessageRejections) {
  struct Case {
    const char* body;
    const char* param;
  };
  const Case cases[] = {
      {R"({})", "messages"},
      {R"({"messages":[]})", "messages"},
      {R"({"messages":"hi"})", "messages"},
      {R"({"messages":["hi"]})", "messages[0]"},
      {R"({"messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":7,"content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"wizard","content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"user","content":"x"},
                       {"role":"tool","content":"42","tool_call_id":"a"}]})",
       "messages[1].role"},
      {R"({"messages":[{"role":"user"}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":5}]})", "messages[0].content"},
      {R"({"messages":[{"role":"user","content":[{"type":"text","text":"a"},
         {"type":"image_url","image_url":{"url":"http://x/y.png"}}]}]})",
       "messages[0].content[1].type"},
      {R"({"messages":[{"role":"user","content":[{"text":"a"}]}]})",
       "messages[0].content[0].type"},
      {R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})",
       "messages[0].content[0].text"},
      {R"({"messages":[{"role":"user","content":["a"]}]})",
       "messages[0].content[0]"},
      {R"({"messages":[{"role":"assistant","content":null,
         "tool_calls":[{"id":"c","type":"function"}]}]})",
       "messages[0].tool_calls"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    const ApiError e = ParseError(kChat, c.body);
    EXPECT_EQ(e.http_status, 400);
    EXPECT_EQ(e.param, c.param) << e.message;
  }
}

TEST(OpenAiParseTest, MaxTokens) {
  ParseLimits limits;
  limits.max_tokens = 100;
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt":"x","max_tokens":100})", limits)
                .max_tokens,
            100);
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt":"x","max_tokens":1})", limits)
                .max_tokens,
            1);
  for (const char* v : {"0", "-1", "101", "\"10\"", "10.5",
                        "99999999999999999999999", "true"}) {
    ExpectRejected(kCompletions, std::string(R"("max_tokens":)") + v,
                   "max_tokens", limits);
    ExpectRejected(kChat, std::string(R"("max_tokens":)") + v, "max_tokens",
                   limits);
    ExpectRejected(kChat, std::string(R"("max_completion_tokens":)") + v,
                   "max_completion_tokens", limits);
  }
}

TEST(OpenAiParseTest, SamplingRanges) {
  const CompletionRequest edge =
      ParseOk(kCompletions,
              R"({"prompt":"x","temperature":0,"top_p":1,"min_p":1,"top_k":-1,)"
              R"("repeat_penalty":0.5,"seed":18446744073709551615})");
  EXPECT_FLOAT_EQ(edge.temperature, 0.0f);
  EXPECT_EQ(edge.top_k, -1);
  EXPECT_FLOAT_EQ(edge.repetition_penalty, 0.5f);
  EXPECT_EQ(edge.seed, 18446744073709551615u);
  EXPECT_FLOAT_EQ(ParseOk(kChat, R"({"messages":[{"role":"user","content":"x"}],
                                     "temperature":2})")
                      .temperature,
                  2.0f);

  const std::pair<const char*, const char*> bad[] = {
      {R"("temperature":-0.1)", "temperature"},
      {R"("temperature":2.01)", "temperature"},
      {R"("temperature":"0.5")", "temperature"},
      {R"("top_p":0)", "top_p"},
      {R"("top_p":1.5)", "top_p"},
      {R"("top_p":[1])", "top_p"},
      {R"("min_p":-0.5)", "min_p"},
      {R"("min_p":1.01)", "min_p"},
      {R"("top_k":-2)", "top_k"},
      {R"("top_k":2.5)", "top_k"},
      {R"("top_k":4294967296)", "top_k"},
      {R"("repetition_penalty":0)", "repetition_penalty"},
      {R"("repetition_penalty":-1)", "repetition_penalty"},
      {R"("repeat_penalty":1e300)", "repeat_penalty"},
      {R"("repetition_penalty":1.1,"repeat_penalty":1.1)", "repeat_penalty"},
      {R"("seed":-1)", "seed"},
      {R"("seed":1.5)", "seed"},
      {R"("seed":1e30)", "seed"},
      {R"("seed":"42")", "seed"},
  };
  for (const auto& [fields, param] : bad) ExpectRejectedBoth(fields, param);
}

TEST(OpenAiParseTest, Stop) {
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt":"x","stop":"\n"})").stop,
            (std::vector<std::string>{"\n"}));
  EXPECT_TRUE(
      ParseOk(kCompletions, R"({"prompt":"x","stop":[]})").stop.empty());
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt":"x","stop":["a","b","c","d"]})")
                .stop.size(),
            4u);
  ExpectRejectedBoth(R"("stop":"")", "stop");
  ExpectRejectedBoth(R"("stop":["a","b","c","d","e"])", "stop");
  ExpectRejectedBoth(R"("stop":3)", "stop");
  ExpectRejectedBoth(R"("stop":{"a":1})", "stop");
  ExpectRejectedBoth(R"("stop":["a",""])", "stop[1]");
  ExpectRejectedBoth(R"("stop":[1])", "stop[0]");
}

TEST(OpenAiParseTest, StreamAndOptions) {
  EXPECT_FALSE(ParseOk(kChat, R"({"messages":[{"role":"user","content":"x"}],
                         "stream":true})")
                   .include_usage);
  EXPECT_FALSE(ParseOk(kCompletions, R"({"prompt":"x","stream":true,
                                         "stream_options":{}})")
                   .include_usage);
  ExpectRejectedBoth(R"("stream":"yes")", "stream");
  ExpectRejectedBoth(R"("stream":1)", "stream");
  ExpectRejectedBoth(R"("stream_options":{"include_usage":true})",
                     "stream_options");
  ExpectRejectedBoth(R"("stream":false,"stream_options":{})", "stream_options");
  ExpectRejectedBoth(R"("stream":true,"stream_options":true)",
                     "stream_options");
  ExpectRejectedBoth(R"("stream":true,"stream_options":{"include_usage":1})",
                     "stream_options.include_usage");
}

TEST(OpenAiParseTest, ChoicesLogprobsEchoPenaltiesAndBias) {
  CompletionRequest c = ParseOk(kCompletions, R"({"prompt":"x","n":3,
    "best_of":5,"logprobs":4,"echo":true,"max_tokens":0,
    "presence_penalty":0.5,"frequency_penalty":-1.5,
    "logit_bias":{"7":100,"12":-100,"0":0.5},"stop_token_ids":[2,9]})");
  EXPECT_EQ(c.n, 3);
  EXPECT_EQ(c.best_of, 5);
  EXPECT_EQ(c.logprobs, 4);
  EXPECT_TRUE(c.echo);
  EXPECT_EQ(c.max_tokens, 0);
  EXPECT_FLOAT_EQ(c.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(c.frequency_penalty, -1.5f);
  EXPECT_EQ(c.logit_bias.size(), 3u);
  EXPECT_EQ(c.stop_token_ids, (std::vector<int32_t>{2, 9}));
  const CompletionRequest plain =
      ParseOk(kCompletions, R"({"prompt":"x","n":2})");
  EXPECT_EQ(plain.best_of, 2);  // best_of defaults to n
  EXPECT_EQ(plain.logprobs, -1);
  EXPECT_FALSE(plain.echo);
  const CompletionRequest chat =
      ParseOk(kChat, R"({"messages":[{"role":"user","content":"x"}],"n":2,
      "logprobs":true,"top_logprobs":5})");
  EXPECT_EQ(chat.n, 2);
  EXPECT_EQ(chat.logprobs, 5);
  EXPECT_EQ(ParseOk(kChat, R"({"messages":[{"role":"user","content":"x"}],
      "logprobs":true})")
                .logprobs,
            0);

  ExpectRejectedBoth(R"("n":0)", "n");
  ExpectRejectedBoth(R"("n":129)", "n");
  ExpectRejectedBoth(R"("n":"1")", "n");
  ExpectRejectedBoth(R"("presence_penalty":2.5)", "presence_penalty");
  ExpectRejectedBoth(R"("frequency_penalty":-3)", "frequency_penalty");
  ExpectRejectedBoth(R"("frequency_penalty":"0")", "frequency_penalty");
  ExpectRejectedBoth(R"("logit_bias":{"50256":-101})", "logit_bias");
  ExpectRejectedBoth(R"("logit_bias":{"x":1})", "logit_bias");
  ExpectRejectedBoth(R"("logit_bias":{"-1":1})", "logit_bias");
  ExpectRejectedBoth(R"("logit_bias":{"99999999999":1})", "logit_bias");
  ExpectRejectedBoth(R"("logit_bias":{"1":"1"})", "logit_bias");
  ExpectRejectedBoth(R"("logit_bias":[])", "logit_bias");
  ExpectRejectedBoth(R"("stop_token_ids":[-1])", "stop_token_ids");
  ExpectRejectedBoth(R"("stop_token_ids":7)", "stop_token_ids");
  ExpectRejected(kCompletions, R"("logprobs":21)", "logprobs");
  ExpectRejected(kCompletions, R"("logprobs":true)", "logprobs");
  ExpectRejected(kCompletions, R"("echo":"no")", "echo");
  ExpectRejected(kCompletions, R"("n":3,"best_of":2)", "best_of");
  ExpectRejected(kCompletions, R"("best_of":2,"stream":true)", "best_of");
  ExpectRejected(kCompletions, R"("max_tokens":0)", "max_tokens");
  ExpectRejected(kChat, R"("max_tokens":0)", "max_tokens");
  ExpectRejected(kChat, R"("logprobs":1)", "logprobs");
  ExpectRejected(kChat, R"("top_logprobs":3)", "top_logprobs");
  ExpectRejected(kChat, R"("logprobs":true,"top_logprobs":21)", "top_logprobs");
}

TEST(OpenAiParseTest, UnsupportedValuesNameTheirParameter) {
  ExpectRejectedBoth(R"("response_format":{"type":"json_object"})",
                     "response_format");
  ExpectRejectedBoth(R"("response_format":{"type":"json_schema",)"
                     R"("json_schema":{"name":"x","schema":{}}})",
                     "response_format");
  ExpectRejectedBoth(R"("response_format":"text")", "response_format");

  ExpectRejected(kCompletions, R"("suffix":" end")", "suffix");

  ExpectRejected(kChat,
                 R"("tools":[{"type":"function","function":{"name":"f"}}])",
                 "tools");
  ExpectRejected(kChat, R"("tools":{})", "tools");
  ExpectRejected(kChat, R"("functions":[{"name":"f"}])", "functions");
  ExpectRejected(kChat, R"("tool_choice":"required")", "tool_choice");
  ExpectRejected(kChat,
                 R"("tool_choice":{"type":"function","function":{"name":"f"}})",
                 "tool_choice");
  ExpectRejected(kChat, R"("function_call":{"name":"f"})", "function_call");

  // The values that change nothing are accepted.
  ParseOk(kChat, R"({"messages":[{"role":"user","content":"x"}],
    "logprobs":false,"top_logprobs":0,"tools":[],"tool_choice":"none",
    "function_call":"auto","n":1,"presence_penalty":0})");
}

TEST(OpenAiParseTest, OtherFieldTypesAndCacheSalt) {
  ExpectRejectedBoth(R"("model":5)", "model");
  ExpectRejectedBoth(R"("cache_salt":"")", "cache_salt");
  ExpectRejectedBoth(R"("cache_salt":7)", "cache_salt");
  ExpectRejectedBoth(R"("cache_salt":")" + std::string(257, 's') + "\"",
                     "cache_salt");
  EXPECT_EQ(ParseOk(kCompletions, R"({"prompt":"x","cache_salt":")" +
                                      std::string(256, 's') + "\"}")
                .cache_salt->size(),
            256u);
}

TEST(OpenAiParseTest, KvCompression) {
  const CompletionRequest r = ParseOk(
      kCompletions,
      R"({"prompt":"x","kv_compression":{"policy":"snapkv","ratio":0.75}})");
  ASSERT_TRUE(r.kv_compression.has_value());
  EXPECT_EQ(r.kv_compression->policy, "snapkv");
  EXPECT_EQ(r.kv_compression->ratio, 0.75);
  EXPECT_FALSE(r.kv_compression->merge);
  const CompletionRequest chat =
      ParseOk(kChat, R"({"messages":[{"role":"user","content":"x"}],
        "kv_compression":{"policy":"knorm","merge":true}})");
  EXPECT_EQ(chat.kv_compression->ratio, 0.5);  // the default
  EXPECT_TRUE(chat.kv_compression->merge);
  // "none" turns a server default off: an empty policy.
  EXPECT_TRUE(ParseOk(kCompletions,
                      R"({"prompt":"x","kv_compression":{"policy":"none"}})")
                  .kv_compression->policy.empty());
  EXPECT_FALSE(ParseOk(kCompletions, R"({"prompt":"x"})").kv_compression);
  ExpectRejectedBoth(R"("kv_compression":"snapkv")", "kv_compression");
  ExpectRejectedBoth(R"("kv_compression":{"ratio":0.5})",
                     "kv_compression.policy");
  ExpectRejectedBoth(R"("kv_compression":{"policy":"nope"})",
                     "kv_compression.policy");
  ExpectRejectedBoth(R"("kv_compression":{"policy":"snapkv","ratio":1})",
                     "kv_compression.ratio");
  ExpectRejectedBoth(R"("kv_compression":{"policy":"snapkv","ratio":-0.1})",
                     "kv_compression.ratio");
  ExpectRejectedBoth(R"("kv_compression":{"policy":"snapkv","ratio":"1"})",
                     "kv_compression.ratio");
  ExpectRejectedBoth(R"("kv_compression":{"policy":"snapkv","budget":3})",
                     "kv_compression.budget");
}

TEST(OpenAiParseTest, MalformedBodies) {
  for (const char* body :
       {"", " ", "{", "[]", "null", "42", "\"str\"", "{\"prompt\":NaN}",
        "{\"prompt\":\"x\",\"temperature\":Infinity}",
        "{\"prompt\":\"x\"} trailing", "{'prompt':'x'}", "{\"prompt\":\"x\",}",
        "{\"prompt\":\"\\ud800\"}"}) {
    SCOPED_TRACE(body);
    const ApiError e = ParseError(kCompletions, body);
    EXPECT_EQ(e.http_status, 400);
    EXPECT_EQ(e.type, "invalid_request_error");
    EXPECT_TRUE(json::accept(e.ToJson()));
  }
  EXPECT_NE(ParseError(kCompletions, "[]").message.find("object"),
            std::string::npos);
  const ApiError e = ParseError(kCompletions, "{\"prompt\":NaN}");
  EXPECT_EQ(e.message.rfind("request body is not valid JSON: parse error", 0),
            0u)
      << e.message;
}

TEST(OpenAiParseTest, NumbersBeyondDoubleAreRejected) {
  for (const char* body : {R"({"prompt":"x","max_tokens":1e999})",
                           R"({"prompt":"x","temperature":-1e400})",
                           R"({"prompt":"x","unknown":[1e400]})"}) {
    SCOPED_TRACE(body);
    const ApiError e = ParseError(kCompletions, body);
    EXPECT_EQ(e.http_status, 400);
    EXPECT_NE(e.message.find("out of range"), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find("json.exception"), std::string::npos);
  }
}

TEST(OpenAiParseTest, InvalidUtf8IsRejectedAndTheErrorIsValidJson) {
  const std::string body = "{\"prompt\":\"ab\xff\xfe\xc3\"}";
  const ApiError e = ParseError(kCompletions, body);
  EXPECT_EQ(e.http_status, 400);
  const json parsed = json::parse(e.ToJson());
  EXPECT_EQ(parsed["error"]["type"], "invalid_request_error");
}

TEST(OpenAiParseTest, SizeAndDepthLimits) {
  ParseLimits limits;
  limits.max_body_bytes = 64;
  const ApiError big = ParseError(
      kCompletions, R"({"prompt":")" + std::string(100, 'x') + "\"}", limits);
  EXPECT_EQ(big.http_status, 413);
  EXPECT_TRUE(json::accept(big.ToJson()));

  // Deep nesting, in an unknown field and as the whole body.
  const std::string deep(200000, '[');
  EXPECT_EQ(ParseError(kCompletions, deep).http_status, 400);
  EXPECT_EQ(
      ParseError(kCompletions, deep + std::string(200000, ']')).http_status,
      400);
  const std::string nested_field = R"({"prompt":"x","junk":)" +
                                   std::string(100, '[') +
                                   std::string(100, ']') + "}";
  EXPECT_EQ(ParseError(kCompletions, nested_field).http_status, 400);
  // Within the limit, and brackets inside strings do not count.
  ParseOk(kCompletions, R"({"prompt":")" + std::string(1000, '[') +
                            R"(","junk":)" + std::string(30, '[') +
                            std::string(30, ']') + "}");
  ParseOk(kCompletions, R"({"prompt":"\"[[[[\\"})");
}

TEST(OpenAiParseTest, RandomMutationsNeverCrash) {
  const std::string base =
      R"({"model":"m","messages":[{"role":"system","content":"S"},)"
      R"({"role":"user","content":[{"type":"text","text":"hi"}]}],)"
      R"("max_tokens":16,"temperature":0.5,"stop":["x"],"stream":true,)"
      R"("stream_options":{"include_usage":true},"seed":7})";
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string body = base;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      const size_t pos = rng() % body.size();
      switch (rng() % 3) {
        case 0:
          body[pos] = static_cast<char>(rng() % 256);
          break;
        case 1:
          body.erase(pos, 1 + rng() % 8);
          break;
        default:
          body.insert(pos, 1, "[]{}\",:0-e\\\xc3"[rng() % 13]);
          break;
      }
      if (body.empty()) body.push_back('{');
    }
    for (Endpoint endpoint : {kCompletions, kChat}) {
      auto r = ParseCompletionRequest(endpoint, body, ParseLimits{});
      if (const ApiError* e = std::get_if<ApiError>(&r)) {
        EXPECT_EQ(e->http_status, 400);
        EXPECT_TRUE(json::accept(e->ToJson())) << body;
      } else {
        ++accepted;
      }
    }
  }
  EXPECT_GT(accepted, 0);
}

TEST(OpenAiErrorTest, Helpers) {
  struct Case {
    ApiError error;
    int status;
    const char* type;
  };
  const Case cases[] = {
      {ApiError::BadRequest("bad", "max_tokens"), 400, "invalid_request_error"},
      {ApiError::Unauthorized("no key"), 401, "authentication_error"},
      {ApiError::NotFound("no model", "model"), 404, "not_found_error"},
      {ApiError::PayloadTooLarge("big"), 413, "invalid_request_error"},
      {ApiError::TooManyRequests("busy"), 429, "rate_limit_error"},
      {ApiError::Internal("oops"), 500, "server_error"},
      {ApiError::Unavailable("loading"), 503, "unavailable_error"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.error.http_status, c.status);
    EXPECT_EQ(c.error.type, c.type);
    const json j = json::parse(c.error.ToJson());
    ASSERT_TRUE(j["error"].is_object());
    EXPECT_EQ(j["error"]["message"], c.error.message);
    EXPECT_EQ(j["error"]["type"], c.type);
    EXPECT_TRUE(j["error"]["code"].is_null());
    if (c.error.param.empty()) {
      EXPECT_TRUE(j["error"]["param"].is_null());
    } else {
      EXPECT_EQ(j["error"]["param"], c.error.param);
    }
  }
  EXPECT_EQ(ApiError::BadRequest("m", "n").ToJson(),
            R"({"error":{"message":"m","type":"invalid_request_error",)"
            R"("param":"n","code":null}})");
}

ResponseMeta Meta(Endpoint endpoint, bool include_usage = false) {
  ResponseMeta m;
  m.endpoint = endpoint;
  m.id = NewResponseId(endpoint);
  m.created = 1767225600;
  m.model = "stories260K";
  m.include_usage = include_usage;
  return m;
}

void ExpectUsage(const json& u, int64_t prompt, int64_t completion,
                 int64_t cached) {
  EXPECT_EQ(u["prompt_tokens"], prompt);
  EXPECT_EQ(u["completion_tokens"], completion);
  EXPECT_EQ(u["total_tokens"], prompt + completion);
  EXPECT_EQ(u["prompt_tokens_details"]["cached_tokens"], cached);
}

TEST(OpenAiResponseTest, Ids) {
  const std::string a = NewResponseId(kCompletions);
  const std::string b = NewResponseId(kCompletions);
  const std::string c = NewResponseId(kChat);
  EXPECT_EQ(a.rfind("cmpl-", 0), 0u);
  EXPECT_EQ(c.rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(a.size(), 5u + 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef", 5), std::string::npos);
  EXPECT_NE(a, b);
}

Usage TokenCounts(int64_t prompt, int64_t completion, int64_t cached) {
  Usage u;
  u.prompt_tokens = prompt;
  u.completion_tokens = completion;
  u.cached_tokens = cached;
  return u;
}

Choice Text(int index, std::string text,
            std::optional<FinishReason> finish = std::nullopt) {
  Choice c;
  c.index = index;
  c.text = std::move(text);
  c.finish = finish;
  return c;
}

TEST(OpenAiResponseTest, CompletionResponse) {
  const ResponseMeta meta = Meta(kCompletions);
  const json j = json::parse(
      CompletionResponse(meta, {Text(0, "Once upon", FinishReason::kLength)},
                         TokenCounts(5, 16, 3)));
  EXPECT_EQ(j["id"], meta.id);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1767225600);
  EXPECT_EQ(j["model"], "stories260K");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["text"], "Once upon");
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  ExpectUsage(j["usage"], 5, 16, 3);
}

TEST(OpenAiResponseTest, ChatResponse) {
  const ResponseMeta meta = Meta(kChat);
  const json j = json::parse(CompletionResponse(
      meta, {Text(0, "Hi!", FinishReason::kStop)}, TokenCounts(9, 2, 0)));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"], meta.id);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hi!");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(j["choices"][0].contains("text"));
  ExpectUsage(j["usage"], 9, 2, 0);
}

TEST(OpenAiResponseTest, ChatStream) {
  const ResponseMeta meta = Meta(kChat, /*include_usage=*/true);
  const json first =
      json::parse(StreamChunk(meta, Text(0, ""), /*first=*/true));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["id"], meta.id);
  EXPECT_EQ(first["choices"][0]["delta"],
            json({{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(first.contains("usage") && first["usage"].is_null());

  const json next = json::parse(StreamChunk(meta, Text(0, " there"), false));
  EXPECT_EQ(next["choices"][0]["delta"], json({{"content", " there"}}));

  const json last =
      json::parse(StreamChunk(meta, Text(0, "", FinishReason::kStop), false));
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");

  const json usage = json::parse(StreamUsageChunk(meta, TokenCounts(4, 7, 2)));
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  EXPECT_EQ(usage["choices"], json::array());
  ExpectUsage(usage["usage"], 4, 7, 2);
}

TEST(OpenAiResponseTest, CompletionStream) {
  const ResponseMeta meta = Meta(kCompletions);
  const json chunk =
      json::parse(StreamChunk(meta, Text(0, "Once"), /*first=*/true));
  EXPECT_EQ(chunk["object"], "text_completion");
  EXPECT_EQ(chunk["choices"][0]["text"], "Once");
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(chunk.contains("usage"));  // include_usage off

  const json last =
      json::parse(StreamChunk(meta, Text(2, "", FinishReason::kLength), false));
  EXPECT_EQ(last["choices"][0]["text"], "");
  EXPECT_EQ(last["choices"][0]["index"], 2);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");

  const json usage = json::parse(StreamUsageChunk(meta, TokenCounts(1, 2, 0)));
  EXPECT_EQ(usage["object"], "text_completion");
  EXPECT_TRUE(usage["choices"].empty());
  ExpectUsage(usage["usage"], 1, 2, 0);
}

TEST(OpenAiResponseTest, InvalidUtf8TextIsReplaced) {
  ResponseMeta meta = Meta(kChat);
  meta.model = "bad\xc0model";
  const std::string text = "ok \xe4\xbd";  // a character cut short
  for (const std::string& body :
       {CompletionResponse(meta, {Text(0, text, FinishReason::kStop)}, Usage{}),
        StreamChunk(meta, Text(0, text), true),
        StreamChunk(meta, Text(0, "\xff"), false)}) {
    ASSERT_TRUE(json::accept(body)) << body;
  }
  const json j = json::parse(
      CompletionResponse(meta, {Text(0, text, FinishReason::kStop)}, Usage{}));
  EXPECT_EQ(j["choices"][0]["message"]["content"], "ok \xef\xbf\xbd");
  EXPECT_EQ(j["model"], "bad\xef\xbf\xbdmodel");
  // Valid multi-byte text and control characters pass through.
  const json k = json::parse(
      StreamChunk(meta, Text(0, "caf\xc3\xa9 \xf0\x9f\x98\x80\n\t\""), false));
  EXPECT_EQ(k["choices"][0]["delta"]["content"],
            "caf\xc3\xa9 \xf0\x9f\x98\x80\n\t\"");
}

// Two choices with logprobs in OpenAI's shapes: completions' four arrays
// (an echoed prompt's first token null), chat's content entries with bytes.
TEST(OpenAiResponseTest, ChoicesAndLogprobs) {
  Choice a = Text(0, "Hi there", FinishReason::kStop);
  a.has_logprobs = true;
  a.logprobs = {{"Hi", 0, std::nullopt, {}},
                {" there", 2, -0.25f, {{" there", -0.25f}, {" you", -2.0f}}}};
  Choice b = Text(1, "\xe4", FinishReason::kLength);
  b.has_logprobs = true;
  b.logprobs = {{"\xe4", 0, -1.5f, {{"\xe4", -1.5f}}}};
  const json c = json::parse(
      CompletionResponse(Meta(kCompletions), {a, b}, TokenCounts(3, 3, 0)));
  ASSERT_EQ(c["choices"].size(), 2u);
  EXPECT_EQ(c["choices"][1]["index"], 1);
  EXPECT_EQ(c["choices"][1]["finish_reason"], "length");
  const json& lp = c["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"], json({"Hi", " there"}));
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_FLOAT_EQ(lp["token_logprobs"][1].get<float>(), -0.25f);
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  EXPECT_EQ(lp["top_logprobs"][1].size(), 2u);
  EXPECT_FLOAT_EQ(lp["top_logprobs"][1][" you"].get<float>(), -2.0f);
  EXPECT_EQ(lp["text_offset"], json({0, 2}));

  const json chat = json::parse(
      CompletionResponse(Meta(kChat), {a, b}, TokenCounts(3, 3, 0)));
  const json& content = chat["choices"][1]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 1u);
  EXPECT_EQ(content[0]["token"], "\xef\xbf\xbd");  // replaced in text
  EXPECT_EQ(content[0]["bytes"], json({0xe4}));    // but not in bytes
  EXPECT_FLOAT_EQ(content[0]["logprob"].get<float>(), -1.5f);
  EXPECT_EQ(content[0]["top_logprobs"][0]["bytes"], json({0xe4}));
  EXPECT_TRUE(chat["choices"][1]["logprobs"]["refusal"].is_null());
  // Not asked for: null.
  EXPECT_TRUE(json::parse(CompletionResponse(
      Meta(kChat), {Text(0, "x", FinishReason::kStop)},
      Usage{}))["choices"][0]["logprobs"]
                  .is_null());
  // A chunk carries its own tokens' logprobs.
  Choice piece = Text(1, " there");
  piece.has_logprobs = true;
  piece.logprobs = {a.logprobs[1]};
  const json chunk = json::parse(StreamChunk(Meta(kChat), piece, true));
  EXPECT_EQ(chunk["choices"][0]["index"], 1);
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["content"][0]["token"], " there");
}

TEST(OpenAiResponseTest, SseFraming) {
  EXPECT_EQ(SseEvent(R"({"a":1})"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
  EXPECT_EQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_EQ(FinishReasonName(FinishReason::kLength), "length");
}

TEST(OpenAiResponseTest, Models) {
  const ModelInfo info{.id = "stories260K",
                       .created = 1767225600,
                       .max_model_len = 512,
                       .kv_type_k = "q8",
                       .kv_type_v = "f16",
                       .block_tokens = 16,
                       .capacity_tokens = 4096,
                       .tier_codec = "zstd",
                       .tiers = {"disk", "redis"}};
  const json j = json::parse(ModelsResponse(info));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 1u);
  EXPECT_EQ(j["data"][0]["id"], "stories260K");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["created"], 1767225600);
  EXPECT_EQ(j["data"][0]["owned_by"], "kvstash");
  EXPECT_EQ(j["data"][0]["max_model_len"], 512);
  EXPECT_EQ(j["data"][0]["kvstash"], json::parse(R"({
      "kv_type_k": "q8", "kv_type_v": "f16", "block_tokens": 16,
      "capacity_tokens": 4096, "tier_codec": "zstd",
      "tiers": ["disk", "redis"]})"));
  // Without tiers: an empty list.
  ModelInfo dram_only = info;
  dram_only.tiers.clear();
  EXPECT_EQ(
      json::parse(ModelsResponse(dram_only))["data"][0]["kvstash"]["tiers"],
      json::array());
}

}  // namespace
}  // namespace kvstash
