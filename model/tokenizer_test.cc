#include "model/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "base/file.h"
#include "model/gguf.h"
#include "model/gguf_writer.h"
#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string MustRead(const std::string& path) {
  Result<std::string> data = ReadFile(path);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  return data.ok() ? *data : std::string();
}

// ---------------------------------------------------------------------------
// llama.cpp's vocabulary test vectors (tests/test-tokenizer-0 format).

struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

// The .inp file is the test strings joined by "\n__ggml_vocab_test__\n" (and
// ending with one, which leaves an empty last element); line i of the .out
// file holds the ids of string i.
std::vector<VocabCase> ReadVocabCases(const std::string& inp_path,
                                      const std::string& out_path) {
  const std::string inp = MustRead(inp_path);
  constexpr std::string_view kSeparator = "\n__ggml_vocab_test__\n";
  std::vector<VocabCase> cases;
  for (size_t pos = 0; pos < inp.size();) {
    size_t end = inp.find(kSeparator, pos);
    if (end == std::string::npos) end = inp.size();
    cases.push_back({inp.substr(pos, end - pos), {}});
    pos = end + kSeparator.size();
  }
  std::istringstream out(MustRead(out_path));
  std::string line;
  size_t i = 0;
  for (; std::getline(out, line); ++i) {
    if (i >= cases.size()) {
      ADD_FAILURE() << out_path << " has more lines than " << inp_path;
      break;
    }
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) cases[i].ids.push_back(id);
  }
  EXPECT_EQ(i, cases.size()) << out_path;
  return cases;
}

std::unique_ptr<GgufFile> MustOpenGguf(const std::string& path) {
  Result<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(path);
  EXPECT_TRUE(gguf.ok()) << gguf.status().ToString();
  return gguf.ok() ? std::move(*gguf) : nullptr;
}

std::unique_ptr<Tokenizer> MustLoad(const GgufFile& gguf) {
  Result<std::unique_ptr<Tokenizer>> t = Tokenizer::FromGguf(gguf);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(*t) : nullptr;
}

// Encodes every case without BOS and compares with the expected ids; also
// checks that decoding gives the text back. Returns how many cases matched.
int CheckVocabCases(const std::string& name) {
  const std::string base = testing::SharedPath("vocab/" + name);
  std::unique_ptr<GgufFile> gguf = MustOpenGguf(base);
  if (gguf == nullptr) return 0;
  std::unique_ptr<Tokenizer> t = MustLoad(*gguf);
  if (t == nullptr) return 0;
  int matched = 0;
  for (const VocabCase& c : ReadVocabCases(base + ".inp", base + ".out")) {
    SCOPED_TRACE("text: '" + c.text + "'");
    const std::vector<int32_t> ids = t->Encode(c.text, /*add_bos=*/false);
    EXPECT_EQ(ids, c.ids);
    matched += ids == c.ids;
    EXPECT_EQ(t->Decode(ids), c.text);
    // The bound a server refuses long prompts by, before tokenizing.
    EXPECT_GE(ids.size() * t->max_text_bytes(), c.text.size());
  }
  // Also over random bytes (unknown characters, byte fallback) and text.
  std::mt19937 rng(7);
  std::string noise(20000, '\0');
  for (char& ch : noise) ch = char(rng());
  for (const std::string& text : {noise, std::string(5000, 'a')}) {
    EXPECT_GE(t->Encode(text, false).size() * t->max_text_bytes(), text.size());
  }
  EXPECT_LE(t->max_text_bytes(), 512u);  // GPT-2 has a 256-byte piece
  return matched;
}

TEST(VocabTestVectors, LlamaSpm) {
  EXPECT_EQ(CheckVocabCases("ggml-vocab-llama-spm.gguf"), 46);
}

TEST(VocabTestVectors, Gpt2) {
  EXPECT_EQ(CheckVocabCases("ggml-vocab-gpt-2.gguf"), 46);
}

