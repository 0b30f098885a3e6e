#include "store/redis_tier.h"

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/crc16.h"
#include "store/object_format.h"
#include "store/object_testing.h"
#include "store/redis_probe.h"
#include "store/redis_url.h"
#include "store/tier_test_util.h"
#include "tests/testing/redis_server.h"

namespace kvstash::store {
namespace {

using kernels::BlockLayout;
using std::chrono::milliseconds;
using testing::RedisClient;
using testing::RedisCluster;
using testing::RedisServer;
using Bytes = std::vector<uint8_t>;
using Clock = std::chrono::steady_clock;

std::vector<BlockKey> Keys(uint64_t first, uint64_t count) {
  std::vector<BlockKey> keys;
  for (uint64_t i = first; i < first + count; ++i) keys.push_back(KeyOf(i));
  return keys;
}

// What Get returned, with its MAC fields zeroed (nullopt stays nullopt).
std::optional<Bytes> Unsealed(std::optional<Bytes> got) {
  if (got) *got = store::Unsealed(std::move(*got));
  return got;
}

// The tier key of these tests' fleet.
const ObjectAuthenticator& FleetKey() {
  static const ObjectAuthenticator key =
      ObjectAuthenticator::FromSecret("redis tier tests' fleet secret, 40 B")
          .value();
  return key;
}

// Opens a tier of the fleet: keyed with FleetKey() unless `options` name
// another key or ask for an insecure tier.
std::unique_ptr<RedisTier> OpenTier(RedisTierOptions options) {
  if (!options.authenticator.keyed() && !options.insecure) {
    options.authenticator = FleetKey();
  }
  Result<std::unique_ptr<RedisTier>> tier = RedisTier::Open(options);
  KV_CHECK_MSG(tier.ok(), tier.status().ToString().c_str());
  return std::move(tier).value();
}

// Options for failure tests: short timeouts and backoff.
RedisTierOptions FastOptions(const std::string& url) {
  RedisTierOptions o;
  o.url = url;
  o.authenticator = FleetKey();
  o.connect_timeout = milliseconds(200);
  o.command_timeout = milliseconds(300);
  o.min_backoff = milliseconds(50);
  o.max_backoff = milliseconds(200);
  return o;
}

std::unique_ptr<RedisServer> StartServer(
    const testing::RedisServerOptions& options = {}) {
  Result<std::unique_ptr<RedisServer>> s = RedisServer::Start(options);
  KV_CHECK_MSG(s.ok(), s.status().ToString().c_str());
  return std::move(s).value();
}

std::unique_ptr<RedisCluster> StartCluster() {
  Result<std::unique_ptr<RedisCluster>> c = RedisCluster::Start(3);
  KV_CHECK_MSG(c.ok(), c.status().ToString().c_str());
  return std::move(c).value();
}

std::unique_ptr<RedisClient> Client(int port, std::string_view password = "") {
  Result<std::unique_ptr<RedisClient>> c = RedisClient::Connect(port, password);
  KV_CHECK_MSG(c.ok(), c.status().ToString().c_str());
  return std::move(c).value();
}

// The most connections a tier may have tried since `since`: one, then one
// per backoff window that has ended (each at least min_backoff long).
uint64_t MostConnectAttemptsSince(Clock::time_point since,
                                  const RedisTierOptions& o) {
  return 1u + uint64_t((Clock::now() - since) / o.min_backoff);
}

void PutAll(RedisTier& tier, uint64_t first, uint64_t count, int blocks = 1) {
  for (uint64_t i = first; i < first + count; ++i) {
    ASSERT_TRUE(tier.Put(KeyOf(i), MakeObject(i, blocks)).ok());
  }
  tier.Flush();
}

size_t CountHits(const std::vector<std::optional<Bytes>>& got) {
  size_t n = 0;
  for (const auto& g : got) n += g.has_value();
  return n;
}

// Retries Put + Flush + Get of fresh keys until one hits or `timeout` passes.
bool WorksAgainWithin(RedisTier& tier, milliseconds timeout, uint64_t id) {
  const Clock::time_point give_up = Clock::now() + timeout;
  for (; Clock::now() < give_up; ++id) {
    EXPECT_TRUE(tier.Put(KeyOf(id), MakeObject(id)).ok());
    tier.Flush();
    const BlockKey key = KeyOf(id);
    if (Unsealed(tier.Get({&key, 1})[0]) == MakeObject(id)) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

TEST(Crc16Test, SpecValuesAndHashTags) {
  EXPECT_EQ(Crc16Xmodem("123456789"), 0x31C3);
  EXPECT_EQ(Crc16Xmodem(""), 0);
  EXPECT_EQ(RedisClusterSlot("foo"), 12182);  // CLUSTER KEYSLOT foo
  EXPECT_EQ(RedisClusterSlot("{user1000}.following"),
            RedisClusterSlot("{user1000}.followers"));
  EXPECT_EQ(RedisClusterSlot("{user1000}.following"),
            RedisClusterSlot("user1000"));
  EXPECT_EQ(RedisClusterSlot("foo{}{bar}"), Crc16Xmodem("foo{}{bar}") % 16384);
  EXPECT_EQ(RedisClusterSlot("foo{{bar}}zap"), RedisClusterSlot("{bar"));
  EXPECT_EQ(RedisClusterSlot("foo{bar}{zap}"), RedisClusterSlot("bar"));
  EXPECT_EQ(RedisClusterSlot("{"), Crc16Xmodem("{") % 16384);
}

TEST(RedisUrlTest, ParsesEndpoints) {
  Result<RedisUrl> one = ParseRedisUrl("redis://h:6379");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->endpoints, (std::vector<RedisEndpoint>{{"h", 6379}}));
  EXPECT_EQ(one->user, "");
  EXPECT_EQ(one->password, "");
  Result<RedisUrl> many =
      ParseRedisUrl("redis://10.0.0.1:7000,[::1]:7001,name.example:1");
  ASSERT_TRUE(many.ok()) << many.status().ToString();
  EXPECT_EQ(many->endpoints,
            (std::vector<RedisEndpoint>{
                {"10.0.0.1", 7000}, {"::1", 7001}, {"name.example", 1}}));
  EXPECT_EQ(many->endpoints[1].ToString(), "[::1]:7001");
  Result<RedisEndpoint> moved = ParseRedisEndpoint("::1:7002");
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(*moved, (RedisEndpoint{"::1", 7002}));
}

TEST(RedisUrlTest, RefusesBadUrlsClearly) {
  for (const char* url : {"",
                          "http://h:1",
                          "redis://",
                          "redis://h",
                          "redis://h:",
                          "redis://:1",
                          "redis://h:0",
                          "redis://h:65536",
                          "redis://h:12a",
                          "redis://h:1,",
                          "redis://h:1/0",
                          "redis://h:1?x=y",
                          "redis://@h:1",
                          "redis://:@h:1",
                          "redis://u:p@",
                          "redis://u:p@:1",
                          "redis://u:p@h",
                          "redis://u:p%4@h:1",
                          "redis://u:p%zz@h:1",
                          "redis://u%:p@h:1",
                          "redis://u:p@h:1/0",
                          "redis://u:p@h@:1"}) {
    Result<RedisUrl> r = ParseRedisUrl(url);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_NE(
        r.status().message().find("expected redis://[USER:PASSWORD@]HOST:PORT"),
        std::string::npos)
        << r.status().message();
  }
}

TEST(RedisUrlTest, ParsesCredentials) {
  struct Case {
    const char* url;
    const char* user;
    const char* password;
  };
  for (const Case& c : {
           Case{"redis://alice:secret@h:1", "alice", "secret"},
           Case{"redis://:secret@h:1", "", "secret"},
           Case{"redis://alice@h:1", "alice", ""},
           Case{"redis://a%3Ab:p%40ss%3a%25@h:1", "a:b", "p@ss:%"},
           // The last '@' ends the credentials; the first ':' the user.
           Case{"redis://u:p@s:s/w?d@h:1", "u", "p@s:s/w?d"},
       }) {
    Result<RedisUrl> r = ParseRedisUrl(c.url);
    ASSERT_TRUE(r.ok()) << c.url << ": " << r.status().ToString();
    EXPECT_EQ(r->user, c.user) << c.url;
    EXPECT_EQ(r->password, c.password) << c.url;
    EXPECT_EQ(r->endpoints, (std::vector<RedisEndpoint>{{"h", 1}})) << c.url;
  }
  Result<RedisUrl> two = ParseRedisUrl("redis://:pw@h:1,[::1]:2");
  ASSERT_TRUE(two.ok()) << two.status().ToString();
  EXPECT_EQ(two->endpoints, (std::vector<RedisEndpoint>{{"h", 1}, {"::1", 2}}));
  EXPECT_EQ(two->password, "pw");
}

TEST(RedisUrlTest, MessagesNeverShowThePassword) {
  EXPECT_EQ(RedactRedisUrl("redis://alice:s3cr3t@h:1,h:2"),
            "redis://***@h:1,h:2");
  EXPECT_EQ(RedactRedisUrl("redis://h:1"), "redis://h:1");
  EXPECT_EQ(RedactRedisUrl("u:s3cr3t@h:1"), "***@h:1");
  for (const char* url : {"redis://alice:s3cr3t@h:0", "redis://:s3cr3t@h",
                          "redis://:s3cr3t@h:1/0", "redis://:s3cr3t%@h:1",
                          "rediss://:s3cr3t@h:1", "http://:s3cr3t@h:1"}) {
    Result<RedisUrl> r = ParseRedisUrl(url);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().message().find("s3cr3t"), std::string::npos)
        << r.status().message();
    EXPECT_NE(r.status().message().find("://***@h"), std::string::npos)
        << r.status().message();
  }
}

TEST(RedisTierTest, OpenRefusesBadOptions) {
  const RedisTierOptions good = FastOptions("redis://127.0.0.1:1");
  std::vector<RedisTierOptions> bad(9, good);
  bad[0].url = "127.0.0.1:6379";
  bad[1].ttl_seconds = -1;
  bad[2].pool_size = 0;
  bad[3].connect_timeout = milliseconds(0);
  bad[4].max_queue_bytes = 0;
  bad[5].min_backoff = milliseconds(0);
  bad[6].max_backoff = milliseconds(10);
  bad[7].url = "redis://alice@127.0.0.1:1";  // a user without a password
  bad[8].url = "redis://:s3cr3t@127.0.0.1:1";
  bad[8].pool_size = 0;
  for (const RedisTierOptions& o : bad) {
    Result<std::unique_ptr<RedisTier>> t = RedisTier::Open(o);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(t.status().message().find("s3cr3t"), std::string::npos)
        << t.status().message();
  }
  RedisTierOptions from_options = good;
  from_options.user = "alice";
  EXPECT_EQ(RedisTier::Open(from_options).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(RedisTierTest, PutGetExistsEraseRoundTrip) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto tier = OpenTier({.url = server->url()});
  EXPECT_EQ(tier->name(), "redis");
  EXPECT_EQ(tier->Describe(), "standalone " + server->endpoint());
  const std::vector<BlockKey> keys = Keys(0, 5);
  for (uint64_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(tier->Put(keys[i], MakeObject(i, 1 + int(i % 3))).ok());
  }
  // Visible at once, stored or not.
  EXPECT_EQ(tier->Exists(keys), std::vector<bool>(5, true));
  tier->Flush();
  const TierStats after_put = tier->Stats();
  EXPECT_EQ(after_put.writes, 5u);
  EXPECT_EQ(after_put.queue_objects, 0u);
  EXPECT_EQ(after_put.queue_bytes, 0u);

  // Stored under prefix + hex, binary-safe (the payloads hold zero bytes).
  auto raw = Client(server->port());
  EXPECT_EQ(tier->RedisKey(keys[2]), "kvstash:" + keys[2].Hex());
  const std::string stored = raw->Text({"GET", tier->RedisKey(keys[2])});
  EXPECT_EQ(Unsealed(Bytes(stored.begin(), stored.end())), MakeObject(2, 3));

  const auto got = tier->Get(keys);
  for (uint64_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(got[i].has_value()) << i;
    EXPECT_EQ(Unsealed(*got[i]), MakeObject(i, 1 + int(i % 3)));
  }
  const BlockKey absent = KeyOf(99);
  EXPECT_FALSE(tier->Get({&absent, 1})[0].has_value());
  EXPECT_EQ(tier->Exists(std::vector<BlockKey>{keys[0], absent}),
            (std::vector<bool>{true, false}));

  EXPECT_TRUE(tier->Erase(keys[0]).ok());
  EXPECT_TRUE(tier->Erase(absent).ok());
  EXPECT_FALSE(tier->Exists({&keys[0], 1})[0]);
  EXPECT_FALSE(tier->Get({&keys[0], 1})[0].has_value());

  // Erase of a queued write wins over the write.
  const BlockKey late = KeyOf(7);
  ASSERT_TRUE(tier->Put(late, MakeObject(7)).ok());
  EXPECT_TRUE(tier->Erase(late).ok());
  tier->Flush();
  EXPECT_FALSE(tier->Exists({&late, 1})[0]);

  const TierStats st = tier->Stats();
  EXPECT_EQ(st.hits, 5u);
  EXPECT_EQ(st.misses, 2u);
  EXPECT_EQ(st.errors, 0u) << st.last_error;
  EXPECT_EQ(st.corrupt_dropped, 0u);
  EXPECT_GT(st.bytes_read, 0u);
  EXPECT_GE(st.bytes_written, after_put.bytes_written);
  EXPECT_EQ(st.objects, 0u);  // not tracked: Redis is shared
}

// Values of 64 KiB and more are parsed into recycled buffers: an object
// never shows another's bytes, whatever the order of their sizes.
TEST(RedisTierTest, VisitsOfRecycledReplyBuffersDoNotMixObjects) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto tier = OpenTier({.url = server->url()});
  ExpectVisitsGiveEachObjectExactly(*tier);
  std::thread other([&] { ExpectVisitsGiveEachObjectExactly(*tier); });
  ExpectVisitsGiveEachObjectExactly(*tier);
  other.join();
  EXPECT_EQ(tier->Stats().corrupt_dropped, 0u);
}

TEST(RedisTierTest, PutRefusesWhatIsNotAnObjectOfTheKey) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto tier = OpenTier({.url = server->url()});
  EXPECT_EQ(tier->Put(KeyOf(1), Bytes(200, 7)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(tier->Put(KeyOf(1), MakeObject(2)).code(),
            StatusCode::kInvalidArgument);
  auto small = OpenTier({.url = server->url(), .max_queue_bytes = 100});
  const Status dropped = small->Put(KeyOf(1), MakeObject(1));
  EXPECT_EQ(dropped.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(small->Stats().dropped_writes, 1u);
}

TEST(RedisTierTest, PipelinedBatchOf500) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto tier = OpenTier({.url = server->url()});
  PutAll(*tier, 0, 500);
  EXPECT_EQ(Client(server->port())->Integer({"DBSIZE"}), 500);
  std::vector<BlockKey> keys = Keys(0, 500);
  keys.push_back(KeyOf(1000));  // absent
  const auto got = tier->Get(keys);
  for (uint64_t i = 0; i < 500; ++i) {
    ASSERT_EQ(Unsealed(got[i]), MakeObject(i)) << i;
  }
  EXPECT_FALSE(got[500].has_value());
  std::vector<bool> want(501, true);
  want[500] = false;
  EXPECT_EQ(tier->Exists(keys), want);
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.hits, 500u);
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.writes, 500u);
  EXPECT_EQ(st.bytes_written, 500 * MakeObject(0).size());
  EXPECT_EQ(st.bytes_read, 500 * MakeObject(0).size());
}

TEST(RedisTierTest, ConcurrentCallersShareASmallPool) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  RedisTierOptions o{.url = server->url(), .pool_size = 1};
  auto tier = OpenTier(o);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = t * 100; i < t * 100 + 40; ++i) {
        if (!tier->Put(KeyOf(i), MakeObject(i)).ok()) ++bad;
        const std::vector<BlockKey> keys = Keys(t * 100, i - t * 100 + 1);
        const auto got = tier->Get(keys);
        // Served from the queue.
        if (Unsealed(got.back()) != MakeObject(i)) ++bad;
        if (tier->Exists(keys) != std::vector<bool>(keys.size(), true)) ++bad;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  tier->Flush();
  EXPECT_EQ(tier->Stats().errors, 0u) << tier->Stats().last_error;
  EXPECT_EQ(Client(server->port())->Integer({"DBSIZE"}), 160);
}

