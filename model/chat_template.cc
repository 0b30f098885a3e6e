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

std::string RenderLlama3(std::span<const ChatMessage> messages,
                         bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& m : messages) {
    out += "<|start_header_id|>";
    out += m.role;
    out += "<|end_header_id|>\n\n";
    out += Trim(m.content);
    out += "<|eot_id|>";
  }
  if (add_generation_prompt) {
    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

std::string RenderChatML(std::span<const ChatMessage> messages,
                         bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& m : messages) {
    out += "<|im_start|>";
    out += m.role;
    out += "\n";
    out += m.content;
    out += "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

// The generation prompt is already part of each user turn ("[/INST]").
std::string RenderLlama2(std::span<const ChatMessage> messages, size_t first) {
  std::string out;
  for (size_t i = first; i < messages.size(); ++i) {
    const std::string& content = messages[i].content;
    if (messages[i].role == "user") {
      if (i > first) out += "<s>";  // the leading BOS is the tokenizer's
      out += "[INST] ";
      if (i == first && first == 1) {
        std::string with_system =
            "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + content;
        out += Trim(with_system);
      } else {
        out += Trim(content);
      }
      out += " [/INST]";
    } else {
      out += " ";
      out += Trim(content);
      out += " </s>";
    }
  }
  return out;
}

std::string RenderMistral(std::span<const ChatMessage> messages, size_t first) {
  std::string out;
  for (size_t i = first; i < messages.size(); ++i) {
    if (messages[i].role == "user") {
      out += " [INST] ";
      if (i == first && first == 1) {
        out += messages[0].content;
        out += "\n\n";
      }
      out += messages[i].content;
      out += " [/INST]";
    } else {
      out += " ";
      out += messages[i].content;
      out += "</s>";
    }
  }
  return out;
}

std::string RenderPhi3(std::span<const ChatMessage> messages,
                       bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& m : messages) {
    if (m.role == "system" && m.content.empty()) continue;
    out += "<|";
    out += m.role;
    out += "|>\n";
    out += m.content;
    out += "<|end|>\n";
  }
  out += add_generation_prompt ? "<|assistant|>\n" : "<|endoftext|>";
  return out;
}

std::string RenderGemma(std::span<const ChatMessage> messages, size_t first,
                        bool add_generation_prompt) {
  std::string out;
  for (size_t i = first; i < messages.size(); ++i) {
    out += "<start_of_turn>";
    out += messages[i].role == "user" ? "user" : "model";
    out += "\n";
    if (i == first && first == 1) {
      out += messages[0].content;
      out += "\n\n";
    }
    out += Trim(messages[i].content);
    out += "<end_of_turn>\n";
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

std::string RenderFallback(std::span<const ChatMessage> messages,
                           std::span<const Role> roles,
                           bool add_generation_prompt) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    switch (roles[i]) {
      case Role::kSystem:
        out += "System: ";
        break;
      case Role::kUser:
        out += "User: ";
        break;
      case Role::kAssistant:
        out += "Assistant: ";
        break;
    }
    out += messages[i].content;
    out += "\n";
  }
  if (add_generation_prompt) out += "Assistant:";
  return out;
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

Result<std::string> RenderChat(ChatTemplateFamily family,
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