TEST(GgufTokenizer, LlamaSpmSpecialsAndBos) {
  std::unique_ptr<GgufFile> gguf =
      MustOpenGguf(testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf"));
  ASSERT_NE(gguf, nullptr);
  std::unique_ptr<Tokenizer> t = MustLoad(*gguf);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), Tokenizer::Kind::kSpm);
  EXPECT_EQ(t->vocab_size(), 32000);
  EXPECT_EQ(t->bos(), 1);
  EXPECT_EQ(t->eos(), 2);
  EXPECT_EQ(t->unk(), 0);
  EXPECT_TRUE(t->add_bos());
  EXPECT_FALSE(t->add_eos());
  EXPECT_EQ(t->piece(15043), "\xE2\x96\x81Hello");
  EXPECT_EQ(t->token_type(13), TokenType::kByte);
  EXPECT_THAT(t->Encode("Hello world", true), ElementsAre(1, 15043, 3186));
  EXPECT_THAT(t->Encode("", true), ElementsAre(1));
  EXPECT_THAT(t->Encode("", false), IsEmpty());
  // Specials are plain text to Encode, and decode to nothing.
  EXPECT_THAT(t->Encode("<s>", false), ::testing::Not(ElementsAre(1)));
  EXPECT_EQ(t->Decode(std::vector<int32_t>{1, 15043, 3186, 2}), "Hello world");
  // Streaming: the prefix space goes only at the start or after BOS.
  EXPECT_EQ(t->DecodeToken(-1, 15043), "Hello");
  EXPECT_EQ(t->DecodeToken(1, 15043), "Hello");
  EXPECT_EQ(t->DecodeToken(15043, 3186), " world");
  EXPECT_EQ(t->DecodeToken(15043, 0), "<unk>");
  // A continuation keeps its leading space.
  EXPECT_EQ(t->Decode(std::vector<int32_t>{3186}, /*prev_token=*/15043),
            " world");
  EXPECT_EQ(t->Decode(std::vector<int32_t>{3186}, /*prev_token=*/1), "world");
  // A token's own text: the SPM space kept, a control token's text.
  EXPECT_EQ(t->TokenText(15043), " Hello");
  EXPECT_EQ(t->TokenText(1), "<s>");
  EXPECT_EQ(t->TokenText(13), "\n");
  EXPECT_EQ(t->TokenText(0), "<unk>");
  EXPECT_EQ(t->TokenText(-1), "");
  EXPECT_EQ(t->TokenText(32000), "");
  // Rendered chat prompts: the text of a control token is that token.
  EXPECT_THAT(t->EncodeWithSpecialTokens("Hello world</s><s>Hello world", true),
              ElementsAre(1, 15043, 3186, 2, 1, 15043, 3186));
  EXPECT_THAT(t->EncodeWithSpecialTokens("<s>", false), ElementsAre(1));
  EXPECT_EQ(t->EncodeWithSpecialTokens("Hello <unk> world", false),
            t->Encode("Hello <unk> world", false));
}

TEST(GgufTokenizer, Gpt2SpecialsAndBytes) {
  std::unique_ptr<GgufFile> gguf =
      MustOpenGguf(testing::SharedPath("vocab/ggml-vocab-gpt-2.gguf"));
  ASSERT_NE(gguf, nullptr);
  std::unique_ptr<Tokenizer> t = MustLoad(*gguf);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), Tokenizer::Kind::kBpe);
  EXPECT_EQ(t->bos(), 50256);
  EXPECT_EQ(t->eos(), 50256);
  EXPECT_EQ(t->unk(), -1);
  EXPECT_FALSE(t->add_bos());
  EXPECT_THAT(t->Encode("Hello world", true), ElementsAre(15496, 995));
  EXPECT_EQ(t->DecodeToken(15496, 995), " world");
  EXPECT_EQ(t->DecodeToken(995, 50256), "");
  EXPECT_EQ(t->TokenText(995), " world");
  EXPECT_EQ(t->TokenText(50256), "<|endoftext|>");
  // Every byte string survives the round trip, invalid UTF-8 included.
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  all_bytes += "\xE2\x82 \xFF\xFE tail";
  EXPECT_EQ(t->Decode(t->Encode(all_bytes, false)), all_bytes);
}

