#include "model/chat_template.h"

#include <span>
#include <string>
#include <vector>

namespace kvstash {
namespace {

enum class Role { kSystem, kUser, kAssistant };

// Python's str.strip() (Jinja's trim) restricted to ASCII: removes the
// characters str.isspace() accepts below 0x80 from both ends.
std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\v\f\r\x1c\x1d\x1e\x1f";
  const size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  const size_t end = s.find_last_not_of(kSpace);
  return s.substr(begin, end - begin + 1);
}

Result<std::vector<Role>> ParseRoles(std::span<const ChatMessage> messages) {
  if (messages.empty()) {
    return Status::InvalidArgument("chat: no messages");
  }
  std::vector<Role> roles;
  roles.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    if (r == "system") {
      roles.push_back(Role::kSystem);
    } else if (r == "user") {
      roles.push_back(Role::kUser);
    } else if (r == "assistant") {
      roles.push_back(Role::kAssistant);
    } else {
      return Status::InvalidArgument("chat: message " + std::to_string(i) +
                                     " has role '" + r +
                                     "' (expected system, user or assistant)");
    }
  }
  return roles;
}

// For the families whose templates take [system] (user assistant)* [user]:
// the index of the first non-system message (0 or 1), or InvalidArgument.
Result<size_t> CheckAlternating(ChatTemplateFamily family,
                                std::span<const Role> roles) {
  const size_t first = roles[0] == Role::kSystem ? 1 : 0;
  if (first == roles.size()) {
    return Status::InvalidArgument(
        std::string("chat: the ") +
        std::string(ChatTemplateFamilyName(family)) +
        " template needs a user message after the system message");
  }
  for (size_t i = first; i < roles.size(); ++i) {
    const Role expected = (i - first) % 2 == 0 ? Role::kUser : Role::kAssistant;
    if (roles[i] != expected) {
      return Status::InvalidArgument(
          "chat: message " + std::to_string(i) + " should be " +
          (expected == Role::kUser ? "user" : "assistant") + ": the " +
          std::string(ChatTemplateFamilyName(family)) +
          " template takes an optional system message first, then user and "
          "assistant messages alternating");
    }
  }
  return first;
}

// The rendered text, and where the messages' contents lie in it.
class ChatWriter {
 public:
  // The template's own text.
  void Markup(std::string_view s) { out_.text += s; }
  // A message's text.
  void Content(std::string_view s) {
    if (s.empty()) return;
    const size_t begin = out_.text.size();
    out_.text += s;
    out_.content.push_back({begin, out_.text.size()});
  }
  RenderedChat Take() { return std::move(out_); }

 private:
  RenderedChat out_;
};

RenderedChat RenderLlama3(std::span<const ChatMessage> messages,
                          bool add_generation_prompt) {
  ChatWriter w;
  for (const ChatMessage& m : messages) {
    w.Markup("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n");
    w.Content(Trim(m.content));
    w.Markup("<|eot_id|>");
  }
  if (add_generation_prompt) {
    w.Markup("<|start_header_id|>assistant<|end_header_id|>\n\n");
  }
  return w.Take();
}

RenderedChat RenderChatML(std::span<const ChatMessage> messages,
                          bool add_generation_prompt) {
  ChatWriter w;
  for (const ChatMessage& m : messages) {
    w.Markup("<|im_start|>" + m.role + "\n");
    w.Content(m.content);
    w.Markup("<|im_end|>\n");
  }
  if (add_generation_prompt) w.Markup("<|im_start|>assistant\n");
  return w.Take();
}

// The generation prompt is already part of each user turn ("[/INST]").
RenderedChat RenderLlama2(std::span<const ChatMessage> messages, size_t first) {
  ChatWriter w;
  for (size_t i = first; i < messages.size(); ++i) {
    const std::string& content = messages[i].content;
    if (messages[i].role == "user") {
      if (i > first) w.Markup("<s>");  // the leading BOS is the tokenizer's
      w.Markup("[INST] ");
      if (i == first && first == 1) {
        // trim("<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content): only
        // its end can be trimmed.
        const std::string_view user = Trim(content);
        w.Markup("<<SYS>>\n");
        w.Content(messages[0].content);
        if (user.empty()) {
          w.Markup("\n<</SYS>>");
        } else {
          w.Markup("\n<</SYS>>\n\n");
          // What trimming the whole leaves of the user's leading spaces.
          w.Content(std::string_view(content).substr(
              0, size_t(user.data() - content.data()) + user.size()));
        }
      } else {
        w.Content(Trim(content));
      }
      w.Markup(" [/INST]");
    } else {
      w.Markup(" ");
      w.Content(Trim(content));
      w.Markup(" </s>");
    }
  }
  return w.Take();
}