TEST(RedisTierTest, TtlIsSetAndRestartedByHits) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto raw = Client(server->port());
  auto forever = OpenTier({.url = server->url()});
  PutAll(*forever, 0, 1);
  EXPECT_EQ(raw->Integer({"TTL", forever->RedisKey(KeyOf(0))}), -1);

  auto tier = OpenTier(
      {.url = server->url(), .key_prefix = "ttl:", .ttl_seconds = 100});
  PutAll(*tier, 1, 1);
  const std::string key = tier->RedisKey(KeyOf(1));
  const long long ttl = raw->Integer({"TTL", key});
  EXPECT_GT(ttl, 90);
  EXPECT_LE(ttl, 100);
  EXPECT_EQ(raw->Integer({"EXPIRE", key, "5"}), 1);
  const BlockKey k = KeyOf(1);
  EXPECT_EQ(Unsealed(tier->Get({&k, 1})[0]), MakeObject(1));
  EXPECT_GT(raw->Integer({"TTL", key}), 90);
}

// The attack of issue 13 on a shared Redis: a value edited with its
// checksum recomputed, and a value planted unsealed, are misses, DELeted and
// counted as forged. Another server of the fleet (same key) reads what the
// tier wrote; a tier of another key reads nothing.
TEST(RedisTierTest, ForgedValuesAreRefusedDeletedAndCounted) {
  auto server = StartServer();
  auto tier = OpenTier({.url = server->url()});
  PutAll(*tier, 0, 3);
  auto raw = Client(server->port());
  const std::string stored = raw->Text({"GET", tier->RedisKey(KeyOf(0))});
  Bytes edited(stored.begin(), stored.end());
  ASSERT_EQ(edited.size(), MakeObject(0).size());
  edited[kObjectHeaderBytes + 5] ^= 1;
  RecomputeChecksum(edited);
  const Bytes planted = MakeObject(1);
  const auto text = [](const Bytes& b) {
    return std::string(b.begin(), b.end());
  };
  ASSERT_EQ(raw->Text({"SET", tier->RedisKey(KeyOf(0)), text(edited)}), "OK");
  ASSERT_EQ(raw->Text({"SET", tier->RedisKey(KeyOf(1)), text(planted)}), "OK");

  const std::vector<std::optional<Bytes>> got = tier->Get(Keys(0, 3));
  EXPECT_FALSE(got[0].has_value());
  EXPECT_FALSE(got[1].has_value());
  EXPECT_EQ(Unsealed(got[2]), MakeObject(2));
  for (uint64_t i = 0; i < 2; ++i) {
    EXPECT_EQ(raw->Integer({"EXISTS", tier->RedisKey(KeyOf(i))}), 0) << i;
  }
  TierStats st = tier->Stats();
  EXPECT_EQ(st.forged_dropped, 2u);
  EXPECT_EQ(st.corrupt_dropped, 0u);
  EXPECT_NE(st.last_error.find("PermissionDenied"), std::string::npos)
      << st.last_error;

  auto peer = OpenTier({.url = server->url()});
  const BlockKey k2 = KeyOf(2);
  EXPECT_EQ(Unsealed(peer->Get({&k2, 1})[0]), MakeObject(2));
  auto stranger = OpenTier(
      {.url = server->url(),
       .authenticator =
           ObjectAuthenticator::FromSecret(std::string(32, 'x')).value()});
  EXPECT_FALSE(stranger->Get({&k2, 1})[0].has_value());
  EXPECT_EQ(stranger->Stats().forged_dropped, 1u);
}