// User text inside a rendered prompt never becomes a control token: "</s>"
// in a literal range is encoded as text, the same text outside is EOS.
TEST(GgufTokenizer, LiteralRangesAreNeverSpecial) {
  std::unique_ptr<GgufFile> gguf =
      MustOpenGguf(testing::SharedPath("vocab/ggml-vocab-llama-spm.gguf"));
  ASSERT_NE(gguf, nullptr);
  std::unique_ptr<Tokenizer> t = MustLoad(*gguf);
  ASSERT_NE(t, nullptr);
  const std::string text = "<s>[INST] hi </s> there [/INST]</s>";
  const size_t begin = text.find("hi"), end = text.find(" [/INST]");
  const std::vector<std::pair<size_t, size_t>> literal = {{begin, end}};
  const std::vector<int32_t> ids =
      t->EncodeWithSpecialTokens(text, false, literal);
  std::vector<int32_t> want = {t->bos()};
  const std::vector<int32_t> run =
      t->Encode("[INST] hi </s> there [/INST]", false);
  want.insert(want.end(), run.begin(), run.end());
  want.push_back(t->eos());
  EXPECT_EQ(ids, want);
  // Without the range, the user's "</s>" is EOS: two of them.
  const std::vector<int32_t> open = t->EncodeWithSpecialTokens(text, false);
  EXPECT_EQ(std::count(open.begin(), open.end(), t->eos()), 2);
  // A special token straddling a range's start is not one either.
  const std::vector<std::pair<size_t, size_t>> straddle = {
      {text.size() - 2, text.size()}};
  const std::vector<int32_t> cut =
      t->EncodeWithSpecialTokens(text, false, straddle);
  EXPECT_EQ(std::count(cut.begin(), cut.end(), t->eos()), 1);
}

TEST(GgufTokenizer, DecodeOfBadIdsIsEmpty) {
  std::unique_ptr<GgufFile> gguf =
      MustOpenGguf(testing::SharedPath("vocab/ggml-vocab-gpt-2.gguf"));
  ASSERT_NE(gguf, nullptr);
  std::unique_ptr<Tokenizer> t = MustLoad(*gguf);
  ASSERT_NE(t, nullptr);
  for (int32_t id : {-1, -7, t->vocab_size(), INT_MAX, INT_MIN}) {
    EXPECT_EQ(t->DecodeToken(-1, id), "");
    EXPECT_EQ(t->piece(id), "");
  }
  EXPECT_EQ(t->Decode(std::vector<int32_t>{15496, -3, 99999999, 995}),
            "Hello world");
}

// Random text built from `fragments` (and, with `raw_bytes`, single random
// bytes, which may make it invalid UTF-8).
std::string RandomText(std::mt19937* rng, bool raw_bytes) {
  static const std::vector<std::string> kFragments = {
      "a",        "Z",        "the",          " ",
      "  ",       "\n",       "\t",           "\r\n",
      "3",        "42",       "'s",           "!",
      "\xC3\xA9", "\xD0\xB6", "\xE4\xBD\xA0", "\xF0\x9F\x98\x80",
      "<s>"};
  std::string text;
  const int n = std::uniform_int_distribution<int>(0, 24)(*rng);
  for (int i = 0; i < n; ++i) {
    const int pick = std::uniform_int_distribution<int>(
        0, static_cast<int>(kFragments.size()) - (raw_bytes ? 0 : 1))(*rng);
    if (pick == static_cast<int>(kFragments.size())) {
      text.push_back(
          static_cast<char>(std::uniform_int_distribution<int>(0, 255)(*rng)));
    } else {
      text += kFragments[pick];
    }
  }
  return text;
}

// Decode(Encode(text)) == text on random text: any bytes for byte-level BPE,
// valid UTF-8 for SentencePiece (whose byte fallback cannot tell a prefix
// space from a space that invalid UTF-8 grouped with continuation bytes).
TEST(GgufTokenizer, RandomRoundTrips) {
  for (const char* name :
       {"ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"}) {
    std::unique_ptr<GgufFile> gguf =
        MustOpenGguf(testing::SharedPath(std::string("vocab/") + name));
    ASSERT_NE(gguf, nullptr);
    std::unique_ptr<Tokenizer> t = MustLoad(*gguf);
    ASSERT_NE(t, nullptr);
    const bool raw_bytes = t->kind() == Tokenizer::Kind::kBpe;
    std::mt19937 rng(1234);
    for (int i = 0; i < 500; ++i) {
      const std::string text = RandomText(&rng, raw_bytes);
      const std::vector<int32_t> ids = t->Encode(text, true);
      ASSERT_EQ(t->Decode(ids), text) << name << " case " << i;
      for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t->vocab_size());
    }
    // Random ids decode without crashing.
    std::vector<int32_t> ids(1000);
    for (int32_t& id : ids) {
      id = std::uniform_int_distribution<int32_t>(-5, t->vocab_size() + 5)(rng);
    }
    t->Decode(ids);
  }
}

