// Tokenizer endpoints in llama.cpp server's shapes: the JSON side of
// POST /tokenize and POST /detokenize. No HTTP here: the transport
// authenticates and calls these.
//
//   /tokenize   {"content": string (required), "add_special": bool (false),
//                "parse_special": bool (true), "with_pieces": bool (false)}
//            -> {"tokens": [id, ...]}, or with_pieces
//               {"tokens": [{"id": id, "piece": text | [byte, ...]}, ...]}
//   /detokenize {"tokens": [id, ...] (required)} -> {"content": text}
//
// add_special: BOS first when the model's tokenizer puts it before prompts.
// parse_special: the text of a control token ("<s>") in content becomes
// that token; false: content is plain text throughout. A piece is the text
// the token stands for on its own (Tokenizer::TokenText: an SPM piece keeps
// its leading space, a control token shows its text); a piece that is not
// valid UTF-8 (a byte of a longer character) is written as the array of its
// byte values, as llama.cpp does. Detokenized content is Tokenizer::Decode:
// control tokens give nothing and the prefix space the tokenizer adds is
// dropped, so detokenizing what /tokenize gave returns the content (when it
// spelled no control token); text that is not valid UTF-8 is written with
// U+FFFD in place of the bad bytes.
//
// Parsing: the body passes ParseJsonObject (serve/json_body.h: size 413,
// depth, JSON and object 400); unknown fields are ignored and a known field
// set to null counts as absent; a field of the wrong type, a missing
// required one, or a token id outside [0, vocabulary size) is a 400 naming
// it in `param` ("tokens[3]" for one element).
//
// Pure functions of their arguments; thread-safe; throw nothing.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "model/tokenizer.h"
#include "serve/openai_api.h"

namespace kvstash {

struct TokenizeRequest {
  std::string content;
  bool add_special = false;
  bool parse_special = true;
  bool with_pieces = false;
};

std::variant<TokenizeRequest, ApiError> ParseTokenizeRequest(
    std::string_view body, const ParseLimits& limits);

// The ids of "tokens", each checked against `vocab_size`.
std::variant<std::vector<int32_t>, ApiError> ParseDetokenizeRequest(
    std::string_view body, const ParseLimits& limits, int vocab_size);

// The /tokenize response body for `request`, tokenized by `tokenizer`.
std::string TokenizeResponse(const Tokenizer& tokenizer,
                             const TokenizeRequest& request);

// The /detokenize response body for `tokens`.
std::string DetokenizeResponse(const Tokenizer& tokenizer,
                               std::span<const int32_t> tokens);

}  // namespace kvstash
