// Byte-level BPE building blocks (the GPT-2 family: GPT-2, Llama 3, Qwen 2):
// the regex pre-tokenizer that cuts text into words which BPE merges never
// cross, and GPT-2's reversible mapping of the 256 byte values onto printable
// code points, in which byte-level vocabularies and merges are written (a
// space is 'Ġ' U+0120, a newline 'Ċ' U+010A).
//
// The regexes run on PCRE2 in UTF + UCP mode, so \s, \p{L} and \p{N} follow
// the Unicode properties as the reference tokenizers do.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

struct pcre2_real_code_8;

namespace kvstash {

// The pre-tokenizer rules that `tokenizer.ggml.pre` names.
enum class PreTokenizerType {
  kGpt2,    // "gpt-2", "default", or the key absent
  kLlama3,  // "llama-bpe", "llama3", "llama-v3": digits in runs of <= 3
  kQwen2,   // "qwen2": single digits
};

// Maps a `tokenizer.ggml.pre` value to its rules. Names this module does not
// know are NotSupported rather than silently tokenized with other rules: a
// wrong split gives a model token ids it was never trained on.
Result<PreTokenizerType> ParsePreTokenizerType(std::string_view pre);

// The PCRE2 pattern of `type` (as the reference tokenizers define it).
std::string_view PreTokenizerPattern(PreTokenizerType type);

// Maps each byte of `bytes` to its GPT-2 code point, UTF-8 encoded.
std::string ByteLevelEncode(std::string_view bytes);

// Inverse of ByteLevelEncode. Code points outside the mapping, and bytes that
// are not valid UTF-8, are copied through unchanged.
std::string ByteLevelDecode(std::string_view text);

// A compiled pre-tokenizer regex. Immutable once built; Split may be called
// from many threads at once.
class RegexSplitter {
 public:
  // InvalidArgument (with PCRE2's message and offset) if `pattern` does not
  // compile.
  static Result<std::unique_ptr<RegexSplitter>> Compile(
      std::string_view pattern);
  ~RegexSplitter();
  RegexSplitter(const RegexSplitter&) = delete;
  RegexSplitter& operator=(const RegexSplitter&) = delete;

  // Cuts `text` into non-empty consecutive pieces (views into `text`) whose
  // concatenation is exactly `text`: each match of the pattern is a piece,
  // and so is each run of bytes that no match covers (invalid UTF-8, which
  // the pattern never matches). Should PCRE2 give up on a match (resource
  // limits; not seen with the built-in patterns, even on megabyte inputs),
  // the rest of the text becomes one piece, so no text is ever lost.
  std::vector<std::string_view> Split(std::string_view text) const;

 private:
  explicit RegexSplitter(pcre2_real_code_8* code) : code_(code) {}
  pcre2_real_code_8* code_;  // owned
};

}  // namespace kvstash
