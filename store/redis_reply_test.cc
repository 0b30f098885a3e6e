#include "store/redis_reply.h"

#include <gtest/gtest.h>
#include <hiredis/read.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace kvstash::store {
namespace {

// Every reply in `wire`, fed one byte at a time; strings of `direct` bytes
// or more are received into their own buffers.
std::vector<RedisReply> ReadAll(
    std::string_view wire, size_t direct = RedisReplyReader::kDirectBytes) {
  RedisReplyReader reader(1 << 20, direct);
  std::vector<RedisReply> out;
  for (char c : wire) {
    reader.Feed({&c, 1});
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
  const std::vector<RedisReply> replies =
      ReadAll("+OK\r\n-ERR no\r\n:42\r\n:-7\r\n*0\r\n*-1\r\n");
  ASSERT_EQ(replies.size(), 6u);
  EXPECT_EQ(replies[0]->text(), "OK");
  EXPECT_FALSE(replies[0]->is_error());
  EXPECT_TRUE(replies[1]->is_error());
  EXPECT_EQ(replies[1]->text(), "ERR no");
  EXPECT_EQ(replies[2]->integer, 42);
  EXPECT_EQ(replies[3]->integer, -7);
  EXPECT_EQ(replies[4]->type, REDIS_REPLY_ARRAY);
  EXPECT_TRUE(replies[4]->elements.empty());
  EXPECT_EQ(replies[5]->type, REDIS_REPLY_NIL);
}

TEST(RedisReplyReader, KeepsBinaryStringsAndNestedArrays) {
  using namespace std::string_literals;
  const std::string wire =
      "$3\r\na\0b\r\n$-1\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n$0\r\n\r\n"s;
  // Strings parsed out of the reader's buffer, and received directly.
  for (const size_t direct : {RedisReplyReader::kDirectBytes, size_t{1}}) {
    SCOPED_TRACE(direct);
    const std::vector<RedisReply> replies = ReadAll(wire, direct);
    ASSERT_EQ(replies.size(), 4u);
    EXPECT_TRUE(replies[0]->is_string());
    EXPECT_EQ(replies[0]->text(), "a\0b"s);
    EXPECT_FALSE(replies[1]->is_string());  // nil
    ASSERT_EQ(replies[2]->elements.size(), 2u);
    EXPECT_EQ(replies[2]->elements[0]->integer, 1);
    EXPECT_EQ(replies[2]->elements[1]->elements[0]->text(), "x");
    EXPECT_TRUE(replies[3]->is_string());
    EXPECT_EQ(replies[3]->text(), "");
  }
}

// The connection's way of reading: whatever fits of what "arrived" is
// written at Space() and committed.
std::vector<RedisReply> Receive(RedisReplyReader& reader, std::string_view wire,
                                size_t arrives) {
  std::vector<RedisReply> out;
  while (!wire.empty()) {
    const std::span<char> space = reader.Space();
    EXPECT_FALSE(space.empty());
    const size_t n = std::min({space.size(), wire.size(), arrives});
    std::memcpy(space.data(), wire.data(), n);
    reader.Commit(n);
    wire.remove_prefix(n);
    for (Result<RedisReply> r = reader.Take(); r.ok() && *r != nullptr;
         r = reader.Take()) {
      out.push_back(std::move(r).value());
    }
  }
  return out;
}

// The header of a string reply of `n` bytes.
std::string BulkHeader(size_t n) {
  std::string h = "$";
  h.append(std::to_string(n)).append("\r\n");
  return h;
}

std::string Bulk(std::string_view bytes) {
  return BulkHeader(bytes.size()).append(bytes).append("\r\n");
}

TEST(RedisReplyReader, ReceivesLargeStringsIntoTheirOwnBuffers) {
  std::string big(300 << 10, '\0'), other((64 << 10) + 1, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char(i * 131 + 7);
  for (size_t i = 0; i < other.size(); ++i) other[i] = char(i * 17 + 3);
  const std::string wire = Bulk(big) + "$-1\r\n" + Bulk(other) + ":5\r\n" +
                           "*2\r\n" + Bulk(other) + Bulk("small") + Bulk(big);
  // Pieces that end inside headers, strings and terminators.
  for (const size_t arrives :
       {size_t{1} << 20, size_t{65536}, size_t{4099}, size_t{7}}) {
    SCOPED_TRACE(arrives);
    RedisReplyReader reader(1 << 20);
    const std::vector<RedisReply> r = Receive(reader, wire, arrives);
    ASSERT_EQ(r.size(), 6u);
    EXPECT_EQ(r[0]->text(), big);
    EXPECT_EQ(r[1]->type, REDIS_REPLY_NIL);
    EXPECT_EQ(r[2]->text(), other);
    EXPECT_EQ(r[3]->integer, 5);
    ASSERT_EQ(r[4]->elements.size(), 2u);
    EXPECT_EQ(r[4]->elements[0]->text(), other);
    EXPECT_EQ(r[4]->elements[1]->text(), "small");
    EXPECT_EQ(r[5]->text(), big);
  }
  // Once a large string's length is read, the space offered is the rest of
  // that string: the socket writes into the value.
  RedisReplyReader reader(1 << 20);
  const std::string head = BulkHeader(big.size()).append(big, 0, 1000);
  reader.Feed(head);
  EXPECT_EQ(reader.Space().size(), big.size() - 1000);
}

TEST(RedisReplyReader, StringsOverTheDirectCapAreBufferedAsTheyArrive) {
  std::string s(300, '\0');
  for (size_t i = 0; i < s.size(); ++i) s[i] = char(i * 31 + 1);
  RedisReplyReader reader(1 << 20, 1, 100);
  reader.Feed(BulkHeader(s.size()));
  // Not allocated on its announcement: the space offered is the reader's.
  EXPECT_NE(reader.Space().size(), s.size());
  const std::vector<RedisReply> r =
      Receive(reader, s + "\r\n" + Bulk(s.substr(0, 100)), 7);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0]->text(), s);
  EXPECT_EQ(r[1]->text(), s.substr(0, 100));
}

TEST(RedisReplyReader, RefusesAStringThatDoesNotEndWhereItsLengthSays) {
  for (const size_t direct : {RedisReplyReader::kDirectBytes, size_t{1}}) {
    RedisReplyReader reader(1 << 20, direct);
    reader.Feed(std::string("+first\r\n$3\r\nabcd\r\n"));
    Result<RedisReply> first = reader.Take();
    ASSERT_TRUE(first.ok());
    ASSERT_NE(*first, nullptr);  // what completed before the fault
    EXPECT_EQ((*first)->text(), "first");
    Result<RedisReply> r = reader.Take();
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("does not end"), std::string::npos);
  }
}

