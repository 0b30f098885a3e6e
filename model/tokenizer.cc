#include "model/tokenizer.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <queue>

#include "base/file.h"

namespace kvstash {
namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // '▁' U+2581

constexpr std::string_view kKeyModel = "tokenizer.ggml.model";
constexpr std::string_view kKeyTokens = "tokenizer.ggml.tokens";
constexpr std::string_view kKeyScores = "tokenizer.ggml.scores";
constexpr std::string_view kKeyTokenType = "tokenizer.ggml.token_type";
constexpr std::string_view kKeyMerges = "tokenizer.ggml.merges";
constexpr std::string_view kKeyPre = "tokenizer.ggml.pre";
constexpr std::string_view kKeyBos = "tokenizer.ggml.bos_token_id";
constexpr std::string_view kKeyEos = "tokenizer.ggml.eos_token_id";
constexpr std::string_view kKeyUnk = "tokenizer.ggml.unknown_token_id";
constexpr std::string_view kKeyAddBos = "tokenizer.ggml.add_bos_token";
constexpr std::string_view kKeyAddEos = "tokenizer.ggml.add_eos_token";
constexpr std::string_view kKeyAddSpacePrefix =
    "tokenizer.ggml.add_space_prefix";

bool IsContinuationByte(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

// Length of the character at text[pos]: its first byte plus the continuation
// bytes that follow, at most 4 bytes in all (llama2.c's rule; the same as the
// UTF-8 length for valid text).
size_t CharLength(std::string_view text, size_t pos) {
  size_t len = 1;
  while (len < 4 && pos + len < text.size() &&
         IsContinuationByte(text[pos + len])) {
    ++len;
  }
  return len;
}

// The byte that a piece "<0xXX>" stands for, or -1.
int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') {
    return -1;
  }
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  for (size_t pos = s->find(from); pos != std::string::npos;
       pos = s->find(from, pos + to.size())) {
    s->replace(pos, from.size(), to);
  }
}

// Reads an optional special token id: absent leaves `*id` as it is,
// 0xFFFFFFFF means none (-1), any other id must be below `n_tokens`.
Status ReadOptionalId(const GgufFile& gguf, std::string_view key,
                      size_t n_tokens, int32_t* id) {
  if (gguf.Find(key) == nullptr) return Status::OK();
  KV_ASSIGN_OR_RETURN(const uint32_t value, gguf.GetU32(key));
  if (value == std::numeric_limits<uint32_t>::max()) {
    *id = -1;
    return Status::OK();
  }
  if (value >= n_tokens) {
    return Status::InvalidArgument(
        std::string(key) + ": id " + std::to_string(value) +
        " out of range for " + std::to_string(n_tokens) + " tokens");
  }
  *id = static_cast<int32_t>(value);
  return Status::OK();
}

// Reads an optional bool: absent leaves `*value` as it is.
Status ReadOptionalBool(const GgufFile& gguf, std::string_view key,
                        bool* value) {
  if (gguf.Find(key) == nullptr) return Status::OK();
  KV_ASSIGN_OR_RETURN(*value, gguf.GetBool(key));
  return Status::OK();
}

Status CheckLength(std::string_view key, size_t got, size_t n_tokens) {
  if (got == n_tokens) return Status::OK();
  return Status::InvalidArgument(std::string(key) + ": " + std::to_string(got) +
                                 " values for " + std::to_string(n_tokens) +
                                 " tokens");
}

