// Tokenizer: text <-> token ids for the vocabularies that Llama-family models
// ship, loaded from GGUF metadata (`tokenizer.ggml.*`) or from a llama2.c
// `tokenizer.bin`. Two algorithms share one vocabulary representation and one
// merge loop:
//
//  - SentencePiece-style BPE (kSpm; GGUF `tokenizer.ggml.model = "llama"`,
//    and every llama2.c tokenizer): a space is prepended to non-empty text
//    when the vocabulary says add_space_prefix, the text is cut into UTF-8
//    characters, and the adjacent pair whose concatenation is the
//    highest-scoring piece (with '▁' U+2581 standing for a space) is merged
//    until none is left (ties: leftmost). Characters without a piece fall
//    back to byte pieces `<0xXX>`, or to UNK when a byte piece is missing.
//    A "character" is a byte and the continuation bytes after it (at most 4
//    bytes in all), which is UTF-8 for valid text and llama2.c's rule for
//    invalid text.
//  - Byte-level BPE (kBpe; `tokenizer.ggml.model = "gpt2"`): a regex chosen
//    by `tokenizer.ggml.pre` cuts the text into words (byte_level.h), each
//    word's bytes are mapped to GPT-2's printable code points, and the
//    adjacent pair with the lowest merge rank (`tokenizer.ggml.merges`) is
//    merged until none is left.
//
// Encode treats its input as plain text: the text of a control or
// user-defined token (e.g. "<s>", "<|endoftext|>") is tokenized like any other
// text, never turned into that token. Callers that need special tokens insert
// their ids themselves. Merges only ever form normal (or user-defined) pieces.
//
// A loaded Tokenizer is immutable; all methods are thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/status.h"
#include "model/byte_level.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"

namespace kvstash {

// Token types, numbered as in `tokenizer.ggml.token_type`.
enum class TokenType : int32_t {
  kUndefined = 0,  // treated as kNormal
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,  // piece "<0xXX>" standing for one raw byte
};

class Tokenizer {
 public:
  enum class Kind { kSpm, kBpe };

  // Reads `tokenizer.ggml.*`:
  //   model (required: "llama" or "gpt2"), tokens (required, non-empty),
  //   scores (required for "llama", optional for "gpt2"; no NaN),
  //   token_type (optional; absent: normal, with "<0xXX>" pieces as bytes for
  //   "llama"), merges (required for "gpt2": "left right" strings, rank =
  //   index), pre ("gpt2" only; see ParsePreTokenizerType),
  //   bos/eos/unknown_token_id (optional; absent: 1/2/0 for "llama", none for
  //   "gpt2"; 0xFFFFFFFF: none), add_bos_token (absent: true for "llama" and
  //   Llama 3's pre-tokenizer, else false), add_eos_token (absent: false),
  //   add_space_prefix ("llama" only; absent: true).
  // Bad metadata (a missing or mistyped required key, arrays of different
  // lengths, an id out of range, a token type outside 0..6, a merge line
  // without two parts) gives a Status naming the key.
  static Result<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& gguf);

  // Reads a llama2.c tokenizer.bin: int32 max_token_length, then per token
  // float32 score, int32 length and that many bytes, all little-endian. The
  // file must hold exactly `vocab_size` tokens (the model's vocabulary size).
  // The vocabulary becomes a kSpm one: ' ' in pieces becomes '▁', token 0 is
  // UNK, 1 BOS, 2 EOS (control), "<0xXX>" pieces are bytes, add_space_prefix
  // and add_bos are on. Encode then gives exactly what llama2.c's run.c
  // encode() gives (for any vocabulary in which no merge can form a control,
  // unknown or byte piece, as in all real ones).
  // A truncated or inconsistent file gives Corruption naming the token.
  static Result<std::unique_ptr<Tokenizer>> FromLlama2c(
      const std::string& tokenizer_bin_path, int vocab_size);

  // Token ids of `text`; when `add_bos` and the vocabulary says add_bos (and
  // has a BOS), BOS first. EOS is never appended (see add_eos()).
  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const;

  // As Encode, except that the text of a control or user-defined token
  // ("<|im_start|>", "</s>", ...) becomes that token: at each position the
  // longest such text wins, and the plain text between them goes through
  // Encode. For prompts rendered from chat templates: `literal` are the
  // byte ranges [begin, end) of `text` (ascending, disjoint) that are user
  // text (RenderedChat::content), where no special token is recognised (one
  // overlapping them is not either); plain text runs across them as usual.
  std::vector<int32_t> EncodeWithSpecialTokens(
      std::string_view text, bool add_bos,
      std::span<const std::pair<size_t, size_t>> literal = {}) const;

  // The bytes that `token` contributes to the text, for streaming output.
  // `prev_token` is the token before it, or -1 at the start of the text: with
  // add_space_prefix, the leading space of the first piece of the text (or
  // the first after BOS) is dropped, undoing Encode's prefix. Control and
  // unused tokens, and ids out of range, give "". A byte token gives its
  // byte, so a multi-byte character may arrive split over several calls.
  std::string DecodeToken(int32_t prev_token, int32_t token) const;