// ---------------------------------------------------------------------------
// Small hand-made vocabularies, written as GGUF images.

class VocabBuilder {
 public:
  explicit VocabBuilder(std::string_view model) {
    writer_.SetString("tokenizer.ggml.model", model);
  }
  VocabBuilder& Tokens(std::vector<std::string_view> tokens) {
    writer_.SetStringArray("tokenizer.ggml.tokens", tokens);
    return *this;
  }
  VocabBuilder& Scores(std::vector<float> scores) {
    writer_.SetF32Array("tokenizer.ggml.scores", scores);
    return *this;
  }
  VocabBuilder& Types(std::vector<int32_t> types) {
    writer_.SetI32Array("tokenizer.ggml.token_type", types);
    return *this;
  }
  VocabBuilder& Merges(std::vector<std::string_view> merges) {
    writer_.SetStringArray("tokenizer.ggml.merges", merges);
    return *this;
  }
  GgufWriter& writer() { return writer_; }

  Result<std::unique_ptr<Tokenizer>> Load() {
    image_ = writer_.Serialize();
    KV_ASSIGN_OR_RETURN(
        gguf_, GgufFile::Parse(reinterpret_cast<const uint8_t*>(image_.data()),
                               image_.size()));
    return Tokenizer::FromGguf(*gguf_);
  }
  std::unique_ptr<Tokenizer> MustLoad() {
    Result<std::unique_ptr<Tokenizer>> t = Load();
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(*t) : nullptr;
  }

 private:
  GgufWriter writer_;
  std::string image_;
  std::unique_ptr<GgufFile> gguf_;
};

// "▁" written out, for readable vocabularies.
#define SP "\xE2\x96\x81"

// <unk> <s> </s> <0x41>('A') ▁ a b ab ▁a ▁ab ba
VocabBuilder SmallSpm() {
  VocabBuilder b("llama");
  b.Tokens({"<unk>", "<s>", "</s>", "<0x41>", SP, "a", "b", "ab", SP "a",
            SP "ab", "ba"})
      .Scores({0, 0, 0, 0, -1, -2, -3, -4, -5, -6, -4});
  return b;
}

TEST(SpmTokenizer, MergesHighestScoreFirst) {
  std::unique_ptr<Tokenizer> t = SmallSpm().MustLoad();
  ASSERT_NE(t, nullptr);
  // "▁ab": (▁,a)->▁a -5, (a,b)->ab -4 wins, then (▁,ab)->▁ab.
  EXPECT_THAT(t->Encode("ab", false), ElementsAre(9));
  // "▁bab": (b,a)->ba -4 and (a,b)->ab -4 tie: leftmost (ba) wins.
  EXPECT_THAT(t->Encode("bab", false), ElementsAre(4, 10, 6));
  EXPECT_EQ(t->Decode(t->Encode("bab ab", true)), "bab ab");
}

TEST(SpmTokenizer, ByteFallbackThenUnk) {
  VocabBuilder b = SmallSpm();
  // Types not given: "<0x41>" is inferred to be a byte piece.
  std::unique_ptr<Tokenizer> t = b.MustLoad();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->token_type(3), TokenType::kByte);
  EXPECT_EQ(t->token_type(1), TokenType::kControl);
  // 'A' has only its byte piece; 'C' has neither: UNK.
  EXPECT_THAT(t->Encode("aAC", false), ElementsAre(8, 3, 0));
  EXPECT_EQ(t->Decode(t->Encode("aA", false)), "aA");
}