// Little-endian reader over an in-memory llama2.c tokenizer.bin.
class BinReader {
 public:
  explicit BinReader(std::string_view data) : data_(data) {}
  size_t remaining() const { return data_.size() - pos_; }
  bool ReadI32(int32_t* v) { return ReadRaw(v, sizeof(*v)); }
  bool ReadF32(float* v) { return ReadRaw(v, sizeof(*v)); }
  // REQUIRES: n <= remaining().
  std::string_view Take(size_t n) {
    std::string_view s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  static_assert(std::endian::native == std::endian::little);
  bool ReadRaw(void* v, size_t n) {
    if (remaining() < n) return false;
    std::memcpy(v, data_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  std::string_view data_;
  size_t pos_ = 0;
};

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& gguf) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  KV_ASSIGN_OR_RETURN(const std::string_view model, gguf.GetString(kKeyModel));
  if (model == "llama") {
    t->kind_ = Kind::kSpm;
  } else if (model == "gpt2") {
    t->kind_ = Kind::kBpe;
  } else {
    return Status::NotSupported(std::string(kKeyModel) + ": tokenizer '" +
                                std::string(model) +
                                "' is not supported (llama, gpt2)");
  }
  const bool spm = t->kind_ == Kind::kSpm;

  KV_ASSIGN_OR_RETURN(const std::vector<std::string_view> tokens,
                      gguf.GetStringArray(kKeyTokens));
  if (tokens.empty() ||
      tokens.size() >
          static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument(std::string(kKeyTokens) + ": " +
                                   std::to_string(tokens.size()) + " tokens");
  }
  const size_t n = tokens.size();
  t->pieces_.assign(tokens.begin(), tokens.end());

  if (spm || gguf.Find(kKeyScores) != nullptr) {
    KV_ASSIGN_OR_RETURN(t->scores_, gguf.GetF32Array(kKeyScores));
    KV_RETURN_IF_ERROR(CheckLength(kKeyScores, t->scores_.size(), n));
    for (size_t i = 0; i < n; ++i) {
      if (std::isnan(t->scores_[i])) {
        return Status::InvalidArgument(std::string(kKeyScores) + "[" +
                                       std::to_string(i) + "] is NaN");
      }
    }
  } else {
    t->scores_.assign(n, 0.0f);
  }

  if (gguf.Find(kKeyTokenType) != nullptr) {
    KV_ASSIGN_OR_RETURN(const std::vector<int32_t> types,
                        gguf.GetI32Array(kKeyTokenType));
    KV_RETURN_IF_ERROR(CheckLength(kKeyTokenType, types.size(), n));
    t->types_.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < 0 || types[i] > static_cast<int32_t>(TokenType::kByte)) {
        return Status::InvalidArgument(
            std::string(kKeyTokenType) + "[" + std::to_string(i) +
            "]: " + std::to_string(types[i]) + " is not a token type (0..6)");
      }
      t->types_.push_back(static_cast<TokenType>(types[i]));
    }
  }

  PreTokenizerType pre = PreTokenizerType::kGpt2;
  if (!spm) {
    std::string_view pre_name;
    if (gguf.Find(kKeyPre) != nullptr) {
      KV_ASSIGN_OR_RETURN(pre_name, gguf.GetString(kKeyPre));
    }
    KV_ASSIGN_OR_RETURN(pre, ParsePreTokenizerType(pre_name));
    t->pre_name_ = std::string(pre_name);
    KV_ASSIGN_OR_RETURN(t->splitter_,
                        RegexSplitter::Compile(PreTokenizerPattern(pre)));
    t->ignore_merges_ = pre == PreTokenizerType::kLlama3;

    KV_ASSIGN_OR_RETURN(const std::vector<std::string_view> merges,
                        gguf.GetStringArray(kKeyMerges));
    if (merges.size() >
        static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return Status::InvalidArgument(std::string(kKeyMerges) + ": " +
                                     std::to_string(merges.size()) + " merges");
    }
    t->merge_ranks_.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      // The separator is the first space after the first byte, so that a
      // left part may itself start with a space.
      const size_t sep = merges[i].find(' ', 1);
      if (sep == std::string_view::npos || sep + 1 == merges[i].size()) {
        return Status::InvalidArgument(
            std::string(kKeyMerges) + "[" + std::to_string(i) + "]: '" +
            std::string(merges[i]) + "' is not 'left right'");
      }
      t->merge_ranks_.emplace(
          std::pair<std::string, std::string>(merges[i].substr(0, sep),
                                              merges[i].substr(sep + 1)),
          static_cast<int32_t>(i));
    }
  }

  // Defaults of the reference implementation, where they fit the vocabulary.
  if (spm) {
    t->unk_ = 0;
    t->bos_ = n > 1 ? 1 : -1;
    t->eos_ = n > 2 ? 2 : -1;
  }
  KV_RETURN_IF_ERROR(ReadOptionalId(gguf, kKeyBos, n, &t->bos_));
  KV_RETURN_IF_ERROR(ReadOptionalId(gguf, kKeyEos, n, &t->eos_));
  KV_RETURN_IF_ERROR(ReadOptionalId(gguf, kKeyUnk, n, &t->unk_));
  t->add_bos_ = spm || pre == PreTokenizerType::kLlama3;
  t->add_space_prefix_ = spm;
  t->marker_is_space_ = spm;
  KV_RETURN_IF_ERROR(ReadOptionalBool(gguf, kKeyAddBos, &t->add_bos_));
  KV_RETURN_IF_ERROR(ReadOptionalBool(gguf, kKeyAddEos, &t->add_eos_));
  if (spm) {
    KV_RETURN_IF_ERROR(
        ReadOptionalBool(gguf, kKeyAddSpacePrefix, &t->add_space_prefix_));
  }
  t->Finish();
  return t;
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::FromLlama2c(
    const std::string& tokenizer_bin_path, int vocab_size) {
  const std::string& path = tokenizer_bin_path;
  if (vocab_size < 3) {
    return Status::InvalidArgument(path + ": vocab_size " +
                                   std::to_string(vocab_size) +
                                   " (llama2.c vocabularies start with "
                                   "<unk>, BOS, EOS)");
  }
  KV_ASSIGN_OR_RETURN(const std::string data, ReadFile(path));
  BinReader reader(data);
  int32_t max_token_length = 0;
  if (!reader.ReadI32(&max_token_length) || max_token_length <= 0) {
    return Status::Corruption(path + ": missing or bad max_token_length");
  }
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  t->kind_ = Kind::kSpm;
  t->pieces_.reserve(vocab_size);
  t->scores_.reserve(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    const std::string where = path + ": token " + std::to_string(i) + " of " +
                              std::to_string(vocab_size);
    float score = 0;
    int32_t len = 0;
    if (!reader.ReadF32(&score) || !reader.ReadI32(&len)) {
      return Status::Corruption(where + ": file truncated");
    }
    if (std::isnan(score)) return Status::Corruption(where + ": score is NaN");
    if (len < 0 || len > max_token_length) {
      return Status::Corruption(where + ": length " + std::to_string(len) +
                                " outside 0.." +
                                std::to_string(max_token_length));
    }
    if (static_cast<size_t>(len) > reader.remaining()) {
      return Status::Corruption(where + ": file truncated");
    }
    std::string piece(reader.Take(len));
    ReplaceAll(&piece, " ", kSpaceMarker);
    t->pieces_.push_back(std::move(piece));
    t->scores_.push_back(score);
  }
  if (reader.remaining() != 0) {
    return Status::Corruption(path + ": " + std::to_string(reader.remaining()) +
                              " bytes after " + std::to_string(vocab_size) +
                              " tokens (vocab_size mismatch)");
  }
  t->unk_ = 0;
  t->bos_ = 1;
  t->eos_ = 2;
  t->add_bos_ = true;
  t->add_space_prefix_ = true;
  t->Finish();
  return t;
}