// Without a key, Open refuses and says how to give one, unless the tier is
// asked to be insecure: then it stores unsealed objects and reads on
// checksums alone, and a keyed tier refuses what it wrote.
TEST(RedisTierTest, UnkeyedTierIsRefusedUnlessInsecure) {
  RedisTierOptions o = FastOptions("redis://127.0.0.1:1");
  o.authenticator = ObjectAuthenticator();
  const Result<std::unique_ptr<RedisTier>> refused = RedisTier::Open(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  for (const char* hint :
       {"--tier-key-file", "KVSTASH_TIER_KEY", "--redis-insecure"}) {
    EXPECT_NE(refused.status().message().find(hint), std::string::npos)
        << refused.status().message();
  }

  auto server = StartServer();
  auto insecure = OpenTier({.url = server->url(), .insecure = true});
  PutAll(*insecure, 0, 2);
  const BlockKey k = KeyOf(1);
  EXPECT_EQ(insecure->Get({&k, 1})[0], MakeObject(1));  // unsealed
  auto keyed = OpenTier({.url = server->url()});
  EXPECT_FALSE(keyed->Get({&k, 1})[0].has_value());
  EXPECT_EQ(keyed->Stats().forged_dropped, 1u);
}

TEST(RedisTierTest, CorruptValuesMissAreDeletedAndCounted) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto tier = OpenTier({.url = server->url()});
  PutAll(*tier, 0, 4);
  auto raw = Client(server->port());
  std::string garbage("garbage\0bytes", 13);
  Bytes flipped = MakeObject(1);
  flipped.back() ^= 1;
  Bytes other = MakeObject(9);  // sealed: intact, of another key
  FleetKey().Seal(other);
  const auto text = [](const Bytes& b) {
    return std::string(b.begin(), b.end());
  };
  ASSERT_EQ(raw->Text({"SET", tier->RedisKey(KeyOf(0)), garbage}), "OK");
  ASSERT_EQ(raw->Text({"SET", tier->RedisKey(KeyOf(1)), text(flipped)}), "OK");
  ASSERT_EQ(raw->Text({"SET", tier->RedisKey(KeyOf(2)), text(other)}), "OK");
  ASSERT_EQ(raw->Text({"DEL", tier->RedisKey(KeyOf(3))}), "");
  ASSERT_EQ(raw->Text({"LPUSH", tier->RedisKey(KeyOf(3)), "x"}), "");

  EXPECT_EQ(CountHits(tier->Get(Keys(0, 3))), 0u);
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(raw->Integer({"EXISTS", tier->RedisKey(KeyOf(i))}), 0) << i;
  }
  TierStats st = tier->Stats();
  EXPECT_EQ(st.corrupt_dropped, 3u);
  EXPECT_EQ(st.misses, 3u);
  EXPECT_EQ(st.errors, 0u);
  EXPECT_NE(st.last_error.find("Corruption"), std::string::npos)
      << st.last_error;

  // A value of another type is an error reply, not damage: kept, counted.
  EXPECT_EQ(CountHits(tier->Get(Keys(3, 1))), 0u);
  st = tier->Stats();
  EXPECT_EQ(st.corrupt_dropped, 3u);
  EXPECT_EQ(st.errors, 1u);
  EXPECT_NE(st.last_error.find("WRONGTYPE"), std::string::npos)
      << st.last_error;
}