TEST(SpmTokenizer, AddSpacePrefixOff) {
  VocabBuilder b = SmallSpm();
  b.writer().SetBool("tokenizer.ggml.add_space_prefix", false);
  b.writer().SetBool("tokenizer.ggml.add_bos_token", false);
  std::unique_ptr<Tokenizer> t = b.MustLoad();
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("ab", true), ElementsAre(7));
  EXPECT_THAT(t->Encode(" ab", false), ElementsAre(9));
  EXPECT_EQ(t->Decode(std::vector<int32_t>{9}), " ab");
}

TEST(SpmTokenizer, ControlPiecesAreNotMergedInto) {
  VocabBuilder b("llama");
  b.Tokens({"<unk>", "<s>", "</s>", "a", "b", "ab"})
      .Scores({0, 0, 0, -1, -1, -1})
      .Types({2, 3, 3, 1, 1, 3});  // "ab" is a control token here
  std::unique_ptr<Tokenizer> t = b.MustLoad();
  ASSERT_NE(t, nullptr);
  // "▁" has no piece and no byte pieces: one UNK.
  EXPECT_THAT(t->Encode("ab", false), ElementsAre(0, 3, 4));
}

// GPT-2 style: 'Ġ' (U+0120) is the space.
#define G "\xC4\xA0"

TEST(BpeTokenizer, MergesLowestRankFirst) {
  VocabBuilder b("gpt2");
  b.Tokens({"h", "e", "l", "o", G, "w", "r", "d", "he", "ll", "hell", "hello",
            G "w", "or", G "wor", G "world", "ld", "<|endoftext|>"})
      .Types({1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3})
      .Merges({"l l", "h e", "he ll", "hell o", G " w", "o r", G "w or", "l d",
               G "wor ld"});
  b.writer().SetU32("tokenizer.ggml.eos_token_id", 17);
  std::unique_ptr<Tokenizer> t = b.MustLoad();
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("hello world", true), ElementsAre(11, 15));
  EXPECT_THAT(t->Encode("held", false), ElementsAre(8, 16));
  // 'x' is not in the vocabulary and there is no UNK: dropped.
  EXPECT_THAT(t->Encode("hex", false), ElementsAre(8));
  EXPECT_EQ(t->Decode(std::vector<int32_t>{11, 15, 17}), "hello world");
  EXPECT_EQ(t->eos(), 17);
  EXPECT_EQ(t->bos(), -1);
}

TEST(BpeTokenizer, Llama3IgnoresMergesForWholeWords) {
  VocabBuilder b("gpt2");
  // "abc" is a piece that the merges cannot reach ("b c" merges first).
  b.Tokens({"a", "b", "c", "bc", "abc"}).Merges({"b c"});
  b.writer().SetString("tokenizer.ggml.pre", "llama-bpe");
  std::unique_ptr<Tokenizer> t = b.MustLoad();
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("abc", false), ElementsAre(4));
  EXPECT_TRUE(t->add_bos());  // Llama 3's default

  VocabBuilder gpt2("gpt2");
  gpt2.Tokens({"a", "b", "c", "bc", "abc"}).Merges({"b c"});
  t = gpt2.MustLoad();
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->Encode("abc", false), ElementsAre(0, 3));
}

// ---------------------------------------------------------------------------
// Bad metadata.

void ExpectLoadError(VocabBuilder b, std::string_view key) {
  Result<std::unique_ptr<Tokenizer>> t = b.Load();
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr(std::string(key)));
}

