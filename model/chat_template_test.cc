#include "model/chat_template.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvstash {
namespace {

// Excerpts of the templates shipped in the models' tokenizer_config.json /
// GGUF `tokenizer.chat_template`.
constexpr const char* kLlama3Template =
    R"({% set loop_messages = messages %}{% for message in loop_messages %})"
    R"({% set content = '<|start_header_id|>' + message['role'] + )"
    R"('<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %})"
    R"({% if loop.index0 == 0 %}{% set content = bos_token + content %})"
    R"({% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %})"
    R"({{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})";

constexpr const char* kQwen25Template =
    R"({%- if tools %}{{- '<|im_start|>system\n' }}{%- else %})"
    R"({%- if messages[0]['role'] == 'system' %})"
    R"({{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }})"
    R"({%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba )"
    R"(Cloud. You are a helpful assistant.<|im_end|>\n' }}{%- endif %})"
    R"({%- endif %}{%- for message in messages %}{{- '<|im_start|>' + )"
    R"(message.role + '\n' + message.content + '<|im_end|>' + '\n' }})"
    R"({%- endfor %}{%- if add_generation_prompt %})"
    R"({{- '<|im_start|>assistant\n' }}{%- endif %})";

constexpr const char* kLlama2Template =
    R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = )"
    R"(messages[1:] %}{% set system_message = messages[0]['content'] %})"
    R"({% else %}{% set loop_messages = messages %}{% set system_message = )"
    R"(false %}{% endif %}{% for message in loop_messages %}{% if loop.index0 )"
    R"(== 0 and system_message != false %}{% set content = '<<SYS>>\\n' + )"
    R"(system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %})"
    R"({% set content = message['content'] %}{% endif %}{% if )"
    R"(message['role'] == 'user' %}{{ bos_token + '[INST] ' + )"
    R"(content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' )"
    R"(%}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})";

constexpr const char* kMixtralTemplate =
    R"({%- if messages[0]['role'] == 'system' %}{%- set system_message = )"
    R"(messages[0]['content'] %}{%- set loop_messages = messages[1:] %})"
    R"({%- else %}{%- set loop_messages = messages %}{%- endif %})"
    R"({{- bos_token }}{%- for message in loop_messages %})"
    R"({%- if message['role'] == 'user' %}{%- if loop.first and )"
    R"(system_message is defined %}{{- ' [INST] ' + system_message + )"
    R"('\n\n' + message['content'] + ' [/INST]' }}{%- else %})"
    R"({{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %})"
    R"({%- elif message['role'] == 'assistant' %})"
    R"({{- ' ' + message['content'] + eos_token}}{%- endif %}{%- endfor %})";

constexpr const char* kPhi3Template =
    R"({% for message in messages %}{% if message['role'] == 'system' and )"
    R"(message['content'] %}{{'<|system|>\n' + message['content'] + )"
    R"('<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + )"
    R"(message['content'] + '<|end|>\n'}}{% elif message['role'] == )"
    R"('assistant' %}{{'<|assistant|>\n' + message['content'] + )"
    R"('<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %})"
    R"({{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %})";

constexpr const char* kGemma3Template =
    R"({{ bos_token }}{%- if messages[0]['role'] == 'system' -%})"
    R"({%- set first_user_prefix = messages[0]['content'] + '\n\n' -%})"
    R"({%- set loop_messages = messages[1:] -%}{%- endif -%})"
    R"({%- for message in loop_messages -%}{%- if (message['role'] == )"
    R"('assistant') -%}{%- set role = "model" -%}{%- endif -%})"
    R"({{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first )"
    R"(else "") }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }})"
    R"({%- endfor -%}{%- if add_generation_prompt -%})"
    R"({{'<start_of_turn>model\n'}}{%- endif -%})";

constexpr const char* kPhi4Template =
    R"({% for message in messages %}{% if (message['role'] == 'system') %})"
    R"({{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}})"
    R"({% endif %}{% endfor %})";