// Ranged reads (GETRANGE, pipelined) give exactly the stored bytes, and a
// gathered object verifies and counts a hit. With a TTL, the ranges leave
// it alone and VerifyGathered restarts it, as a hit of Get does.
TEST(RedisTierTest, RangesReadStoredObjectsAndGatheredOnesVerify) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto tier = OpenTier({.url = server->url()});
  ExpectRangesReadStoredObjects(*tier, 200, 8);

  auto ttl = OpenTier(
      {.url = server->url(), .key_prefix = "ttl:", .ttl_seconds = 100});
  PutAll(*ttl, 1, 1);
  const BlockKey k = KeyOf(1);
  const std::string key = ttl->RedisKey(k);
  auto raw = Client(server->port());
  EXPECT_EQ(raw->Integer({"EXPIRE", key, "5"}), 1);
  std::vector<GatheredObject> gathered;
  const size_t sizes[] = {MakeObject(1).size()};
  ASSERT_EQ(GatherObjects(*ttl, {&k, 1}, sizes, 2, &gathered),
            std::vector<bool>{true});
  EXPECT_LE(raw->Integer({"TTL", key}), 5);
  EXPECT_TRUE(
      ttl->VerifyGathered(k, gathered[0].header, gathered[0].payload()).ok());
  EXPECT_GT(raw->Integer({"TTL", key}), 90);
  EXPECT_EQ(ttl->Stats().errors, 0u) << ttl->Stats().last_error;
}

TEST(RedisTierTest, MissingKeysAndRangesPastTheEndFailAlone) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto tier = OpenTier({.url = server->url()});
  ExpectMissingKeysAndRangesPastTheEndFailAlone(*tier);
}

// The attack of issue 13, and damage, on a value read in ranges: the
// ranges read (they are not verified), VerifyGathered refuses the object,
// DELetes it and counts it, as Get would have.
TEST(RedisTierTest, ForgedOrDamagedValuesReadInRangesAreRefusedAndDeleted) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto raw = Client(server->port());
  for (const ObjectEdit& c : RangeReadEdits()) {
    SCOPED_TRACE(c.what);
    auto tier = OpenTier({.url = server->url(), .key_prefix = c.what + ":"});
    const BlockKey key = KeyOf(1), other = KeyOf(2);
    PutAll(*tier, 1, 2, 20);
    const auto value = [&](const BlockKey& k) {
      const std::string v = raw->Text({"GET", tier->RedisKey(k)});
      return Bytes(v.begin(), v.end());
    };
    Bytes object = value(key);
    c.apply(object, value(other));
    ASSERT_EQ(raw->Text({"SET", tier->RedisKey(key),
                         std::string(object.begin(), object.end())}),
              "OK");

    ExpectEditedObjectRefused(*tier, key, object, c, tier->RedisKey(key));
    EXPECT_EQ(raw->Integer({"EXISTS", tier->RedisKey(key)}), 0);
    EXPECT_EQ(Unsealed(tier->Get({&other, 1})[0]), MakeObject(2, 20));
  }
}

// An accepted object is read in ranges from the queue: while the server
// is stopped (SIGSTOP), the writer's SET cannot complete, and a GETRANGE
// could not either.
TEST(RedisTierTest, RangesOfQueuedObjectsComeFromTheQueue) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  auto tier =
      OpenTier({.url = server->url(), .command_timeout = milliseconds(10000)});
  server->Pause();
  ExpectQueuedObjectReadInRanges(*tier, [&] { server->Resume(); });
}