TEST(RedisReplyReader, RefusesBadLengthsDeepNestingAndEndlessLines) {
  for (const std::string wire : {"$-2\r\n", "$536870913\r\n", "$x\r\n",
                                 ":12a\r\n", "*-2\r\n", "*1x\r\n", "\r\n"}) {
    SCOPED_TRACE(wire);
    RedisReplyReader reader(1 << 20);
    reader.Feed(wire);
    EXPECT_FALSE(reader.Take().ok());
  }
  std::string nested;
  for (int i = 0; i < 9; ++i) nested += "*1\r\n";
  RedisReplyReader deep(1 << 20);
  deep.Feed(nested);
  EXPECT_FALSE(deep.Take().ok());
  std::string eight;
  for (int i = 0; i < 8; ++i) eight += "*1\r\n";
  RedisReplyReader fine(1 << 20);
  fine.Feed(eight + ":1\r\n");
  Result<RedisReply> r = fine.Take();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_NE(*r, nullptr);
  RedisReplyReader endless(1 << 20);
  endless.Feed("+" + std::string(65 << 10, 'a'));
  EXPECT_FALSE(endless.Take().ok());
}

TEST(RedisReplyReader, RefusesWhatIsNotTheProtocol) {
  RedisReplyReader reader(1 << 20);
  const std::string junk = "?what\r\n";
  reader.Feed(junk);
  Result<RedisReply> r = reader.Take();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("protocol error"), std::string::npos);
}

TEST(RedisReplyReader, RefusesHugeArraysBeforeAllocatingThem) {
  RedisReplyReader reader(1 << 20);
  const std::string wire = "*2147483647\r\n";
  reader.Feed(wire);
  EXPECT_FALSE(reader.Take().ok());
  // The largest allowed array is read.
  RedisReplyReader fine(1 << 20);
  std::string big = "*65536\r\n";
  for (int i = 0; i < 65536; ++i) big += ":1\r\n";
  fine.Feed(big);
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