TEST(ChatTemplateTest, DetectsFamilies) {
  EXPECT_EQ(DetectChatTemplate(kLlama3Template), ChatTemplateFamily::kLlama3);
  EXPECT_EQ(DetectChatTemplate(kQwen25Template), ChatTemplateFamily::kChatML);
  EXPECT_EQ(DetectChatTemplate(kLlama2Template), ChatTemplateFamily::kLlama2);
  EXPECT_EQ(DetectChatTemplate(kMixtralTemplate), ChatTemplateFamily::kMistral);
  EXPECT_EQ(DetectChatTemplate(kPhi3Template), ChatTemplateFamily::kPhi3);
  EXPECT_EQ(DetectChatTemplate(kGemma3Template), ChatTemplateFamily::kGemma);
}

TEST(ChatTemplateTest, UnknownOrEmptyIsFallback) {
  EXPECT_EQ(DetectChatTemplate(""), ChatTemplateFamily::kFallback);
  EXPECT_EQ(DetectChatTemplate("{% for m in messages %}{{ m.content }}"
                               "{% endfor %}"),
            ChatTemplateFamily::kFallback);
  // Phi-4 uses <|im_start|> with a different separator: not ChatML.
  EXPECT_EQ(DetectChatTemplate(kPhi4Template), ChatTemplateFamily::kFallback);
}

TEST(ChatTemplateTest, FamilyNames) {
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kLlama3), "llama3");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kChatML), "chatml");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kLlama2), "llama2");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kMistral), "mistral");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kPhi3), "phi3");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kGemma), "gemma");
  EXPECT_EQ(ChatTemplateFamilyName(ChatTemplateFamily::kFallback), "fallback");
}

const std::vector<ChatMessage> kConversation = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", "Hi! How can I help?"},
    {"user", "What is 2+2?"},
};

std::string Render(ChatTemplateFamily family,
                   const std::vector<ChatMessage>& messages,
                   bool add_generation_prompt = true) {
  Result<RenderedChat> r = RenderChat(family, messages, add_generation_prompt);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return std::string();
  // The content ranges hold the messages' text, in order, within the text.
  size_t at = 0;
  for (const auto& [begin, end] : r->content) {
    EXPECT_LE(at, begin);
    EXPECT_LT(begin, end);
    EXPECT_LE(end, r->text.size());
    at = end;
  }
  return r->text;
}

// Every family marks exactly the messages' text as content, in order
// (the system message folded into the first user turn included).
TEST(ChatTemplateTest, ContentRangesAreTheMessagesText) {
  const std::vector<ChatMessage> m = {{"system", "S1 <s>"},
                                      {"user", "U1 </s>"},
                                      {"assistant", "A1 <|im_end|>"},
                                      {"user", "U2"}};
  for (const ChatTemplateFamily f :
       {ChatTemplateFamily::kLlama3, ChatTemplateFamily::kChatML,
        ChatTemplateFamily::kLlama2, ChatTemplateFamily::kMistral,
        ChatTemplateFamily::kPhi3, ChatTemplateFamily::kGemma,
        ChatTemplateFamily::kFallback}) {
    SCOPED_TRACE(std::string(ChatTemplateFamilyName(f)));
    Result<RenderedChat> r = RenderChat(f, m, true);
    ASSERT_TRUE(r.ok());
    std::vector<std::string> got;
    for (const auto& [begin, end] : r->content) {
      got.push_back(r->text.substr(begin, end - begin));
    }
    EXPECT_EQ(got, (std::vector<std::string>{"S1 <s>", "U1 </s>",
                                             "A1 <|im_end|>", "U2"}));
  }
}