// A Redis that is down costs commands no connect timeouts: after a failed
// connect, the node is not tried again before its backoff ends, so the
// attempts are bounded by the time that passed, whatever the machine's load
// (no wall-clock bound on the calls themselves).
TEST(RedisTierTest, DownFromTheStartMissesFast) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  std::string url;
  {
    auto gone = StartServer();  // a port where nothing listens any more
    url = gone->url();
  }
  const RedisTierOptions o = FastOptions(url);
  const Clock::time_point start = Clock::now();
  std::unique_ptr<RedisTier> tier = OpenTier(o);
  EXPECT_EQ(tier->Describe().rfind("unknown (", 0), 0u) << tier->Describe();
  const std::vector<BlockKey> keys = Keys(0, 10);
  for (int round = 0; round < 5; ++round) {
    EXPECT_EQ(CountHits(tier->Get(keys)), 0u);
    EXPECT_EQ(tier->Exists(keys), std::vector<bool>(10, false));
    EXPECT_FALSE(tier->Erase(keys[0]).ok());
    std::this_thread::sleep_for(milliseconds(30));
  }
  ASSERT_TRUE(tier->Put(keys[0], MakeObject(0)).ok());
  tier->Flush();
  EXPECT_GE(tier->connect_attempts(), 1u);
  EXPECT_LE(tier->connect_attempts(), MostConnectAttemptsSince(start, o));
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.misses, 50u);
  EXPECT_GE(st.errors, 50u + 50u + 5u + 1u);
  EXPECT_EQ(st.writes, 0u);
  EXPECT_FALSE(st.last_error.empty());
}

TEST(RedisTierTest, KilledMidRunThenBackOnTheSamePort) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  const int port = server->port();
  const RedisTierOptions o = FastOptions(server->url());
  auto tier = OpenTier(o);
  PutAll(*tier, 0, 10);
  EXPECT_EQ(CountHits(tier->Get(Keys(0, 10))), 10u);

  server->Kill();
  const uint64_t attempts_before = tier->connect_attempts();
  const Clock::time_point killed = Clock::now();
  EXPECT_EQ(CountHits(tier->Get(Keys(0, 10))), 0u);
  PutAll(*tier, 10, 5);
  // The broken connection starts a backoff: no reconnect per command.
  EXPECT_LE(tier->connect_attempts() - attempts_before,
            MostConnectAttemptsSince(killed, o));
  const TierStats down = tier->Stats();
  EXPECT_GE(down.errors, 15u);
  EXPECT_EQ(down.writes, 10u);

  server = StartServer({.port = port});
  EXPECT_TRUE(WorksAgainWithin(*tier, milliseconds(3000), 100));
  EXPECT_EQ(tier->Describe(), "standalone " + server->endpoint());
}

// A server that accepts but never answers (SIGSTOP) costs at most the
// command timeout: every call returns while it is still stopped, which only
// the timeout can make happen, and says so.
TEST(RedisTierTest, HungServerCostsAtMostTheTimeouts) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  const RedisTierOptions o = FastOptions(server->url());
  auto tier = OpenTier(o);
  PutAll(*tier, 0, 3);
  server->Pause();
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(CountHits(tier->Get(Keys(0, 3))), 0u);
  }
  const TierStats st = tier->Stats();
  EXPECT_GE(st.errors, 9u);
  EXPECT_NE(st.last_error.find("no progress within"), std::string::npos)
      << st.last_error;
  server->Resume();
  EXPECT_TRUE(WorksAgainWithin(*tier, milliseconds(3000), 100));
}

TEST(RedisTierTest, FullRedisCountsErrorsAndDropsWrites) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer({.maxmemory_bytes = uint64_t{4} << 20});
  auto tier = OpenTier({.url = server->url()});
  PutAll(*tier, 0, 100, 200);  // 100 objects of 100 KiB: 10 MiB
  const TierStats st = tier->Stats();
  EXPECT_GT(st.errors, 0u);
  EXPECT_GT(st.writes, 0u);  // until Redis was full
  EXPECT_LT(st.writes, 100u);
  EXPECT_EQ(st.writes + st.errors, 100u);
  EXPECT_NE(st.last_error.find("OOM"), std::string::npos) << st.last_error;
  EXPECT_EQ(CountHits(tier->Get(Keys(0, 100))), st.writes);
}

TEST(RedisTierTest, ProbeMeasuresPipelinedGets) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  Result<double> rate = PipelinedGetProbe(server->url(), 64 << 10, 200);
  ASSERT_TRUE(rate.ok()) << rate.status().ToString();
  EXPECT_GT(*rate, 1e6);  // bytes/s; loopback does far better
  EXPECT_EQ(Client(server->port())->Integer({"DBSIZE"}), 0);  // cleaned up
  EXPECT_EQ(PipelinedGetProbe(server->url(), 0, 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(PipelinedGetProbe("redis:/x", 10, 1).status().code(),
            StatusCode::kInvalidArgument);
  server->Kill();
  EXPECT_EQ(PipelinedGetProbe(server->url(), 10, 1).status().code(),
            StatusCode::kIOError);
}

// Per cluster node, which of `keys` (tier keys) it holds.
std::vector<std::vector<uint64_t>> KeysByNode(RedisCluster& cluster,
                                              RedisTier& tier, uint64_t first,
                                              uint64_t count) {
  std::vector<std::vector<uint64_t>> by_node(size_t(cluster.size()));
  for (int n = 0; n < cluster.size(); ++n) {
    auto raw = Client(cluster.node(n).port());
    for (uint64_t i = first; i < first + count; ++i) {
      // A node answers MOVED (not an integer) for keys of other nodes.
      if (raw->Integer({"EXISTS", tier.RedisKey(KeyOf(i))}) == 1) {
        by_node[size_t(n)].push_back(i);
      }
    }
  }
  return by_node;
}

TEST(RedisClusterTierTest, KeysSpreadOverAllMastersAndAllHit) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto cluster = StartCluster();
  // One seed is enough to learn the whole cluster.
  auto tier = OpenTier({.url = cluster->node(1).url()});
  EXPECT_EQ(tier->Describe(), "cluster, 3 masters");
  PutAll(*tier, 0, 300);
  EXPECT_EQ(tier->Stats().errors, 0u) << tier->Stats().last_error;
  long long total = 0;
  for (int n = 0; n < 3; ++n) {
    auto raw = Client(cluster->node(n).port());
    const long long here = raw->Integer({"DBSIZE"});
    EXPECT_GT(here, 50) << "node " << n;
    total += here;
    // The slot function agrees with the server's.
    const std::string key = tier->RedisKey(KeyOf(uint64_t(n)));
    EXPECT_EQ(raw->Integer({"CLUSTER", "KEYSLOT", key}), RedisClusterSlot(key));
  }
  EXPECT_EQ(total, 300);
  const auto got = tier->Get(Keys(0, 300));
  for (uint64_t i = 0; i < 300; ++i)
    ASSERT_EQ(Unsealed(got[i]), MakeObject(i)) << i;
  EXPECT_EQ(tier->Exists(Keys(0, 300)), std::vector<bool>(300, true));
  EXPECT_TRUE(tier->Erase(KeyOf(0)).ok());
  EXPECT_FALSE(tier->Exists(Keys(0, 1))[0]);
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.hits, 300u);
  EXPECT_EQ(st.errors, 0u) << st.last_error;

  // The probe finds the master of its slot.
  Result<double> rate = PipelinedGetProbe(cluster->url(), 4096, 50);
  ASSERT_TRUE(rate.ok()) << rate.status().ToString();
  EXPECT_GT(*rate, 0);
}