TEST(TokenizerMetadata, Errors) {
  ExpectLoadError(VocabBuilder("llama"), "tokenizer.ggml.tokens");
  {
    VocabBuilder b("llama");
    b.Tokens({});
    ExpectLoadError(std::move(b), "tokenizer.ggml.tokens");
  }
  {
    VocabBuilder b("llama");
    b.Tokens({"a", "b"});  // no scores
    ExpectLoadError(std::move(b), "tokenizer.ggml.scores");
  }
  {
    VocabBuilder b("llama");
    b.Tokens({"a", "b"}).Scores({0});
    ExpectLoadError(std::move(b), "tokenizer.ggml.scores");
  }
  {
    VocabBuilder b("llama");
    b.Tokens({"a", "b"}).Scores({0, 0}).Types({1});
    ExpectLoadError(std::move(b), "tokenizer.ggml.token_type");
  }
  {
    VocabBuilder b("llama");
    b.Tokens({"a", "b"}).Scores({0, 0}).Types({1, 9});
    ExpectLoadError(std::move(b), "tokenizer.ggml.token_type");
  }
  {
    VocabBuilder b("llama");
    b.Tokens({"a", "b"}).Scores({0, std::nanf("")});
    ExpectLoadError(std::move(b), "tokenizer.ggml.scores[1]");
  }
  {
    VocabBuilder b = SmallSpm();
    b.writer().SetU32("tokenizer.ggml.bos_token_id", 11);
    ExpectLoadError(std::move(b), "tokenizer.ggml.bos_token_id");
  }
  {
    VocabBuilder b = SmallSpm();
    b.writer().SetString("tokenizer.ggml.add_bos_token", "yes");
    ExpectLoadError(std::move(b), "tokenizer.ggml.add_bos_token");
  }
  ExpectLoadError(VocabBuilder("bert"), "tokenizer.ggml.model");
  {
    VocabBuilder b("gpt2");
    b.Tokens({"a", "b"});  // no merges
    ExpectLoadError(std::move(b), "tokenizer.ggml.merges");
  }
  for (std::string_view bad : {"ab", "a ", " "}) {
    VocabBuilder b("gpt2");
    b.Tokens({"a", "b"}).Merges({"a b", bad});
    ExpectLoadError(std::move(b), "tokenizer.ggml.merges[1]");
  }
  {
    VocabBuilder b("gpt2");
    b.Tokens({"a", "b"}).Merges({"a b"});
    b.writer().SetString("tokenizer.ggml.pre", "no-such-pre");
    ExpectLoadError(std::move(b), "tokenizer.ggml.pre");
  }
}

TEST(TokenizerMetadata, NoneIdIsAccepted) {
  VocabBuilder b = SmallSpm();
  b.writer().SetU32("tokenizer.ggml.bos_token_id", 0xFFFFFFFFu);
  std::unique_ptr<Tokenizer> t = b.MustLoad();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->bos(), -1);
  EXPECT_THAT(t->Encode("ab", true), ElementsAre(9));  // no BOS to add
}

// ---------------------------------------------------------------------------
// llama2.c tokenizer.bin.

struct RawVocab {
  std::vector<std::string> pieces;  // as in the file: ' ' for '▁'
  std::vector<float> scores;
};

RawVocab ReadRawLlama2c(const std::string& data, int vocab_size) {
  RawVocab v;
  size_t pos = 4;
  for (int i = 0; i < vocab_size; ++i) {
    float score;
    int32_t len;
    std::memcpy(&score, data.data() + pos, 4);
    std::memcpy(&len, data.data() + pos + 4, 4);
    v.scores.push_back(score);
    v.pieces.push_back(data.substr(pos + 8, len));
    pos += 8 + len;
  }
  return v;
}

// llama2.c's encode() (without BOS), written plainly from its description:
// a " " token for non-empty text, one token per character (a byte and its
// continuation bytes, at most 4) or its bytes + 3, then repeatedly the single
// best-scoring adjacent merge, leftmost among equals.
std::vector<int32_t> ReferenceLlama2cEncode(const RawVocab& v,
                                            std::string_view text) {
  std::map<std::string, int32_t, std::less<>> ids_of;
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    ids_of.emplace(v.pieces[i], static_cast<int32_t>(i));
  }
  auto lookup = [&](std::string_view s) -> int32_t {
    auto it = ids_of.find(s);
    return it == ids_of.end() ? -1 : it->second;
  };
  std::vector<int32_t> ids;
  if (text.empty()) return ids;
  ids.push_back(lookup(" "));
  for (size_t pos = 0; pos < text.size();) {
    size_t len = 1;
    while (len < 4 && pos + len < text.size() &&
           (static_cast<unsigned char>(text[pos + len]) & 0xC0) == 0x80) {
      ++len;
    }
    const int32_t id = lookup(text.substr(pos, len));
    if (id >= 0) {
      ids.push_back(id);
    } else {
      for (size_t k = 0; k < len; ++k) {
        ids.push_back(static_cast<unsigned char>(text[pos + k]) + 3);
      }
    }
    pos += len;
  }
  while (true) {
    float best_score = -1e10f;
    int best_id = -1;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const int32_t id = lookup(v.pieces[ids[i]] + v.pieces[ids[i + 1]]);
      if (id >= 0 && v.scores[id] > best_score) {
        best_score = v.scores[id];
        best_id = id;
        best_at = i;
      }
    }
    if (best_id < 0) break;
    ids[best_at] = best_id;
    ids.erase(ids.begin() + best_at + 1);
  }
  return ids;
}