void Tokenizer::Finish() {
  const size_t n = pieces_.size();
  if (types_.empty()) {  // not given: infer bytes and specials
    types_.resize(n, TokenType::kNormal);
    if (kind_ == Kind::kSpm) {
      for (size_t i = 0; i < n; ++i) {
        if (ParseBytePiece(pieces_[i]) >= 0) types_[i] = TokenType::kByte;
      }
    }
    if (unk_ >= 0) types_[unk_] = TokenType::kUnknown;
    for (int32_t id : {bos_, eos_}) {
      if (id >= 0) types_[id] = TokenType::kControl;
    }
  }

  for (size_t i = 0; i < n; ++i) {
    if ((types_[i] == TokenType::kControl ||
         types_[i] == TokenType::kUserDefined) &&
        !pieces_[i].empty()) {
      special_texts_.emplace_back(pieces_[i], static_cast<int32_t>(i));
    }
  }
  std::stable_sort(special_texts_.begin(), special_texts_.end(),
                   [](const auto& a, const auto& b) {
                     return a.first.size() > b.first.size();
                   });

  for (size_t i = 0; i < n; ++i) {
    max_text_bytes_ = std::max(max_text_bytes_, TextOf(pieces_[i]).size());
  }
  byte_ids_.fill(-1);
  text_ids_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto id = static_cast<int32_t>(i);
    switch (types_[i]) {
      case TokenType::kUndefined:
      case TokenType::kNormal:
      case TokenType::kUserDefined:
        text_ids_.emplace(TextOf(pieces_[i]), id);  // keeps the lowest id
        break;
      case TokenType::kByte: {
        const int b = ParseBytePiece(pieces_[i]);
        if (b >= 0 && byte_ids_[b] < 0) byte_ids_[b] = id;
        break;
      }
      case TokenType::kUnknown:
      case TokenType::kControl:
      case TokenType::kUnused:
        break;
    }
  }
}