// Ranges go to the master of their key's slot, on every master at once.
TEST(RedisClusterTierTest, RangesReadAcrossMasters) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto cluster = StartCluster();
  auto tier = OpenTier({.url = cluster->node(1).url()});
  ExpectRangesReadStoredObjects(*tier, 0, 12);
  for (const std::vector<uint64_t>& keys : KeysByNode(*cluster, *tier, 0, 12)) {
    EXPECT_FALSE(keys.empty());
  }
  ExpectMissingKeysAndRangesPastTheEndFailAlone(*tier);
}

TEST(RedisClusterTierTest, FollowsAskAndMovedWhileASlotMigrates) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto cluster = StartCluster();
  auto tier = OpenTier({.url = cluster->url()});
  PutAll(*tier, 0, 1);
  const int slot = RedisClusterSlot(tier->RedisKey(KeyOf(0)));
  // A second key of the same slot, not yet written.
  uint64_t sibling = 1;
  while (RedisClusterSlot(tier->RedisKey(KeyOf(sibling))) != slot) ++sibling;

  const std::vector<std::vector<uint64_t>> by_node =
      KeysByNode(*cluster, *tier, 0, 1);
  int from = 0;
  while (by_node[size_t(from)].empty()) ++from;
  const int to = (from + 1) % 3;
  std::vector<std::unique_ptr<RedisClient>> raw;
  std::vector<std::string> ids;
  for (int n = 0; n < 3; ++n) {
    raw.push_back(Client(cluster->node(n).port()));
    ids.push_back(raw.back()->Text({"CLUSTER", "MYID"}));
  }
  const std::string s = std::to_string(slot);
  ASSERT_EQ(raw[to]->Text({"CLUSTER", "SETSLOT", s, "IMPORTING", ids[from]}),
            "OK");
  ASSERT_EQ(raw[from]->Text({"CLUSTER", "SETSLOT", s, "MIGRATING", ids[to]}),
            "OK");
  ASSERT_EQ(raw[from]->Text({"MIGRATE", "127.0.0.1",
                             std::to_string(cluster->node(to).port()),
                             tier->RedisKey(KeyOf(0)), "0", "5000"}),
            "OK");

  // Mid-migration: the old master answers -ASK for keys it no longer has,
  // for reads and for writes of new keys.
  const BlockKey key = KeyOf(0);
  EXPECT_EQ(Unsealed(tier->Get({&key, 1})[0]), MakeObject(0));
  // So do ranges (the payload: sealed or not, the same bytes).
  const Bytes object = MakeObject(0);
  const auto payload_reads = [&] {
    Bytes payload(object.size() - kObjectHeaderBytes);
    const Tier::RangeRead r = {0, kObjectHeaderBytes, payload};
    return tier->ReadRanges({&key, 1}, {&r, 1}) == std::vector<bool>{true} &&
           std::equal(payload.begin(), payload.end(),
                      object.begin() + kObjectHeaderBytes);
  };
  EXPECT_TRUE(payload_reads());
  PutAll(*tier, sibling, 1);
  EXPECT_EQ(raw[to]->Text({"ASKING"}), "OK");
  EXPECT_EQ(raw[to]->Integer({"EXISTS", tier->RedisKey(KeyOf(sibling))}), 1);

  // Migration done: the tier's map is stale and the old master says -MOVED.
  for (const int n : {to, from, 3 - from - to}) {
    ASSERT_EQ(raw[n]->Text({"CLUSTER", "SETSLOT", s, "NODE", ids[to]}), "OK");
  }
  const std::vector<BlockKey> both = {KeyOf(0), KeyOf(sibling)};
  const auto got = tier->Get(both);
  EXPECT_EQ(Unsealed(got[0]), MakeObject(0));
  EXPECT_EQ(Unsealed(got[1]), MakeObject(sibling));
  EXPECT_TRUE(payload_reads());
  EXPECT_EQ(tier->Exists(both), std::vector<bool>(2, true));
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.errors, 0u) << st.last_error;
  EXPECT_EQ(st.hits, 3u);
  EXPECT_EQ(tier->Describe(), "cluster, 3 masters");
}

TEST(RedisClusterTierTest, DeadMasterCostsOnlyItsKeys) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto cluster = StartCluster();
  const RedisTierOptions o = FastOptions(cluster->url());
  auto tier = OpenTier(o);
  PutAll(*tier, 0, 300);
  const std::vector<std::vector<uint64_t>> by_node =
      KeysByNode(*cluster, *tier, 0, 300);
  ASSERT_EQ(by_node[0].size() + by_node[1].size() + by_node[2].size(), 300u);

  cluster->Kill(2);
  const uint64_t attempts_before = tier->connect_attempts();
  const Clock::time_point killed = Clock::now();
  for (int round = 0; round < 3; ++round) {
    const std::vector<std::optional<Bytes>> got = tier->Get(Keys(0, 300));
    for (int n = 0; n < 3; ++n) {
      for (const uint64_t i : by_node[size_t(n)]) {
        if (n == 2) {
          EXPECT_FALSE(got[i].has_value()) << i;
        } else {
          EXPECT_EQ(Unsealed(got[i]), MakeObject(i)) << i;
        }
      }
    }
    std::this_thread::sleep_for(milliseconds(60));
  }
  // Only the dead master is reconnected to, once per backoff window.
  EXPECT_LE(tier->connect_attempts() - attempts_before,
            MostConnectAttemptsSince(killed, o));
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.hits, 3 * (by_node[0].size() + by_node[1].size()));
  EXPECT_GE(st.errors, 3 * by_node[2].size());
  // Writes to the live masters still land.
  PutAll(*tier, 1000, 30);
  EXPECT_GT(CountHits(tier->Get(Keys(1000, 30))), 0u);
}