RenderedChat RenderMistral(std::span<const ChatMessage> messages,
                           size_t first) {
  ChatWriter w;
  for (size_t i = first; i < messages.size(); ++i) {
    if (messages[i].role == "user") {
      w.Markup(" [INST] ");
      if (i == first && first == 1) {
        w.Content(messages[0].content);
        w.Markup("\n\n");
      }
      w.Content(messages[i].content);
      w.Markup(" [/INST]");
    } else {
      w.Markup(" ");
      w.Content(messages[i].content);
      w.Markup("</s>");
    }
  }
  return w.Take();
}

RenderedChat RenderPhi3(std::span<const ChatMessage> messages,
                        bool add_generation_prompt) {
  ChatWriter w;
  for (const ChatMessage& m : messages) {
    if (m.role == "system" && m.content.empty()) continue;
    w.Markup("<|" + m.role + "|>\n");
    w.Content(m.content);
    w.Markup("<|end|>\n");
  }
  w.Markup(add_generation_prompt ? "<|assistant|>\n" : "<|endoftext|>");
  return w.Take();
}

RenderedChat RenderGemma(std::span<const ChatMessage> messages, size_t first,
                         bool add_generation_prompt) {
  ChatWriter w;
  for (size_t i = first; i < messages.size(); ++i) {
    w.Markup("<start_of_turn>");
    w.Markup(messages[i].role == "user" ? "user" : "model");
    w.Markup("\n");
    if (i == first && first == 1) {
      w.Content(messages[0].content);
      w.Markup("\n\n");
    }
    w.Content(Trim(messages[i].content));
    w.Markup("<end_of_turn>\n");
  }
  if (add_generation_prompt) w.Markup("<start_of_turn>model\n");
  return w.Take();
}

RenderedChat RenderFallback(std::span<const ChatMessage> messages,
                            std::span<const Role> roles,
                            bool add_generation_prompt) {
  ChatWriter w;
  for (size_t i = 0; i < messages.size(); ++i) {
    switch (roles[i]) {
      case Role::kSystem:
        w.Markup("System: ");
        break;
      case Role::kUser:
        w.Markup("User: ");
        break;
      case Role::kAssistant:
        w.Markup("Assistant: ");
        break;
    }
    w.Content(messages[i].content);
    w.Markup("\n");
  }
  if (add_generation_prompt) w.Markup("Assistant:");
  return w.Take();
}

}  // namespace

std::string_view ChatTemplateFamilyName(ChatTemplateFamily family) {
  switch (family) {
    case ChatTemplateFamily::kLlama3:
      return "llama3";
    case ChatTemplateFamily::kChatML:
      return "chatml";
    case ChatTemplateFamily::kLlama2:
      return "llama2";
    case ChatTemplateFamily::kMistral:
      return "mistral";
    case ChatTemplateFamily::kPhi3:
      return "phi3";
    case ChatTemplateFamily::kGemma:
      return "gemma";
    case ChatTemplateFamily::kFallback:
      return "fallback";
  }
  return "unknown";
}

ChatTemplateFamily DetectChatTemplate(std::string_view t) {
  auto has = [t](std::string_view marker) {
    return t.find(marker) != std::string_view::npos;
  };
  if (has("<|im_start|>")) {
    return has("<|im_sep|>") ? ChatTemplateFamily::kFallback
                             : ChatTemplateFamily::kChatML;
  }
  if (has("[INST]")) {
    return has("<<SYS>>") ? ChatTemplateFamily::kLlama2
                          : ChatTemplateFamily::kMistral;
  }
  if (has("<|user|>") && has("<|end|>")) return ChatTemplateFamily::kPhi3;
  if (has("<start_of_turn>")) return ChatTemplateFamily::kGemma;
  if (has("<|start_header_id|>")) return ChatTemplateFamily::kLlama3;
  return ChatTemplateFamily::kFallback;
}

Result<RenderedChat> RenderChat(ChatTemplateFamily family,
                                std::span<const ChatMessage> messages,
                                bool add_generation_prompt) {
  KV_ASSIGN_OR_RETURN(const std::vector<Role> roles, ParseRoles(messages));
  switch (family) {
    case ChatTemplateFamily::kLlama3:
      return RenderLlama3(messages, add_generation_prompt);
    case ChatTemplateFamily::kChatML:
      return RenderChatML(messages, add_generation_prompt);
    case ChatTemplateFamily::kPhi3:
      return RenderPhi3(messages, add_generation_prompt);
    case ChatTemplateFamily::kFallback:
      return RenderFallback(messages, roles, add_generation_prompt);
    case ChatTemplateFamily::kLlama2:
    case ChatTemplateFamily::kMistral:
    case ChatTemplateFamily::kGemma:
      break;
  }
  KV_ASSIGN_OR_RETURN(const size_t first, CheckAlternating(family, roles));
  if (family == ChatTemplateFamily::kLlama2) {
    return RenderLlama2(messages, first);
  }
  if (family == ChatTemplateFamily::kMistral) {
    return RenderMistral(messages, first);
  }
  return RenderGemma(messages, first, add_generation_prompt);
}

}  // namespace kvstash