void Tokenizer::WriteGgufMetadata(GgufWriter* out) const {
  out->SetString(kKeyModel, kind_ == Kind::kSpm ? "llama" : "gpt2");
  const std::vector<std::string_view> pieces(pieces_.begin(), pieces_.end());
  out->SetStringArray(kKeyTokens, pieces);
  out->SetF32Array(kKeyScores, scores_);
  std::vector<int32_t> types(types_.size());
  for (size_t i = 0; i < types.size(); ++i) {
    types[i] = static_cast<int32_t>(types_[i]);
  }
  out->SetI32Array(kKeyTokenType, types);
  if (kind_ == Kind::kBpe) {
    if (!pre_name_.empty()) out->SetString(kKeyPre, pre_name_);
    std::vector<std::string> merges(merge_ranks_.size());
    for (const auto& [pair, rank] : merge_ranks_) {
      merges[rank] = pair.first + " " + pair.second;
    }
    // Ranks left empty by duplicate merges are dropped: order is what counts.
    std::vector<std::string_view> views;
    for (const std::string& m : merges) {
      if (!m.empty()) views.push_back(m);
    }
    out->SetStringArray(kKeyMerges, views);
  }
  // 0xFFFFFFFF marks an absent special token.
  auto id = [](int32_t v) { return v < 0 ? 0xFFFFFFFFu : uint32_t(v); };
  out->SetU32(kKeyBos, id(bos_));
  out->SetU32(kKeyEos, id(eos_));
  out->SetU32(kKeyUnk, id(unk_));
  out->SetBool(kKeyAddBos, add_bos_);
  out->SetBool(kKeyAddEos, add_eos_);
  if (kind_ == Kind::kSpm) out->SetBool(kKeyAddSpacePrefix, add_space_prefix_);
}

std::string Tokenizer::TextOf(std::string_view piece) const {
  std::string text(piece);
  if (kind_ == Kind::kSpm) ReplaceAll(&text, kSpaceMarker, " ");
  return text;
}

int32_t Tokenizer::TextPieceId(std::string_view text) const {
  auto it = text_ids_.find(text);
  return it == text_ids_.end() ? -1 : it->second;
}

const std::string& Tokenizer::piece(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < vocab_size() ? pieces_[id] : kEmpty;
}

TokenType Tokenizer::token_type(int32_t id) const {
  return id >= 0 && id < vocab_size() ? types_[id] : TokenType::kUndefined;
}

