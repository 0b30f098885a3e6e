#include "store/redis_tier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "store/crc16.h"
#include "store/object_format.h"
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

std::unique_ptr<RedisTier> OpenTier(RedisTierOptions options) {
  Result<std::unique_ptr<RedisTier>> tier = RedisTier::Open(options);
  KV_CHECK_MSG(tier.ok(), tier.status().ToString().c_str());
  return std::move(tier).value();
}

// Options for failure tests: short timeouts and backoff.
RedisTierOptions FastOptions(const std::string& url) {
  RedisTierOptions o;
  o.url = url;
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

std::unique_ptr<RedisClient> Client(int port) {
  Result<std::unique_ptr<RedisClient>> c = RedisClient::Connect(port);
  KV_CHECK_MSG(c.ok(), c.status().ToString().c_str());
  return std::move(c).value();
}

// Runs `f` and returns how long it took.
template <typename F>
milliseconds Timed(F f) {
  const Clock::time_point start = Clock::now();
  f();
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
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
    if (tier.Get({&key, 1})[0] == MakeObject(id)) return true;
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
  Result<std::vector<RedisEndpoint>> one = ParseRedisUrl("redis://h:6379");
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(*one, (std::vector<RedisEndpoint>{{"h", 6379}}));
  Result<std::vector<RedisEndpoint>> many =
      ParseRedisUrl("redis://10.0.0.1:7000,[::1]:7001,name.example:1");
  ASSERT_TRUE(many.ok()) << many.status().ToString();
  EXPECT_EQ(*many,
            (std::vector<RedisEndpoint>{
                {"10.0.0.1", 7000}, {"::1", 7001}, {"name.example", 1}}));
  EXPECT_EQ((*many)[1].ToString(), "[::1]:7001");
  Result<RedisEndpoint> moved = ParseRedisEndpoint("::1:7002");
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(*moved, (RedisEndpoint{"::1", 7002}));
}

TEST(RedisUrlTest, RefusesBadUrlsClearly) {
  for (const char* url :
       {"", "http://h:1", "redis://", "redis://h", "redis://h:", "redis://:1",
        "redis://h:0", "redis://h:65536", "redis://h:12a", "redis://h:1,",
        "redis://u:p@h:1", "redis://h:1/0", "redis://h:1?x=y"}) {
    Result<std::vector<RedisEndpoint>> r = ParseRedisUrl(url);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_NE(r.status().message().find("expected redis://HOST:PORT"),
              std::string::npos)
        << r.status().message();
  }
}

TEST(RedisTierTest, OpenRefusesBadOptions) {
  const RedisTierOptions good = FastOptions("redis://127.0.0.1:1");
  std::vector<RedisTierOptions> bad(7, good);
  bad[0].url = "127.0.0.1:6379";
  bad[1].ttl_seconds = -1;
  bad[2].pool_size = 0;
  bad[3].connect_timeout = milliseconds(0);
  bad[4].max_queue_bytes = 0;
  bad[5].min_backoff = milliseconds(0);
  bad[6].max_backoff = milliseconds(10);
  for (const RedisTierOptions& o : bad) {
    Result<std::unique_ptr<RedisTier>> t = RedisTier::Open(o);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  }
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
  EXPECT_EQ(Bytes(stored.begin(), stored.end()), MakeObject(2, 3));

  const auto got = tier->Get(keys);
  for (uint64_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(got[i].has_value()) << i;
    EXPECT_EQ(*got[i], MakeObject(i, 1 + int(i % 3)));
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
    ASSERT_EQ(got[i], MakeObject(i)) << i;
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
        if (got.back() != MakeObject(i)) ++bad;  // served from the queue
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
  EXPECT_EQ(tier->Get({&k, 1})[0], MakeObject(1));
  EXPECT_GT(raw->Integer({"TTL", key}), 90);
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
  const Bytes other = MakeObject(9);
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

TEST(RedisTierTest, DownFromTheStartMissesFast) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  std::string url;
  {
    auto gone = StartServer();  // a port where nothing listens any more
    url = gone->url();
  }
  const RedisTierOptions o = FastOptions(url);
  const milliseconds limit = o.connect_timeout + o.command_timeout;
  std::unique_ptr<RedisTier> tier;
  EXPECT_LT(Timed([&] { tier = OpenTier(o); }), limit);
  EXPECT_EQ(tier->Describe().rfind("unknown (", 0), 0u) << tier->Describe();
  const std::vector<BlockKey> keys = Keys(0, 10);
  for (int round = 0; round < 5; ++round) {
    EXPECT_LT(Timed([&] {
                EXPECT_EQ(CountHits(tier->Get(keys)), 0u);
                EXPECT_EQ(tier->Exists(keys), std::vector<bool>(10, false));
                EXPECT_FALSE(tier->Erase(keys[0]).ok());
              }),
              limit);
    std::this_thread::sleep_for(milliseconds(30));
  }
  ASSERT_TRUE(tier->Put(keys[0], MakeObject(0)).ok());
  EXPECT_LT(Timed([&] { tier->Flush(); }), limit);
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
  const milliseconds limit = o.connect_timeout + o.command_timeout;
  auto tier = OpenTier(o);
  PutAll(*tier, 0, 10);
  EXPECT_EQ(CountHits(tier->Get(Keys(0, 10))), 10u);

  server->Kill();
  EXPECT_LT(Timed([&] { EXPECT_EQ(CountHits(tier->Get(Keys(0, 10))), 0u); }),
            limit);
  EXPECT_LT(Timed([&] { PutAll(*tier, 10, 5); }), limit);
  const TierStats down = tier->Stats();
  EXPECT_GE(down.errors, 15u);
  EXPECT_EQ(down.writes, 10u);

  server = StartServer({.port = port});
  EXPECT_TRUE(WorksAgainWithin(*tier, milliseconds(3000), 100));
  EXPECT_EQ(tier->Describe(), "standalone " + server->endpoint());
}

TEST(RedisTierTest, HungServerCostsAtMostTheTimeouts) {
  KVSTASH_REQUIRE_REDIS_SERVER();
  auto server = StartServer();
  const RedisTierOptions o = FastOptions(server->url());
  auto tier = OpenTier(o);
  PutAll(*tier, 0, 3);
  server->Pause();
  const milliseconds limit =
      o.connect_timeout + o.command_timeout + milliseconds(200);
  for (int round = 0; round < 3; ++round) {
    EXPECT_LT(Timed([&] { EXPECT_EQ(CountHits(tier->Get(Keys(0, 3))), 0u); }),
              limit);
  }
  EXPECT_GE(tier->Stats().errors, 9u);
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
  for (uint64_t i = 0; i < 300; ++i) ASSERT_EQ(got[i], MakeObject(i)) << i;
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
  EXPECT_EQ(tier->Get({&key, 1})[0], MakeObject(0));
  PutAll(*tier, sibling, 1);
  EXPECT_EQ(raw[to]->Text({"ASKING"}), "OK");
  EXPECT_EQ(raw[to]->Integer({"EXISTS", tier->RedisKey(KeyOf(sibling))}), 1);

  // Migration done: the tier's map is stale and the old master says -MOVED.
  for (const int n : {to, from, 3 - from - to}) {
    ASSERT_EQ(raw[n]->Text({"CLUSTER", "SETSLOT", s, "NODE", ids[to]}), "OK");
  }
  const std::vector<BlockKey> both = {KeyOf(0), KeyOf(sibling)};
  const auto got = tier->Get(both);
  EXPECT_EQ(got[0], MakeObject(0));
  EXPECT_EQ(got[1], MakeObject(sibling));
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
  const milliseconds limit = o.connect_timeout + o.command_timeout;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::optional<Bytes>> got;
    EXPECT_LT(Timed([&] { got = tier->Get(Keys(0, 300)); }), limit);
    for (int n = 0; n < 3; ++n) {
      for (const uint64_t i : by_node[size_t(n)]) {
        if (n == 2) {
          EXPECT_FALSE(got[i].has_value()) << i;
        } else {
          EXPECT_EQ(got[i], MakeObject(i)) << i;
        }
      }
    }
    std::this_thread::sleep_for(milliseconds(60));
  }
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.hits, 3 * (by_node[0].size() + by_node[1].size()));
  EXPECT_GE(st.errors, 3 * by_node[2].size());
  // Writes to the live masters still land.
  PutAll(*tier, 1000, 30);
  EXPECT_GT(CountHits(tier->Get(Keys(1000, 30))), 0u);
}

}  // namespace
}  // namespace kvstash::store
