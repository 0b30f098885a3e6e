// Chat templates: turn a list of chat messages into the prompt text that an
// instruction-tuned model was trained on. Instead of running the Jinja
// template a GGUF carries (`tokenizer.chat_template`), DetectChatTemplate
// recognises its family by marker substrings (the way llama.cpp's
// llm_chat_detect_template does) and RenderChat writes that family's format
// in C++.
//
// RenderChat reproduces the official template's output for messages whose
// roles the template accepts, with two differences:
//  - The leading BOS token text is left out (the tokenizer adds BOS). Every
//    other special token (e.g. Llama 2's "</s><s>" between turns) appears as
//    its text; the caller tokenizes the result with special-token parsing.
//  - A request the official template would reject with raise_exception is an
//    InvalidArgument, and so is one whose only message it would silently
//    drop (a lone system message in the families that fold it into the first
//    user turn).
//
// Formats, for [system S, user U1, assistant A, user U2] with the generation
// prompt ("<trim X>" = X without leading and trailing whitespace, as Jinja's
// trim / Python's strip() do for ASCII; other Unicode spaces are kept):
//  kLlama3   (Meta Llama 3 Instruct; 3.1+ templates also add a date header to
//            the system message, which is not rendered):
//            "<|start_header_id|>system<|end_header_id|>\n\n<trim S><|eot_id|>"
//            ... one such block per message with its role ...
//            "<|start_header_id|>assistant<|end_header_id|>\n\n"
//  kChatML   (Qwen 2/2.5, SmolLM, Yi ...; no default system message is
//            inserted): "<|im_start|>system\nS<|im_end|>\n" ... per message
//            ... "<|im_start|>assistant\n"
//  kLlama2   (Llama 2 Chat): "[INST] <trim <<SYS>>\nS\n<</SYS>>\n\nU1> [/INST]"
//            " <trim A> </s><s>[INST] <trim U2> [/INST]"; the generation
//            prompt adds nothing (the turn already ends in [/INST]).
//  kMistral  (Mistral 7B Instruct v0.1/v0.2, Mixtral 8x7B, the "v1" spacing;
//            later Mistral templates are detected as this family too):
//            " [INST] S\n\nU1 [/INST] A</s> [INST] U2 [/INST]"; no generation
//            prompt either.
//  kPhi3     (Phi-3 / Phi-3.5 mini and medium): "<|system|>\nS<|end|>\n"
//            "<|user|>\nU1<|end|>\n<|assistant|>\nA<|end|>\n"
//            "<|user|>\nU2<|end|>\n<|assistant|>\n"; an empty system
//            message is skipped, and without the generation prompt the text
//            ends in "<|endoftext|>".
//  kGemma    (Gemma 3; Gemma 1/2 refuse a system message, Gemma 3 folds it):
//            "<start_of_turn>user\nS\n\n<trim U1><end_of_turn>\n"
//            "<start_of_turn>model\n<trim A><end_of_turn>\n"
//            "<start_of_turn>user\n<trim U2><end_of_turn>\n"
//            "<start_of_turn>model\n"
//  kFallback (for models without a recognised template, e.g. base models):
//            "System: S\nUser: U1\nAssistant: A\nUser: U2\nAssistant:" -- each
//            message is "<Role>: <content>\n" and the generation prompt is
//            "Assistant:" with no trailing space or newline.
//
// Role order: kLlama2, kMistral and kGemma take an optional system message
// first, then user and assistant messages alternating, starting with user
// (their templates raise otherwise). kLlama3, kChatML, kPhi3 and kFallback
// take the roles in any order.
//
// Pure functions; thread-safe.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace kvstash {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

enum class ChatTemplateFamily {
  kLlama3,
  kChatML,
  kLlama2,
  kMistral,
  kPhi3,
  kGemma,
  kFallback,
};

// "llama3", "chatml", "llama2", "mistral", "phi3", "gemma", "fallback".
std::string_view ChatTemplateFamilyName(ChatTemplateFamily family);

// The family of a Jinja chat template, from its marker substrings:
//   "<|im_start|>" -> kChatML (but with "<|im_sep|>", Phi-4's different
//     format, -> kFallback),
//   "[INST]" -> kLlama2 when it also holds "<<SYS>>", else kMistral,
//   "<|user|>" and "<|end|>" -> kPhi3,
//   "<start_of_turn>" -> kGemma,
//   "<|start_header_id|>" -> kLlama3;
// checked in that order. Empty or anything else -> kFallback.
ChatTemplateFamily DetectChatTemplate(std::string_view jinja_template);

// A rendered chat: the prompt text, and the byte ranges [begin, end) of it
// that are the messages' own text, in order. A tokenizer reads those as
// text, never as control tokens, so a user who writes "<|im_end|>" in a
// message cannot end its turn (Tokenizer::EncodeWithSpecialTokens).
struct RenderedChat {
  std::string text;
  std::vector<std::pair<size_t, size_t>> content;
};

// The prompt text for `messages` in `family`'s format (see the top of this
// file), ending with the assistant header when `add_generation_prompt`.
// InvalidArgument for an empty list, a role other than system/user/assistant
// (naming the message index), or a role order the family does not accept.
Result<RenderedChat> RenderChat(ChatTemplateFamily family,
                                std::span<const ChatMessage> messages,
                                bool add_generation_prompt);

}  // namespace kvstash