TEST(ChatTemplateTest, RendersLlama3) {
  EXPECT_EQ(Render(ChatTemplateFamily::kLlama3, kConversation),
            "<|start_header_id|>system<|end_header_id|>\n\n"
            "You are a helpful assistant.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
            "Hi! How can I help?<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, RendersChatML) {
  EXPECT_EQ(Render(ChatTemplateFamily::kChatML, kConversation),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHello!<|im_end|>\n"
            "<|im_start|>assistant\nHi! How can I help?<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, RendersLlama2) {
  EXPECT_EQ(Render(ChatTemplateFamily::kLlama2, kConversation),
            "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
            "Hello! [/INST] Hi! How can I help? </s>"
            "<s>[INST] What is 2+2? [/INST]");
}

TEST(ChatTemplateTest, RendersMistral) {
  EXPECT_EQ(Render(ChatTemplateFamily::kMistral, kConversation),
            " [INST] You are a helpful assistant.\n\nHello! [/INST]"
            " Hi! How can I help?</s> [INST] What is 2+2? [/INST]");
}

TEST(ChatTemplateTest, RendersPhi3) {
  EXPECT_EQ(Render(ChatTemplateFamily::kPhi3, kConversation),
            "<|system|>\nYou are a helpful assistant.<|end|>\n"
            "<|user|>\nHello!<|end|>\n"
            "<|assistant|>\nHi! How can I help?<|end|>\n"
            "<|user|>\nWhat is 2+2?<|end|>\n"
            "<|assistant|>\n");
}

TEST(ChatTemplateTest, RendersGemma) {
  EXPECT_EQ(Render(ChatTemplateFamily::kGemma, kConversation),
            "<start_of_turn>user\nYou are a helpful assistant.\n\n"
            "Hello!<end_of_turn>\n"
            "<start_of_turn>model\nHi! How can I help?<end_of_turn>\n"
            "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
            "<start_of_turn>model\n");
}

TEST(ChatTemplateTest, RendersFallback) {
  EXPECT_EQ(Render(ChatTemplateFamily::kFallback, kConversation),
            "System: You are a helpful assistant.\nUser: Hello!\n"
            "Assistant: Hi! How can I help?\nUser: What is 2+2?\n"
            "Assistant:");
}

TEST(ChatTemplateTest, WithoutGenerationPrompt) {
  const std::vector<ChatMessage> m = {{"user", "Hi"}};
  EXPECT_EQ(Render(ChatTemplateFamily::kLlama3, m, false),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  EXPECT_EQ(Render(ChatTemplateFamily::kChatML, m, false),
            "<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(Render(ChatTemplateFamily::kLlama2, m, false), "[INST] Hi [/INST]");
  EXPECT_EQ(Render(ChatTemplateFamily::kMistral, m, false),
            " [INST] Hi [/INST]");
  EXPECT_EQ(Render(ChatTemplateFamily::kPhi3, m, false),
            "<|user|>\nHi<|end|>\n<|endoftext|>");
  EXPECT_EQ(Render(ChatTemplateFamily::kGemma, m, false),
            "<start_of_turn>user\nHi<end_of_turn>\n");
  EXPECT_EQ(Render(ChatTemplateFamily::kFallback, m, false), "User: Hi\n");
}

TEST(ChatTemplateTest, TrimsWhereTheTemplateTrims) {
  const std::vector<ChatMessage> m = {{"system", "  Be brief. \n"},
                                      {"user", "\n Hi \t"},
                                      {"assistant", " Hello \n"},
                                      {"user", " Bye "}};
  EXPECT_EQ(Render(ChatTemplateFamily::kLlama3, m),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Llama 2 strips the system block and the first user message as one text.
  EXPECT_EQ(Render(ChatTemplateFamily::kLlama2, m),
            "[INST] <<SYS>>\n  Be brief. \n\n<</SYS>>\n\n\n Hi [/INST]"
            " Hello </s><s>[INST] Bye [/INST]");
  // Gemma trims each message but not the folded system prefix.
  EXPECT_EQ(Render(ChatTemplateFamily::kGemma, m),
            "<start_of_turn>user\n  Be brief. \n\n\nHi<end_of_turn>\n"
            "<start_of_turn>model\nHello<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
  // ChatML, Mistral and Phi-3 keep the text as given.
  EXPECT_EQ(Render(ChatTemplateFamily::kMistral, m),
            " [INST]   Be brief. \n\n\n\n Hi \t [/INST]  Hello \n</s>"
            " [INST]  Bye  [/INST]");
}

TEST(ChatTemplateTest, Phi3SkipsEmptySystemMessage) {
  const std::vector<ChatMessage> m = {{"system", ""}, {"user", "Hi"}};
  EXPECT_EQ(Render(ChatTemplateFamily::kPhi3, m),
            "<|user|>\nHi<|end|>\n<|assistant|>\n");
}

TEST(ChatTemplateTest, FreeOrderFamiliesAcceptAnyRoleOrder) {
  const std::vector<ChatMessage> m = {
      {"user", "a"}, {"user", "b"}, {"system", "c"}, {"assistant", "d"}};
  for (ChatTemplateFamily f :
       {ChatTemplateFamily::kLlama3, ChatTemplateFamily::kChatML,
        ChatTemplateFamily::kPhi3, ChatTemplateFamily::kFallback}) {
    EXPECT_TRUE(RenderChat(f, m, true).ok()) << ChatTemplateFamilyName(f);
  }
  EXPECT_EQ(Render(ChatTemplateFamily::kChatML, m, false),
            "<|im_start|>user\na<|im_end|>\n<|im_start|>user\nb<|im_end|>\n"
            "<|im_start|>system\nc<|im_end|>\n"
            "<|im_start|>assistant\nd<|im_end|>\n");
}

TEST(ChatTemplateTest, RejectsEmptyListAndUnknownRoles) {
  for (ChatTemplateFamily f :
       {ChatTemplateFamily::kLlama3, ChatTemplateFamily::kChatML,
        ChatTemplateFamily::kLlama2, ChatTemplateFamily::kMistral,
        ChatTemplateFamily::kPhi3, ChatTemplateFamily::kGemma,
        ChatTemplateFamily::kFallback}) {
    Result<RenderedChat> empty = RenderChat(f, {}, true);
    ASSERT_FALSE(empty.ok());
    EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);

    const std::vector<ChatMessage> tool = {{"user", "Hi"}, {"tool", "42"}};
    Result<RenderedChat> r = RenderChat(f, tool, true);
    ASSERT_FALSE(r.ok()) << ChatTemplateFamilyName(f);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("message 1"), std::string::npos);
    EXPECT_NE(r.status().message().find("'tool'"), std::string::npos);
  }
}

TEST(ChatTemplateTest, AlternatingFamiliesRejectOtherOrders) {
  const std::vector<std::vector<ChatMessage>> bad = {
      {{"system", "S"}},                    // nothing after
      {{"assistant", "A"}, {"user", "U"}},  // starts with A
      {{"user", "U"}, {"user", "V"}},       // two users
      {{"user", "U"}, {"assistant", "A"}, {"assistant", "B"}},
      {{"user", "U"}, {"system", "S"}},  // late system
      {{"system", "S"}, {"system", "T"}, {"user", "U"}},
  };
  for (ChatTemplateFamily f :
       {ChatTemplateFamily::kLlama2, ChatTemplateFamily::kMistral,
        ChatTemplateFamily::kGemma}) {
    for (size_t i = 0; i < bad.size(); ++i) {
      Result<RenderedChat> r = RenderChat(f, bad[i], true);
      ASSERT_FALSE(r.ok()) << ChatTemplateFamilyName(f) << " case " << i;
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(ChatTemplateTest, AlternatingFamiliesAcceptEndingWithAssistant) {
  const std::vector<ChatMessage> m = {{"user", "Hi"}, {"assistant", "Yo"}};
  EXPECT_EQ(Render(ChatTemplateFamily::kLlama2, m),
            "[INST] Hi [/INST] Yo </s>");
  EXPECT_EQ(Render(ChatTemplateFamily::kGemma, m),
            "<start_of_turn>user\nHi<end_of_turn>\n"
            "<start_of_turn>model\nYo<end_of_turn>\n<start_of_turn>model\n");
}

}  // namespace
}  // namespace kvstash