  // The concatenated DecodeToken of `tokens`, the first with `prev_token`
  // (-1: `tokens` start the text; a continuation passes the token before
  // it, e.g. the prompt's last, and keeps its leading space).
  std::string Decode(std::span<const int32_t> tokens,
                     int32_t prev_token = -1) const;

  // The text `token` stands for on its own (llama.cpp's token_to_piece with
  // special tokens shown): as DecodeToken after a text token (so an SPM
  // piece keeps its leading space), a control token's own text ("<s>"), ""
  // for unused tokens and ids out of range.
  std::string TokenText(int32_t token) const;

  Kind kind() const { return kind_; }
  int32_t bos() const { return bos_; }  // -1: none
  int32_t eos() const { return eos_; }  // -1: none
  int32_t unk() const { return unk_; }  // -1: none
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // The most bytes of text one token can stand for (a special token's text
  // included; at least 4, an unknown character): a text of B bytes encodes
  // to at least B / max_text_bytes() tokens, so a server can refuse a prompt
  // that cannot fit its context before tokenizing it.
  size_t max_text_bytes() const { return max_text_bytes_; }

  // Writes this vocabulary as `tokenizer.ggml.*` metadata, so that FromGguf
  // on the written file gives a tokenizer that encodes and decodes alike
  // (a llama2.c vocabulary becomes a "llama" one; the one difference is that
  // a literal '▁' in input text then counts as a space, as in SentencePiece).
  void WriteGgufMetadata(GgufWriter* out) const;

  // The raw vocabulary piece of `id` ("" for ids out of range).
  const std::string& piece(int32_t id) const;
  // kUndefined for ids out of range.
  TokenType token_type(int32_t id) const;
  float score(int32_t id) const;  // 0 for ids out of range

 private:
  // Hash and equality that let maps keyed by std::string (or pairs of them)
  // be searched with string_views without building a key.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const {
      return std::hash<std::string_view>()(s);
    }
  };
  struct PairHash {
    using is_transparent = void;
    template <typename A, typename B>
    size_t operator()(const std::pair<A, B>& p) const {
      const size_t h = StringHash()(p.first);
      return h ^ (StringHash()(p.second) + 0x9e3779b97f4a7c15ULL + (h << 6) +
                  (h >> 2));
    }
  };
  struct PairEqual {
    using is_transparent = void;
    template <typename A, typename B, typename C, typename D>
    bool operator()(const std::pair<A, B>& x, const std::pair<C, D>& y) const {
      return std::string_view(x.first) == std::string_view(y.first) &&
             std::string_view(x.second) == std::string_view(y.second);
    }
  };

  Tokenizer() = default;

  // Infers the token types when none were given and builds the lookup
  // tables. REQUIRES: pieces_, scores_ and the special ids are set and valid.
  void Finish();
  // The text that `piece` stands for: SPM pieces with '▁' as ' '.
  std::string TextOf(std::string_view piece) const;
  // Id of the normal or user-defined piece whose TextOf is `text`, or -1.
  int32_t TextPieceId(std::string_view text) const;
  // Whether the adjacent symbols `left` and `right` (contiguous in memory;
  // `*_id` their piece ids or -1) may merge; if so sets the merge's
  // `priority` (higher merges first) and the piece id of the result (-1 when
  // a BPE merge yields no piece).
  bool MergePriority(std::string_view left, int32_t left_id,
                     std::string_view right, int32_t right_id, double* priority,
                     int32_t* merged_id) const;
  // Appends the ids of `text` (SPM: with its prefix space; BPE: one word in
  // GPT-2 code points) merged from its characters.
  void EncodeWord(std::string_view text, std::vector<int32_t>* out) const;
  // Appends the ids of a final symbol that is not a piece. SPM: the byte
  // pieces of its bytes, or UNK when one is missing. BPE: the piece of each
  // of its characters, or UNK. Without UNK, what has no piece is dropped.
  void AppendFallback(std::string_view symbol, std::vector<int32_t>* out) const;

  Kind kind_ = Kind::kSpm;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  int32_t bos_ = -1;
  int32_t eos_ = -1;
  int32_t unk_ = -1;
  bool add_bos_ = false;
  bool add_eos_ = false;
  bool add_space_prefix_ = false;
  size_t max_text_bytes_ = 4;
  // Control and user-defined tokens by their text, longest first.
  std::vector<std::pair<std::string, int32_t>> special_texts_;
  bool ignore_merges_ = false;  // BPE: a word that is a piece is not split
  // SPM: a literal '▁' in the input counts as a space (as in SentencePiece;
  // llama2.c keeps it a character).
  bool marker_is_space_ = false;

  // TextOf(normal and user-defined pieces) -> id (the lowest id for
  // duplicates).
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>
      text_ids_;
  // SPM: byte value -> id of its "<0xXX>" piece, or -1.
  std::array<int32_t, 256> byte_ids_{};
  // BPE: (left, right) -> merge rank.
  std::unordered_map<std::pair<std::string, std::string>, int32_t, PairHash,
                     PairEqual>
      merge_ranks_;
  std::unique_ptr<RegexSplitter> splitter_;  // BPE only
  std::string pre_name_;                     // BPE: tokenizer.ggml.pre
};

}  // namespace kvstash
