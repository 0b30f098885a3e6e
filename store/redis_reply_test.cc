#include "store/redis_reply.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

namespace kvstash::store {
namespace {

// Every reply in `wire`, fed one byte at a time.
std::vector<RedisReply> ReadAll(std::string_view wire) {
  RedisReplyReader reader(1 << 20);
  std::vector<RedisReply> out;
  for (char c : wire) {
    EXPECT_TRUE(reader.Feed({&c, 1}).ok());
    for (;;) {
      Result<RedisReply> r = reader.Take();
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      if (!r.ok() || *r == nullptr) break;
      out.push_back(std::move(r).value());
    }
  }
  return out;
}

TEST(RedisReplyReader, ReadsEveryTypeFedAByteAtATime) {
  const std::vector<RedisReply> replies = ReadAll("+OK\r\n-ERR no\r\n:42\r\n");
  ASSERT_EQ(replies.size(), 3u);
  EXPECT_EQ(replies[0]->text(), "OK");
  EXPECT_FALSE(replies[0]->is_error());
  EXPECT_TRUE(replies[1]->is_error());
  EXPECT_EQ(replies[1]->text(), "ERR no");
  EXPECT_EQ(replies[2]->integer, 42);
}

TEST(RedisReplyReader, KeepsBinaryStringsAndNestedArrays) {
  using namespace std::string_literals;
  const std::vector<RedisReply> replies =
      ReadAll("$3\r\na\0b\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"s);
  ASSERT_EQ(replies.size(), 3u);
  EXPECT_TRUE(replies[0]->is_string());
  EXPECT_EQ(replies[0]->text(), "a\0b"s);
  EXPECT_FALSE(replies[1]->is_string());  // nil
  ASSERT_EQ(replies[2]->elements.size(), 2u);
  EXPECT_EQ(replies[2]->elements[0]->integer, 1);
  EXPECT_EQ(replies[2]->elements[1]->elements[0]->text(), "x");
}

TEST(RedisReplyReader, RefusesWhatIsNotTheProtocol) {
  RedisReplyReader reader(1 << 20);
  const std::string junk = "?what\r\n";
  ASSERT_TRUE(reader.Feed(junk).ok());
  Result<RedisReply> r = reader.Take();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("protocol error"), std::string::npos);
}

TEST(RedisReplyReader, RefusesHugeArraysBeforeAllocatingThem) {
  RedisReplyReader reader(1 << 20);
  const std::string wire = "*2147483647\r\n";
  ASSERT_TRUE(reader.Feed(wire).ok());
  EXPECT_FALSE(reader.Take().ok());
  // The largest allowed array is read.
  RedisReplyReader fine(1 << 20);
  std::string big = "*65536\r\n";
  for (int i = 0; i < 65536; ++i) big += ":1\r\n";
  ASSERT_TRUE(fine.Feed(big).ok());
  Result<RedisReply> r = fine.Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_NE(*r, nullptr);
  EXPECT_EQ((*r)->elements.size(), 65536u);
}

TEST(ParseRedirect, MovedAndAskWithAndWithoutHost) {
  const std::vector<RedisReply> replies = ReadAll(
      "-MOVED 3999 10.0.0.2:7001\r\n-ASK 16383 :7002\r\n"
      "-MOVED 16384 h:1\r\n-MOVED 12 h:0\r\n-MOVED x h:1\r\n"
      "-ERR MOVED 1 h:1\r\n+MOVED 1 h:1\r\n-MOVED 1\r\n");
  ASSERT_EQ(replies.size(), 8u);
  std::optional<RedisRedirect> moved = ParseRedirect(*replies[0], "me");
  ASSERT_TRUE(moved.has_value());
  EXPECT_FALSE(moved->ask);
  EXPECT_EQ(moved->slot, 3999);
  EXPECT_EQ(moved->to, (RedisEndpoint{"10.0.0.2", 7001}));
  std::optional<RedisRedirect> ask = ParseRedirect(*replies[1], "me");
  ASSERT_TRUE(ask.has_value());
  EXPECT_TRUE(ask->ask);
  EXPECT_EQ(ask->slot, 16383);
  EXPECT_EQ(ask->to, (RedisEndpoint{"me", 7002}));
  for (size_t i = 2; i < replies.size(); ++i) {
    EXPECT_FALSE(ParseRedirect(*replies[i], "me").has_value()) << i;
  }
}

TEST(ParseClusterSlots, RangesWithMastersAndReplicas) {
  const std::vector<RedisReply> replies = ReadAll(
      "*2\r\n"
      "*4\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n"
      "*2\r\n$9\r\n127.0.0.1\r\n:7003\r\n"
      "*3\r\n:8192\r\n:16383\r\n*2\r\n$0\r\n\r\n:7001\r\n");
  ASSERT_EQ(replies.size(), 1u);
  Result<std::vector<RedisSlotRange>> ranges = ParseClusterSlots(*replies[0]);
  ASSERT_TRUE(ranges.ok()) << ranges.status().ToString();
  ASSERT_EQ(ranges->size(), 2u);
  EXPECT_EQ((*ranges)[0].first, 0);
  EXPECT_EQ((*ranges)[0].last, 8191);
  EXPECT_EQ((*ranges)[0].master, (RedisEndpoint{"127.0.0.1", 7000}));
  EXPECT_EQ((*ranges)[1].first, 8192);
  EXPECT_EQ((*ranges)[1].master, (RedisEndpoint{"", 7001}));
}

TEST(ParseClusterSlots, RefusesMalformedReplies) {
  for (std::string_view wire : {
           "+OK\r\n",
           "*1\r\n:1\r\n",
           "*1\r\n*2\r\n:0\r\n:1\r\n",
           "*1\r\n*3\r\n:5\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n",  // first > last
           "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n",  // slot range
           "*1\r\n*3\r\n:-1\r\n:4\r\n*2\r\n$1\r\nh\r\n:1\r\n",
           "*1\r\n*3\r\n:0\r\n:4\r\n*2\r\n:1\r\n:1\r\n",           // host type
           "*1\r\n*3\r\n:0\r\n:4\r\n*2\r\n$1\r\nh\r\n:70000\r\n",  // port
           "*1\r\n*3\r\n:0\r\n:4\r\n*1\r\n$1\r\nh\r\n",
       }) {
    const std::vector<RedisReply> replies = ReadAll(wire);
    ASSERT_EQ(replies.size(), 1u) << wire;
    EXPECT_FALSE(ParseClusterSlots(*replies[0]).ok()) << wire;
  }
}

}  // namespace
}  // namespace kvstash::store
