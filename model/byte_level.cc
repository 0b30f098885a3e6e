#include "model/byte_level.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cstdint>

namespace kvstash {
namespace {

// GPT-2's bytes_to_unicode: the printable Latin-1 bytes ('!'..'~', '¡'..'¬',
// '®'..'ÿ') stand for themselves, the other 68 take the code points 256.. in
// byte order.
constexpr bool IsSelfMapped(int b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
         (b >= 0xAE && b <= 0xFF);
}

constexpr int kMappedLimit = 256 + 68;  // code points used by the mapping

struct ByteTables {
  std::array<uint16_t, 256> to_cp{};
  std::array<int16_t, kMappedLimit> to_byte{};  // -1: not a mapped code point
};

constexpr ByteTables MakeByteTables() {
  ByteTables t;
  for (int16_t& b : t.to_byte) b = -1;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const int cp = IsSelfMapped(b) ? b : next++;
    t.to_cp[b] = static_cast<uint16_t>(cp);
    t.to_byte[cp] = static_cast<int16_t>(b);
  }
  return t;
}

constexpr ByteTables kByteTables = MakeByteTables();

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Pattern =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string Pcre2Message(int error_code) {
  PCRE2_UCHAR buf[256];
  const int n = pcre2_get_error_message(error_code, buf, sizeof(buf));
  return n < 0 ? "pcre2 error " + std::to_string(error_code)
               : std::string(reinterpret_cast<const char*>(buf), n);
}

}  // namespace

Result<PreTokenizerType> ParsePreTokenizerType(std::string_view pre) {
  if (pre.empty() || pre == "default" || pre == "gpt-2") {
    return PreTokenizerType::kGpt2;
  }
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    return PreTokenizerType::kLlama3;
  }
  if (pre == "qwen2") return PreTokenizerType::kQwen2;
  return Status::NotSupported(
      "tokenizer.ggml.pre: unsupported pre-tokenizer '" + std::string(pre) +
      "' (supported: gpt-2, default, llama-bpe, llama3, llama-v3, qwen2)");
}

std::string_view PreTokenizerPattern(PreTokenizerType type) {
  switch (type) {
    case PreTokenizerType::kGpt2:
      return kGpt2Pattern;
    case PreTokenizerType::kLlama3:
      return kLlama3Pattern;
    case PreTokenizerType::kQwen2:
      return kQwen2Pattern;
  }
  KV_CHECK_MSG(false, "unknown PreTokenizerType");
}

std::string ByteLevelEncode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) {
    const int cp = kByteTables.to_cp[b];
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else {  // all mapped code points are below 0x800: two UTF-8 bytes
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  return out;
}

std::string ByteLevelDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    int cp = -1;
    size_t len = 1;
    if (b0 < 0x80) {
      cp = b0;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < text.size() &&
               (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
      cp =
          ((b0 & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F);
      len = 2;
    }
    if (cp >= 0 && cp < kMappedLimit && kByteTables.to_byte[cp] >= 0) {
      out.push_back(static_cast<char>(kByteTables.to_byte[cp]));
    } else {
      out.append(text.substr(i, len));
    }
    i += len;
  }
  return out;
}

Result<std::unique_ptr<RegexSplitter>> RegexSplitter::Compile(
    std::string_view pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
      &error_offset, nullptr);
  if (code == nullptr) {
    return Status::InvalidArgument(
        "pre-tokenizer regex: " + Pcre2Message(error_code) + " at offset " +
        std::to_string(error_offset));
  }
  // JIT is an optimization only: without it pcre2_match interprets.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<RegexSplitter>(new RegexSplitter(code));
}

RegexSplitter::~RegexSplitter() { pcre2_code_free(code_); }

std::vector<std::string_view> RegexSplitter::Split(
    std::string_view text) const {
  std::vector<std::string_view> pieces;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(code_, nullptr),
      &pcre2_match_data_free);
  KV_CHECK(match != nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(code_, subject, text.size(), pos, PCRE2_NOTEMPTY,
                               match.get(), nullptr);
    if (rc < 0) {  // no further match, or PCRE2 gave up: keep the rest whole
      pieces.push_back(text.substr(pos));
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (begin > pos) pieces.push_back(text.substr(pos, begin - pos));
    pieces.push_back(text.substr(begin, end - begin));
    pos = end;
  }
  return pieces;
}

}  // namespace kvstash