std::vector<std::string> Llama2cSampleTexts() {
  std::vector<std::string> texts = {
      "",
      " ",
      "Once upon a time",
      "  two leading spaces",
      "trailing space ",
      "Lily's mom said, \"Lily, let's go to the park.\"",
      "tab\tand\nnew line\r\n",
      "h\xC3\xA9llo w\xC3\xB6rld \xF0\x9F\x98\x80 \xE4\xBD\xA0\xE5\xA5\xBD",
      "bad utf8: \xC3 \xA9\xA9\xA9\xA9\xA9 \xF0\x9F end",
  };
  // (No literal '▁' here: llama2.c and SentencePiece read it differently;
  // see LiteralSpaceMarker.)
  std::istringstream stories(
      MustRead(testing::SharedPath("data/tinystories_val.txt")));
  std::string line;
  for (int i = 0; i < 60 && std::getline(stories, line); ++i) {
    texts.push_back(line);
  }
  return texts;
}

std::unique_ptr<Tokenizer> MustLoadTok512() {
  Result<std::unique_ptr<Tokenizer>> t = Tokenizer::FromLlama2c(
      testing::SharedPath("models/stories260K/tok512.bin"), 512);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(*t) : nullptr;
}

TEST(Llama2cTokenizer, Vocabulary) {
  std::unique_ptr<Tokenizer> t = MustLoadTok512();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->kind(), Tokenizer::Kind::kSpm);
  EXPECT_EQ(t->vocab_size(), 512);
  EXPECT_EQ(t->unk(), 0);
  EXPECT_EQ(t->bos(), 1);
  EXPECT_EQ(t->eos(), 2);
  EXPECT_TRUE(t->add_bos());
  EXPECT_TRUE(t->add_space_prefix());
  EXPECT_EQ(t->token_type(1), TokenType::kControl);
  EXPECT_EQ(t->token_type(3), TokenType::kByte);
  EXPECT_EQ(t->token_type(258), TokenType::kByte);
  EXPECT_EQ(t->token_type(259), TokenType::kNormal);
  EXPECT_EQ(t->piece(259), SP "t");
  EXPECT_EQ(t->DecodeToken(-1, 1), "");
  EXPECT_EQ(t->DecodeToken(400, 3 + '\n'), "\n");
}

TEST(Llama2cTokenizer, MatchesLlama2cEncode) {
  std::unique_ptr<Tokenizer> t = MustLoadTok512();
  ASSERT_NE(t, nullptr);
  const RawVocab raw = ReadRawLlama2c(
      MustRead(testing::SharedPath("models/stories260K/tok512.bin")), 512);
  for (const std::string& text : Llama2cSampleTexts()) {
    SCOPED_TRACE("text: '" + text + "'");
    std::vector<int32_t> expected = ReferenceLlama2cEncode(raw, text);
    expected.insert(expected.begin(), 1);
    const std::vector<int32_t> ids = t->Encode(text, /*add_bos=*/true);
    EXPECT_EQ(ids, expected);
    EXPECT_EQ(t->Decode(ids), text);
  }
}

TEST(Llama2cTokenizer, AgreesWithGgufConversion) {
  std::unique_ptr<Tokenizer> bin = MustLoadTok512();
  std::unique_ptr<GgufFile> gguf =
      MustOpenGguf(testing::SharedPath("models/stories260K/stories260K.gguf"));
  ASSERT_NE(bin, nullptr);
  ASSERT_NE(gguf, nullptr);
  std::unique_ptr<Tokenizer> from_gguf = MustLoad(*gguf);
  ASSERT_NE(from_gguf, nullptr);
  EXPECT_EQ(from_gguf->vocab_size(), 512);
  for (const std::string& text : Llama2cSampleTexts()) {
    SCOPED_TRACE("text: '" + text + "'");
    EXPECT_EQ(bin->Encode(text, true), from_gguf->Encode(text, true));
  }
}

TEST(Llama2cTokenizer, DecodesGoldenGeneration) {
  std::unique_ptr<Tokenizer> t = MustLoadTok512();
  ASSERT_NE(t, nullptr);
  // BOS, then the first 20 greedy tokens of stories260K (its SOURCE.md).
  const std::vector<int32_t> ids = {1,   403, 407, 261, 378, 432, 383,
                                    286, 261, 376, 298, 315, 421, 395,
                                    317, 426, 338, 401, 396, 267, 337};
  EXPECT_EQ(t->Decode(ids),
            "Once upon a time, there was a little girl named Lily. She loved "
            "to play");
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + 5),
            t->Encode("Once upon a time", true));
}

TEST(Llama2cTokenizer, LiteralSpaceMarker) {
  std::unique_ptr<Tokenizer> bin = MustLoadTok512();
  std::unique_ptr<GgufFile> gguf =
      MustOpenGguf(testing::SharedPath("models/stories260K/stories260K.gguf"));
  ASSERT_NE(bin, nullptr);
  ASSERT_NE(gguf, nullptr);
  std::unique_ptr<Tokenizer> from_gguf = MustLoad(*gguf);
  ASSERT_NE(from_gguf, nullptr);
  const RawVocab raw = ReadRawLlama2c(
      MustRead(testing::SharedPath("models/stories260K/tok512.bin")), 512);
  const std::string text = "a " SP "b" SP;
  // llama2.c: a character like any other (here: its three bytes).
  EXPECT_EQ(bin->Encode(text, false), ReferenceLlama2cEncode(raw, text));
  EXPECT_EQ(bin->Decode(bin->Encode(text, false)), text);
  // SentencePiece: the same as a space.
  EXPECT_EQ(from_gguf->Encode(text, false), from_gguf->Encode("a  b ", false));
}

class Llama2cFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("tokenizer");
    good_ = MustRead(testing::SharedPath("models/stories260K/tok512.bin"));
    ASSERT_EQ(good_.size(), 6227u);
  }
  Status LoadImage(const std::string& image, int vocab_size = 512) {
    const std::string path = dir_ + "/tok.bin";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << image;
    return Tokenizer::FromLlama2c(path, vocab_size).status();
  }
  static void PutI32(std::string* s, size_t pos, int32_t v) {
    std::memcpy(s->data() + pos, &v, 4);
  }

  std::string dir_;
  std::string good_;
};

TEST_F(Llama2cFileTest, EveryTruncationIsAnError) {
  ASSERT_TRUE(LoadImage(good_).ok());
  for (size_t size = 0; size < good_.size(); ++size) {
    const Status s = LoadImage(good_.substr(0, size));
    ASSERT_FALSE(s.ok()) << "truncated to " << size;
    ASSERT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();
  }
}

TEST_F(Llama2cFileTest, BadLengthsAndSizes) {
  // Token 0 ("<unk>") starts at byte 4: score at 4, length at 8.
  std::string bad = good_;
  PutI32(&bad, 8, -1);
  EXPECT_THAT(LoadImage(bad).message(), HasSubstr("token 0"));
  PutI32(&bad, 8, 8);  // longer than max_token_length (7)
  EXPECT_THAT(LoadImage(bad).message(), HasSubstr("token 0"));
  PutI32(&bad, 8, 1 << 30);
  EXPECT_FALSE(LoadImage(bad).ok());
  bad = good_;
  const float nan = std::nanf("");
  std::memcpy(bad.data() + 4, &nan, 4);
  EXPECT_THAT(LoadImage(bad).message(), HasSubstr("NaN"));
  bad = good_;
  PutI32(&bad, 0, 0);  // max_token_length
  EXPECT_FALSE(LoadImage(bad).ok());
  EXPECT_THAT(LoadImage(good_, 511).message(), HasSubstr("vocab_size"));
  EXPECT_FALSE(LoadImage(good_, 513).ok());
  EXPECT_FALSE(LoadImage(good_, 0).ok());
  EXPECT_FALSE(LoadImage(good_ + "x").ok());
  EXPECT_FALSE(Tokenizer::FromLlama2c(dir_ + "/does_not_exist.bin", 512).ok());
}

}  // namespace
}  // namespace kvstash