float Tokenizer::score(int32_t id) const {
  return id >= 0 && id < vocab_size() ? scores_[id] : 0.0f;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text,
                                       bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && add_bos_ && bos_ >= 0) out.push_back(bos_);
  if (text.empty()) return out;
  if (kind_ == Kind::kSpm) {
    std::string spaced(add_space_prefix_ ? " " : "");
    spaced += text;
    if (marker_is_space_) ReplaceAll(&spaced, kSpaceMarker, " ");
    EncodeWord(spaced, &out);
    return out;
  }
  for (std::string_view word : splitter_->Split(text)) {
    const std::string mapped = ByteLevelEncode(word);
    const int32_t whole = ignore_merges_ ? TextPieceId(mapped) : -1;
    if (whole >= 0) {
      out.push_back(whole);
    } else {
      EncodeWord(mapped, &out);
    }
  }
  return out;
}

std::vector<int32_t> Tokenizer::EncodeWithSpecialTokens(
    std::string_view text, bool add_bos,
    std::span<const std::pair<size_t, size_t>> literal) const {
  std::vector<int32_t> out;
  if (add_bos && add_bos_ && bos_ >= 0) out.push_back(bos_);
  size_t plain = 0;  // start of the pending plain text
  auto flush = [&](size_t end) {
    if (end == plain) return;
    const std::vector<int32_t> ids =
        Encode(text.substr(plain, end - plain), /*add_bos=*/false);
    out.insert(out.end(), ids.begin(), ids.end());
  };
  size_t next_literal = 0;  // the first range not ending before i
  for (size_t i = 0; i < text.size();) {
    while (next_literal < literal.size() && literal[next_literal].second <= i) {
      ++next_literal;
    }
    const size_t literal_begin = next_literal < literal.size()
                                     ? literal[next_literal].first
                                     : text.size();
    if (i >= literal_begin) {  // inside user text
      i = literal[next_literal].second;
      continue;
    }
    const auto match = std::find_if(
        special_texts_.begin(), special_texts_.end(), [&](const auto& s) {
          return i + s.first.size() <= literal_begin &&
                 text.substr(i).starts_with(s.first);
        });
    if (match == special_texts_.end()) {
      ++i;
      continue;
    }
    flush(i);
    out.push_back(match->second);
    i += match->first.size();
    plain = i;
  }
  flush(text.size());
  return out;
}

bool Tokenizer::MergePriority(std::string_view left, int32_t left_id,
                              std::string_view right, int32_t right_id,
                              double* priority, int32_t* merged_id) const {
  const std::string_view merged(left.data(), left.size() + right.size());
  if (kind_ == Kind::kSpm) {
    // Characters without a piece fall back to bytes before any merging (as
    // in llama2.c), so they never take part in a merge.
    if (left_id < 0 || right_id < 0) return false;
    *merged_id = TextPieceId(merged);
    if (*merged_id < 0) return false;
    *priority = scores_[*merged_id];
    return true;
  }
  auto it = merge_ranks_.find(std::pair(left, right));
  if (it == merge_ranks_.end()) return false;
  *priority = -static_cast<double>(it->second);
  *merged_id = TextPieceId(merged);
  return true;
}