// `url` ("redis://...") with `credentials` ("USER:PASSWORD" or ":PASSWORD").
std::string WithCredentials(const std::string& url,
                            const std::string& credentials) {
  return "redis://" + credentials + "@" + url.substr(8);
}

// Open's refusal for `o`, which must be PermissionDenied naming `endpoint`,
// Redis's reply `reply` and how to give credentials.
void ExpectOpenRefused(const RedisTierOptions& o, const std::string& endpoint,
                       const std::string& reply) {
  Result<std::unique_ptr<RedisTier>> t = RedisTier::Open(o);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kPermissionDenied);
  const std::string& m = t.status().message();
  for (const std::string& part :
       {endpoint, reply, std::string("redis://user:password@host:port"),
        std::string("redis://:password@host:port"),
        std::string("--redis-password-file")}) {
    EXPECT_NE(m.find(part), std::string::npos) << part << " not in: " << m;
  }
  EXPECT_EQ(m.find("wr0ng"), std::string::npos) << m;
}

TEST(RedisAuthTest, PasswordInTheUrlOrTheOptions) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer({.password = "pw-1"});
  auto tier = OpenTier(FastOptions(WithCredentials(server->url(), ":pw-1")));
  EXPECT_EQ(tier->Describe(), "standalone " + server->endpoint());
  EXPECT_EQ(tier->Describe().find("pw-1"), std::string::npos);
  PutAll(*tier, 0, 20);
  EXPECT_EQ(CountHits(tier->Get(Keys(0, 20))), 20u);
  EXPECT_EQ(tier->Stats().errors, 0u) << tier->Stats().last_error;
  EXPECT_EQ(Client(server->port(), "pw-1")->Integer({"DBSIZE"}), 20);

  // The options' password, as from --redis-password-file, overrides the URL's.
  RedisTierOptions o = FastOptions(WithCredentials(server->url(), ":wr0ng"));
  o.password = "pw-1";
  EXPECT_EQ(CountHits(OpenTier(o)->Get(Keys(0, 20))), 20u);
  o.url = server->url();
  EXPECT_EQ(CountHits(OpenTier(o)->Get(Keys(0, 20))), 20u);

  // The probe logs in too.
  Result<double> rate =
      PipelinedGetProbe(WithCredentials(server->url(), ":pw-1"), 4096, 20);
  EXPECT_TRUE(rate.ok()) << rate.status().ToString();
  EXPECT_EQ(PipelinedGetProbe(server->url(), 4096, 20).status().code(),
            StatusCode::kIOError);
}

// The probe skips the timed replies in its receive buffer: values smaller
// than a header's worth, and larger than the buffer (1 MiB), are read
// whole; replies that are not the value are reported, and the rest of the
// replies still read, so the cleanup that follows on the connection works.
TEST(RedisAuthTest, ProbeReadsRepliesOfAnySizeAndReportsOthers) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  for (const auto& [bytes, count] : {std::pair<size_t, int>{1, 300},
                                     {2, 7},
                                     {(size_t{1} << 20) + 5, 5},
                                     {size_t{3} << 20, 2}}) {
    Result<double> rate = PipelinedGetProbe(server->url(), bytes, count);
    EXPECT_TRUE(rate.ok()) << bytes << ": " << rate.status().ToString();
    EXPECT_EQ(Client(server->port())->Integer({"DBSIZE"}), 0);
  }
  // A user that may write and delete but not read: every GET is refused.
  ASSERT_EQ(Client(server->port())
                ->Text({"ACL", "SETUSER", "writer", "on", ">pw", "~*", "+@all",
                        "-get"}),
            "OK");
  const Result<double> refused =
      PipelinedGetProbe(WithCredentials(server->url(), "writer:pw"), 4096, 100);
  EXPECT_EQ(refused.status().code(), StatusCode::kIOError);
  EXPECT_NE(refused.status().message().find("NOPERM"), std::string::npos)
      << refused.status().ToString();
  EXPECT_EQ(Client(server->port())->Integer({"DBSIZE"}), 0);  // cleaned up
}

TEST(RedisAuthTest, WrongOrMissingPasswordFailsOpenClearly) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer({.password = "pw-1"});
  ExpectOpenRefused(FastOptions(WithCredentials(server->url(), ":wr0ng")),
                    server->endpoint(), "WRONGPASS");
  RedisTierOptions o = FastOptions(WithCredentials(server->url(), ":pw-1"));
  o.password = "wr0ng";
  ExpectOpenRefused(o, server->endpoint(), "WRONGPASS");
  ExpectOpenRefused(FastOptions(server->url()), server->endpoint(), "NOAUTH");

  // An unreachable Redis still never fails Open, credentials or not.
  const std::string url = WithCredentials(server->url(), ":wr0ng");
  server->Kill();
  auto tier = OpenTier(FastOptions(url));
  EXPECT_EQ(tier->Describe().rfind("unknown (", 0), 0u) << tier->Describe();
}

TEST(RedisAuthTest, AclUser) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer({.password = "admin-pw"});
  ASSERT_EQ(
      Client(server->port(), "admin-pw")
          ->Text({"ACL", "SETUSER", "alice", "on", ">s3:cr@t", "~*", "+@all"}),
      "OK");
  auto tier = OpenTier(
      FastOptions(WithCredentials(server->url(), "alice:s3%3Acr%40t")));
  PutAll(*tier, 0, 10);
  EXPECT_EQ(CountHits(tier->Get(Keys(0, 10))), 10u);
  EXPECT_EQ(tier->Stats().errors, 0u) << tier->Stats().last_error;

  // The URL's user with the password of the options.
  RedisTierOptions o = FastOptions(WithCredentials(server->url(), "alice"));
  o.password = "s3:cr@t";
  EXPECT_EQ(CountHits(OpenTier(o)->Get(Keys(0, 10))), 10u);

  ExpectOpenRefused(FastOptions(WithCredentials(server->url(), "alice:wr0ng")),
                    server->endpoint(), "WRONGPASS");
  ExpectOpenRefused(FastOptions(WithCredentials(server->url(), "bob:s3:cr@t")),
                    server->endpoint(), "WRONGPASS");
}

