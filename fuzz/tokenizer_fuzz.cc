// A tokenizer over a real vocabulary (KVSTASH_FUZZ_VOCAB, a vocabulary GGUF
// under ../shared/vocab: SentencePiece llama or byte-level gpt-2), on any
// text. Input: one flags byte (bit 0: add BOS), then the text. Checks what
// the server relies on:
//  - ids are in range, and plain text never becomes a control token (the
//    prompt-injection guard);
//  - EncodeWithSpecialTokens with the whole text literal (a chat message's
//    content) equals Encode;
//  - B bytes of text give at least B / max_text_bytes() tokens (the limit a
//    server applies before tokenizing);
//  - byte-level BPE decodes back to the text byte for byte; SentencePiece
//    does too when the text is valid UTF-8 without U+2581 (which stands for
//    a space; and a stray continuation byte at the start joins the space
//    prefix into one "character", which decodes with that space).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

namespace {

// Whether `s` is valid UTF-8 (no overlongs, surrogates or code points past
// U+10FFFF).
bool ValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = uint8_t(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (b < 0x80) {
      ++i;
      continue;
    } else if ((b & 0xE0) == 0xC0) {
      n = 1, cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      n = 2, cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      n = 3, cp = b & 0x07;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size() || (uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
    }
    const uint32_t min = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

const kvstash::Tokenizer& TheTokenizer() {
  using namespace kvstash;
  static const Tokenizer* const tokenizer = [] {
    static std::unique_ptr<GgufFile> gguf;  // the tokenizer keeps no view
    Result<std::unique_ptr<GgufFile>> g =
        GgufFile::Open(fuzz::SharedPath(KVSTASH_FUZZ_VOCAB));
    FUZZ_CHECK(g.ok());
    gguf = std::move(g).value();
    Result<std::unique_ptr<Tokenizer>> t = Tokenizer::FromGguf(*gguf);
    FUZZ_CHECK(t.ok());
    return t->release();
  }();
  return *tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvstash;
  const Tokenizer& t = TheTokenizer();
  fuzz::InputReader in({data, size});
  const bool add_bos = (in.Byte() & 1) != 0;
  const std::string_view text = fuzz::AsText(in.Rest());

  const std::vector<int32_t> ids = t.Encode(text, add_bos);
  size_t text_tokens = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    FUZZ_CHECK(ids[i] >= 0 && ids[i] < t.vocab_size());
    if (i == 0 && add_bos && ids[i] == t.bos()) continue;
    FUZZ_CHECK(t.token_type(ids[i]) != TokenType::kControl);
    ++text_tokens;
  }
  FUZZ_CHECK(text_tokens * t.max_text_bytes() >= text.size());

  const std::pair<size_t, size_t> all{0, text.size()};
  FUZZ_CHECK(t.EncodeWithSpecialTokens(text, add_bos, {&all, 1}) == ids);
  for (int32_t id : t.EncodeWithSpecialTokens(text, add_bos)) {
    FUZZ_CHECK(id >= 0 && id < t.vocab_size());
  }

  const std::string decoded = t.Decode(ids);
  if (t.kind() == Tokenizer::Kind::kBpe ||
      (ValidUtf8(text) &&
       text.find("\xe2\x96\x81") == std::string_view::npos)) {
    FUZZ_CHECK(decoded == text);
  }
  return 0;
}