void Tokenizer::EncodeWord(std::string_view text,
                           std::vector<int32_t>* out) const {
  // A doubly linked list of symbols over `text`; a merged-away symbol keeps
  // len 0.
  struct Symbol {
    size_t begin;
    size_t len;
    int64_t prev;
    int64_t next;
    int32_t id;  // piece id of the symbol's text, or -1
  };
  struct Candidate {
    double priority;
    int64_t left;
    int64_t right;
    size_t len;  // left.len + right.len when queued: detects stale entries
    int32_t merged_id;
  };
  // Highest priority first; ties: leftmost.
  auto after = [](const Candidate& a, const Candidate& b) {
    return a.priority < b.priority ||
           (a.priority == b.priority && a.left > b.left);
  };

  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = CharLength(text, pos);
    const auto index = static_cast<int64_t>(symbols.size());
    symbols.push_back(
        {pos, len, index - 1, index + 1, TextPieceId(text.substr(pos, len))});
    pos += len;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<Candidate, std::vector<Candidate>, decltype(after)> queue(
      after);
  auto try_pair = [&](int64_t left, int64_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& a = symbols[left];
    const Symbol& b = symbols[right];
    Candidate c{0, left, right, a.len + b.len, -1};
    if (MergePriority(text.substr(a.begin, a.len), a.id,
                      text.substr(b.begin, b.len), b.id, &c.priority,
                      &c.merged_id)) {
      queue.push(c);
    }
  };
  for (int64_t i = 1; i < static_cast<int64_t>(symbols.size()); ++i) {
    try_pair(i - 1, i);
  }
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    Symbol& right = symbols[c.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != c.len) {
      continue;
    }
    left.len += right.len;
    left.id = c.merged_id;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    try_pair(left.prev, c.left);
    try_pair(c.left, left.next);
  }

  for (int64_t i = 0; i != -1; i = symbols[i].next) {
    const Symbol& s = symbols[i];
    if (s.id >= 0) {
      out->push_back(s.id);
    } else {
      AppendFallback(text.substr(s.begin, s.len), out);
    }
  }
}

void Tokenizer::AppendFallback(std::string_view symbol,
                               std::vector<int32_t>* out) const {
  if (kind_ == Kind::kSpm) {  // `symbol` is one character (never merged)
    const bool all_bytes = std::all_of(
        symbol.begin(), symbol.end(),
        [&](char c) { return byte_ids_[static_cast<unsigned char>(c)] >= 0; });
    if (all_bytes) {
      for (unsigned char b : symbol) out->push_back(byte_ids_[b]);
    } else if (unk_ >= 0) {
      out->push_back(unk_);
    }
    return;
  }
  for (size_t pos = 0; pos < symbol.size();) {
    const size_t len = CharLength(symbol, pos);
    const int32_t id = TextPieceId(symbol.substr(pos, len));
    if (id >= 0) {
      out->push_back(id);
    } else if (unk_ >= 0) {
      out->push_back(unk_);
    }
    pos += len;
  }
}

std::string Tokenizer::TokenText(int32_t token) const {
  if (token < 0 || token >= vocab_size()) return "";
  const std::string& p = pieces_[token];
  switch (types_[token]) {
    case TokenType::kUnused:
      return "";
    case TokenType::kControl:
    case TokenType::kUnknown:
      return p;
    case TokenType::kByte: {
      const int b = ParseBytePiece(p);
      return b >= 0 ? std::string(1, static_cast<char>(b)) : p;
    }
    case TokenType::kUserDefined:
      if (kind_ == Kind::kBpe) return p;
      break;
    case TokenType::kUndefined:
    case TokenType::kNormal:
      if (kind_ == Kind::kBpe) return ByteLevelDecode(p);
      break;
  }
  return TextOf(p);
}

std::string Tokenizer::DecodeToken(int32_t prev_token, int32_t token) const {
  const TokenType type = token_type(token);
  if (type == TokenType::kControl) return "";
  std::string text = TokenText(token);
  // Undoes Encode's prefix space (add_space_prefix is SPM's; the space of
  // a byte or unknown token is text, not the prefix).
  if (add_space_prefix_ && type != TokenType::kByte &&
      type != TokenType::kUnknown && (prev_token < 0 || prev_token == bos_) &&
      !text.empty() && text[0] == ' ') {
    text.erase(0, 1);
  }
  return text;
}

std::string Tokenizer::Decode(std::span<const int32_t> tokens,
                              int32_t prev_token) const {
  std::string text;
  int32_t prev = prev_token;
  for (int32_t token : tokens) {
    text += DecodeToken(prev, token);
    prev = token;
  }
  return text;
}

}  // namespace kvstash