TEST(RedisAuthTest, RefusedAfterStartIsACountedNodeFailure) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer({.password = "pw-1"});
  auto tier = OpenTier(FastOptions(WithCredentials(server->url(), ":pw-1")));
  PutAll(*tier, 0, 5);
  auto admin = Client(server->port(), "pw-1");
  ASSERT_EQ(admin->Text({"CONFIG", "SET", "requirepass", "pw-2"}), "OK");
  ASSERT_GT(
      admin->Integer({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}), 0);
  // The pooled connections broke; the next connect's AUTH is refused.
  const Clock::time_point give_up = Clock::now() + milliseconds(3000);
  while (tier->Stats().last_error.find("WRONGPASS") == std::string::npos &&
         Clock::now() < give_up) {
    EXPECT_EQ(CountHits(tier->Get(Keys(0, 5))), 0u);
    std::this_thread::sleep_for(milliseconds(20));
  }
  const TierStats st = tier->Stats();
  EXPECT_NE(st.last_error.find("WRONGPASS"), std::string::npos)
      << st.last_error;
  EXPECT_NE(st.last_error.find(server->endpoint()), std::string::npos)
      << st.last_error;
  EXPECT_EQ(st.last_error.find("pw-1"), std::string::npos) << st.last_error;
  EXPECT_GE(st.errors, 5u);
}

TEST(RedisAuthTest, ClusterWhoseNodesAllNeedAuth) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  Result<std::unique_ptr<RedisCluster>> started = RedisCluster::Start(3, "cpw");
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  RedisCluster& cluster = **started;
  // One seed: the other masters are learned, and logged in to, later.
  auto tier =
      OpenTier(FastOptions(WithCredentials(cluster.node(1).url(), ":cpw")));
  EXPECT_EQ(tier->Describe(), "cluster, 3 masters");
  PutAll(*tier, 0, 300);
  EXPECT_EQ(tier->Stats().errors, 0u) << tier->Stats().last_error;
  for (int n = 0; n < 3; ++n) {
    EXPECT_GT(Client(cluster.node(n).port(), "cpw")->Integer({"DBSIZE"}), 50)
        << "node " << n;
  }
  const auto got = tier->Get(Keys(0, 300));
  for (uint64_t i = 0; i < 300; ++i)
    ASSERT_EQ(Unsealed(got[i]), MakeObject(i)) << i;
  EXPECT_EQ(tier->Stats().errors, 0u) << tier->Stats().last_error;
  ExpectOpenRefused(FastOptions(cluster.url()), cluster.node(0).endpoint(),
                    "NOAUTH");
}

// A stand-in for a Redis Cluster node on a free loopback port. CLUSTER SLOTS
// names it the master of every slot (of every slot but 0, which goes to
// 127.0.0.1:`moved_to`, once AnnounceSlotZero is called); every other command
// gets "-MOVED 0 127.0.0.1:`moved_to`". One thread per connection.
class FakeClusterNode {
 public:
  explicit FakeClusterNode(int moved_to) : moved_to_(moved_to) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    KV_CHECK(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), len) == 0);
    KV_CHECK(::listen(listen_fd_, 16) == 0);
    KV_CHECK(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) ==
             0);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~FakeClusterNode() {
    {
      const std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      for (const int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    }
    ::shutdown(listen_fd_, SHUT_RDWR);
    acceptor_.join();
    for (std::thread& t : servers_) t.join();
    for (const int fd : open_fds_) ::close(fd);
    ::close(listen_fd_);
  }

  std::string url() const {
    return "redis://127.0.0.1:" + std::to_string(port_);
  }
  void AnnounceSlotZero() { slot_zero_moved_ = true; }

 private:
  void AcceptLoop() {
    for (;;) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      const std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        ::close(fd);
        return;
      }
      open_fds_.push_back(fd);
      servers_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    redisReader* reader = redisReaderCreate();
    std::vector<char> buffer(1 << 16);
    ssize_t n;
    while ((n = ::recv(fd, buffer.data(), buffer.size(), 0)) > 0) {
      redisReaderFeed(reader, buffer.data(), size_t(n));
      void* r = nullptr;
      while (redisReaderGetReply(reader, &r) == REDIS_OK && r != nullptr) {
        const std::string answer = Answer(*static_cast<redisReply*>(r));
        freeReplyObject(r);
        ::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
      }
    }
    redisReaderFree(reader);
  }

  std::string Answer(const redisReply& command) const {
    const bool slots = command.type == REDIS_REPLY_ARRAY &&
                       command.elements > 0 &&
                       std::string(command.element[0]->str) == "CLUSTER";
    const std::string other = std::to_string(moved_to_);
    if (!slots) return "-MOVED 0 127.0.0.1:" + other + "\r\n";
    const auto range = [](int first, int last, const std::string& port) {
      return "*3\r\n:" + std::to_string(first) +
             "\r\n:" + std::to_string(last) +
             "\r\n*2\r\n$9\r\n127.0.0.1\r\n:" + port + "\r\n";
    };
    const std::string self = std::to_string(port_);
    if (!slot_zero_moved_) return "*1\r\n" + range(0, 16383, self);
    return "*2\r\n" + range(0, 0, other) + range(1, 16383, self);
  }

  const int moved_to_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> slot_zero_moved_{false};
  std::thread acceptor_;
  std::mutex mu_;
  bool stopping_ = false;             // guarded by mu_
  std::vector<int> open_fds_;         // guarded by mu_
  std::vector<std::thread> servers_;  // guarded by mu_
};

TEST(RedisClusterTierTest, RedirectsGoOnlyToNodesTheClusterNames) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto outsider = StartServer();  // stores whatever reaches it
  auto raw = Client(outsider->port());
  FakeClusterNode fake(outsider->port());
  const RedisTierOptions o = FastOptions(fake.url());
  auto tier = OpenTier(o);
  EXPECT_EQ(tier->Describe(), "cluster, 1 masters");
  uint64_t id = 0;  // a key of the fake's slots even once slot 0 has moved
  while (RedisClusterSlot(tier->RedisKey(KeyOf(id))) == 0) ++id;
  const BlockKey key = KeyOf(id);

  // -MOVED to an endpoint no CLUSTER SLOTS named: not followed.
  PutAll(*tier, id, 1);
  EXPECT_FALSE(tier->Get({&key, 1})[0].has_value());
  EXPECT_EQ(raw->Integer({"DBSIZE"}), 0);
  TierStats st = tier->Stats();
  EXPECT_EQ(st.writes, 0u);
  EXPECT_EQ(st.errors, 2u);
  EXPECT_NE(st.last_error.find("not followed"), std::string::npos)
      << st.last_error;

  // Once CLUSTER SLOTS names it, the refresh that the refusal scheduled
  // learns it, and the redirections to it are followed.
  fake.AnnounceSlotZero();
  std::this_thread::sleep_for(2 * o.min_backoff);
  PutAll(*tier, id, 1);
  EXPECT_EQ(raw->Integer({"DBSIZE"}), 1);
  EXPECT_EQ(Unsealed(tier->Get({&key, 1})[0]), MakeObject(id));
  EXPECT_EQ(tier->Describe(), "cluster, 2 masters");
  st = tier->Stats();
  EXPECT_EQ(st.writes, 1u);
  EXPECT_EQ(st.errors, 2u) << st.last_error;
}

}  // namespace
}  // namespace kvstash::store
