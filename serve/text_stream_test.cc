#include "serve/text_stream.h"

#include <gtest/gtest.h>

namespace kvstash {
namespace {

// Feeds pieces and returns everything released, with Flush at the end.
std::string Feed(TextStream& s, std::vector<std::string> pieces) {
  std::string out;
  for (const std::string& p : pieces) out += s.Add(p);
  return out + s.Flush();
}

TEST(TextStreamTest, PassesTextThroughWithoutStops) {
  TextStream s({});
  EXPECT_EQ(s.Add("Once"), "Once");
  EXPECT_EQ(s.Add(" upon"), " upon");
  EXPECT_EQ(s.Flush(), "");
  EXPECT_FALSE(s.stopped());
}

TEST(TextStreamTest, StopStringSpanningPiecesCutsBeforeIt) {
  TextStream s({"The end", "\n\n"});
  EXPECT_EQ(s.Add("happy. The"), "happy. ");  // "The" may start "The end"
  EXPECT_EQ(s.Add(" e"), "");
  EXPECT_EQ(s.Add("nd. More"), "");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.Add("ignored"), "");
  EXPECT_EQ(s.Flush(), "");
}

TEST(TextStreamTest, FalseStartIsReleased) {
  TextStream s({"The end"});
  EXPECT_EQ(Feed(s, {"The e", "ar", "ly bird"}), "The early bird");
  EXPECT_FALSE(s.stopped());
}

TEST(TextStreamTest, EarliestOfSeveralStopsWins) {
  TextStream s({"cat", "dog"});
  EXPECT_EQ(Feed(s, {"a dog and a cat"}), "a ");
  EXPECT_TRUE(s.stopped());
}

TEST(TextStreamTest, IncompleteUtf8IsHeldUntilComplete) {
  TextStream s({});
  const std::string snowman = "\xE2\x98\x83";  // U+2603
  EXPECT_EQ(s.Add(std::string("a").append(snowman, 0, 1)), "a");
  EXPECT_EQ(s.Add(snowman.substr(1, 1)), "");
  EXPECT_EQ(s.Add(snowman.substr(2)), snowman);
  const std::string emoji = "\xF0\x9F\x98\x80";  // U+1F600
  EXPECT_EQ(s.Add(emoji.substr(0, 3)), "");
  EXPECT_EQ(s.Add(emoji.substr(3) + "!"), emoji + "!");
  // A broken sequence at the very end is released by Flush as it is.
  EXPECT_EQ(s.Add("\xC3"), "");
  EXPECT_EQ(s.Flush(), "\xC3");
}

TEST(TextStreamTest, EmptyStopStringsAreIgnored) {
  TextStream s({"", "x"});
  EXPECT_EQ(Feed(s, {"abc"}), "abc");
}

}  // namespace
}  // namespace kvstash
