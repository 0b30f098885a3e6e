#include "model/byte_level.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kvstash {
namespace {

using ::testing::ElementsAre;

std::unique_ptr<RegexSplitter> MustCompile(PreTokenizerType type) {
  Result<std::unique_ptr<RegexSplitter>> s =
      RegexSplitter::Compile(PreTokenizerPattern(type));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(*s) : nullptr;
}

std::string Join(const std::vector<std::string_view>& pieces) {
  std::string s;
  for (std::string_view p : pieces) s += p;
  return s;
}

TEST(ByteLevel, MappingMatchesGpt2) {
  EXPECT_EQ(ByteLevelEncode(" "), "\xC4\xA0");   // 'Ġ'
  EXPECT_EQ(ByteLevelEncode("\n"), "\xC4\x8A");  // 'Ċ'
  EXPECT_EQ(ByteLevelEncode("a!~"), "a!~");
  EXPECT_EQ(ByteLevelEncode("\xA1"), "\xC2\xA1");  // '¡' maps to itself
  EXPECT_EQ(ByteLevelEncode("\xAD"), "\xC5\x83");  // soft hyphen: U+0143
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(ByteLevelDecode(ByteLevelEncode(all)), all);
  // Code points outside the mapping pass through.
  EXPECT_EQ(ByteLevelDecode("\xE2\x96\x81x\xC3"), "\xE2\x96\x81x\xC3");
}

TEST(PreTokenizer, Names) {
  EXPECT_EQ(*ParsePreTokenizerType(""), PreTokenizerType::kGpt2);
  EXPECT_EQ(*ParsePreTokenizerType("gpt-2"), PreTokenizerType::kGpt2);
  EXPECT_EQ(*ParsePreTokenizerType("default"), PreTokenizerType::kGpt2);
  EXPECT_EQ(*ParsePreTokenizerType("llama-bpe"), PreTokenizerType::kLlama3);
  EXPECT_EQ(*ParsePreTokenizerType("qwen2"), PreTokenizerType::kQwen2);
  Result<PreTokenizerType> bad = ParsePreTokenizerType("deepseek-llm");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kNotSupported);
}

TEST(PreTokenizer, Gpt2Split) {
  std::unique_ptr<RegexSplitter> s = MustCompile(PreTokenizerType::kGpt2);
  ASSERT_NE(s, nullptr);
  EXPECT_THAT(s->Split("Hello, y'all! 12345  x\t\n"),
              ElementsAre("Hello", ",", " y", "'", "all", "!", " 12345", " ",
                          " x", "\t\n"));
  EXPECT_THAT(s->Split("caf\xC3\xA9 \xD0\xBC\xD0\xB8\xD1\x80"),
              ElementsAre("caf\xC3\xA9", " \xD0\xBC\xD0\xB8\xD1\x80"));
  EXPECT_TRUE(s->Split("").empty());
}

TEST(PreTokenizer, Llama3AndQwen2Digits) {
  std::unique_ptr<RegexSplitter> llama3 =
      MustCompile(PreTokenizerType::kLlama3);
  std::unique_ptr<RegexSplitter> qwen2 = MustCompile(PreTokenizerType::kQwen2);
  ASSERT_NE(llama3, nullptr);
  ASSERT_NE(qwen2, nullptr);
  EXPECT_THAT(llama3->Split("I'M 12345 ok\n\n"),
              ElementsAre("I", "'M", " ", "123", "45", " ok", "\n\n"));
  EXPECT_THAT(qwen2->Split("x 123"), ElementsAre("x", " ", "1", "2", "3"));
}

TEST(PreTokenizer, InvalidUtf8IsKeptInGaps) {
  std::unique_ptr<RegexSplitter> s = MustCompile(PreTokenizerType::kGpt2);
  ASSERT_NE(s, nullptr);
  const std::string text = "ab\xFF\xFE cd \xC3";
  const std::vector<std::string_view> pieces = s->Split(text);
  EXPECT_EQ(Join(pieces), text);
  EXPECT_THAT(pieces, ElementsAre("ab", "\xFF\xFE", " cd", " ", "\xC3"));
}

TEST(PreTokenizer, LongRunsSplitNormally) {
  for (PreTokenizerType type :
       {PreTokenizerType::kGpt2, PreTokenizerType::kLlama3}) {
    std::unique_ptr<RegexSplitter> s = MustCompile(type);
    ASSERT_NE(s, nullptr);
    const std::string spaces(1 << 20, ' ');
    const std::string letters(1 << 20, 'a');
    EXPECT_THAT(s->Split(spaces + "x"),
                ElementsAre(std::string_view(spaces).substr(1), " x"));
    EXPECT_THAT(s->Split(letters + "!"), ElementsAre(letters, "!"));
  }
}

TEST(PreTokenizer, BadPatternIsAnError) {
  Result<std::unique_ptr<RegexSplitter>> s = RegexSplitter::Compile("(a");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstash
