#include "store/disk_tier.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store/object_format.h"
#include "tests/testing/shared_data.h"

namespace kvstash::store {
namespace {

namespace fs = std::filesystem;
using kernels::BlockLayout;
using Bytes = std::vector<uint8_t>;

BlockLayout TestLayout() {
  BlockLayout l;
  l.n_layers = 2;
  l.n_kv_heads = 2;
  l.head_dim = 8;
  l.block_tokens = 4;
  l.kv_type = kernels::DType::kF16;
  return l;  // 512-byte blocks
}

const Hash128 kFingerprint = HashBytes("namespace", 9);

BlockKey KeyOf(uint64_t id) {
  return Hasher128().Add("test-key").AddU64(id).Finish();
}

// Object `id`: `blocks` blocks whose payload starts with id (little-endian)
// and continues with bytes derived from it.
Bytes MakeObject(uint64_t id, int blocks = 1) {
  const BlockLayout l = TestLayout();
  Bytes payload(size_t(blocks) * l.block_bytes());
  for (size_t i = 0; i < payload.size(); ++i) {
    payload[i] = i < 8 ? uint8_t(id >> (8 * i)) : uint8_t(id * 31 + i * 7);
  }
  return EncodeObject(kFingerprint, KeyOf(id), l,
                      uint32_t(blocks * l.block_tokens), payload);
}

const uint64_t kOneBlockObject = MakeObject(0).size();  // 640 bytes

std::unique_ptr<DiskTier> OpenTier(const std::string& dir,
                                   uint64_t capacity = uint64_t{1} << 30,
                                   uint64_t max_queue = uint64_t{64} << 20) {
  Result<std::unique_ptr<DiskTier>> tier = DiskTier::Open(
      {.dir = dir, .capacity_bytes = capacity, .max_queue_bytes = max_queue});
  KV_CHECK_MSG(tier.ok(), tier.status().ToString().c_str());
  return std::move(tier).value();
}

// Files under `dir` whose names end with `suffix`.
std::vector<fs::path> FilesEndingWith(const std::string& dir,
                                      std::string_view suffix) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() || e.is_fifo()) {
      if (e.path().filename().string().ends_with(suffix)) {
        out.push_back(e.path());
      }
    }
  }
  return out;
}

Bytes ReadBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const fs::path& p, const Bytes& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// The directory holds exactly the tier's objects, all intact.
void ExpectDirectoryMatchesIndex(const std::string& dir, DiskTier& tier) {
  const TierStats st = tier.Stats();
  uint64_t bytes = 0;
  const std::vector<fs::path> files = FilesEndingWith(dir, ".kvo");
  for (const fs::path& f : files) {
    const Bytes b = ReadBytes(f);
    bytes += b.size();
    Result<ObjectView> v = ParseObject(b);
    ASSERT_TRUE(v.ok()) << f << ": " << v.status().ToString();
    EXPECT_EQ(tier.ObjectPath(v->header.key), f.string());
  }
  EXPECT_EQ(files.size(), st.objects);
  EXPECT_EQ(bytes, st.bytes_used);
  EXPECT_TRUE(FilesEndingWith(dir, ".tmp").empty());
}

TEST(DiskTierTest, PutGetExistsErase) {
  const std::string dir = testing::TempDir("disk_basic");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  EXPECT_EQ(tier->name(), "disk");
  std::vector<BlockKey> keys;
  uint64_t total = 0;
  for (uint64_t i = 0; i < 10; ++i) {
    keys.push_back(KeyOf(i));
    total += MakeObject(i, 1 + int(i % 3)).size();
    ASSERT_TRUE(tier->Put(keys.back(), MakeObject(i, 1 + int(i % 3))).ok());
  }
  // Visible at once, whether queued or stored.
  for (const bool e : tier->Exists(keys)) EXPECT_TRUE(e);
  std::vector<std::optional<Bytes>> got = tier->Get(keys);
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(got[i].has_value());
    EXPECT_EQ(*got[i], MakeObject(i, 1 + int(i % 3)));
  }
  tier->Flush();
  TierStats st = tier->Stats();
  EXPECT_EQ(st.writes, 10u);
  EXPECT_EQ(st.objects, 10u);
  EXPECT_EQ(st.bytes_used, total);
  EXPECT_EQ(st.bytes_written, total);
  EXPECT_EQ(st.queue_objects, 0u);
  EXPECT_EQ(st.queue_bytes, 0u);
  EXPECT_EQ(st.hits, 10u);
  ExpectDirectoryMatchesIndex(dir, *tier);

  // Now every object comes from its file (the first Get raced the writer).
  const uint64_t read_before = st.bytes_read;
  got = tier->Get(keys);
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(got[i].has_value());
    Result<ObjectView> v =
        DecodeObject(*got[i], kFingerprint, keys[i], TestLayout());
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    EXPECT_EQ(v->payload[0], uint8_t(i));
  }
  st = tier->Stats();
  EXPECT_EQ(st.hits, 20u);
  EXPECT_EQ(st.bytes_read - read_before, total);

  const BlockKey absent = KeyOf(99);
  EXPECT_FALSE(tier->Exists({&absent, 1})[0]);
  EXPECT_FALSE(tier->Get({&absent, 1})[0].has_value());
  EXPECT_EQ(tier->Stats().misses, 1u);

  ASSERT_TRUE(tier->Erase(keys[3]).ok());
  EXPECT_FALSE(tier->Exists({&keys[3], 1})[0]);
  EXPECT_FALSE(fs::exists(tier->ObjectPath(keys[3])));
  EXPECT_TRUE(tier->Erase(keys[3]).ok());
  EXPECT_TRUE(tier->Erase(absent).ok());
  EXPECT_EQ(tier->Stats().objects, 9u);

  // A key already stored is not written again.
  ASSERT_TRUE(tier->Put(keys[0], MakeObject(0, 1)).ok());
  tier->Flush();
  EXPECT_EQ(tier->Stats().writes, 10u);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

TEST(DiskTierTest, PutRefusesWhatIsNotAnObjectOfItsKey) {
  const std::string dir = testing::TempDir("disk_put_bad");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  Status s = tier->Put(KeyOf(1), Bytes(300, 7));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(KeyOf(1).Hex()), std::string::npos);
  s = tier->Put(KeyOf(1), MakeObject(2));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(KeyOf(2).Hex()), std::string::npos);
  tier->Flush();
  EXPECT_EQ(tier->Stats().objects, 0u);
  EXPECT_EQ(tier->Stats().dropped_writes, 0u);
}

TEST(DiskTierTest, OpenRefusesBadOptions) {
  const std::string dir = testing::TempDir("disk_bad_options");
  EXPECT_EQ(DiskTier::Open({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DiskTier::Open({.dir = dir, .capacity_bytes = 0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DiskTier::Open({.dir = dir, .max_queue_bytes = 0}).status().code(),
            StatusCode::kInvalidArgument);
  const std::string file = dir + "/plain_file";
  WriteBytes(file, Bytes(3, 1));
  Result<std::unique_ptr<DiskTier>> r = DiskTier::Open({.dir = file});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_NE(r.status().message().find(file), std::string::npos);
}

TEST(DiskTierTest, RestartFindsAndVerifiesObjects) {
  const std::string dir = testing::TempDir("disk_restart") + "/nested/cache";
  std::vector<BlockKey> keys;
  uint64_t total = 0;
  {
    std::unique_ptr<DiskTier> tier = OpenTier(dir);
    for (uint64_t i = 0; i < 50; ++i) {
      keys.push_back(KeyOf(i));
      total += MakeObject(i, 1 + int(i % 4)).size();
      ASSERT_TRUE(tier->Put(keys.back(), MakeObject(i, 1 + int(i % 4))).ok());
    }
    // No Flush: the destructor stores what is queued.
  }
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  TierStats st = tier->Stats();
  EXPECT_EQ(st.objects, 50u);
  EXPECT_EQ(st.bytes_used, total);
  for (const bool e : tier->Exists(keys)) EXPECT_TRUE(e);
  const std::vector<std::optional<Bytes>> got = tier->Get(keys);
  for (uint64_t i = 0; i < 50; ++i) {
    ASSERT_TRUE(got[i].has_value()) << i;
    EXPECT_EQ(*got[i], MakeObject(i, 1 + int(i % 4)));
  }
  st = tier->Stats();
  EXPECT_EQ(st.hits, 50u);
  EXPECT_EQ(st.corrupt_dropped, 0u);
  EXPECT_EQ(st.errors, 0u);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

TEST(DiskTierTest, DamagedObjectIsMissDeletedAndCounted) {
  struct Damage {
    std::string what;
    void (*apply)(const fs::path& file, const fs::path& other);
  };
  const Damage damages[] = {
      {"payload byte flipped",
       [](const fs::path& f, const fs::path&) {
         Bytes b = ReadBytes(f);
         b[b.size() - 3] ^= 0x10;
         WriteBytes(f, b);
       }},
      {"header byte flipped",
       [](const fs::path& f, const fs::path&) {
         Bytes b = ReadBytes(f);
         b[41] ^= 1;
         WriteBytes(f, b);
       }},
      {"checksum byte flipped",
       [](const fs::path& f, const fs::path&) {
         Bytes b = ReadBytes(f);
         b[120] ^= 0x80;
         WriteBytes(f, b);
       }},
      {"truncated",
       [](const fs::path& f, const fs::path&) {
         Bytes b = ReadBytes(f);
         b.resize(b.size() / 2);
         WriteBytes(f, b);
       }},
      {"emptied",
       [](const fs::path& f, const fs::path&) { WriteBytes(f, Bytes()); }},
      {"another key's object",
       [](const fs::path& f, const fs::path& other) {
         WriteBytes(f, ReadBytes(other));
       }},
  };
  for (const bool reopen : {false, true}) {
    for (const Damage& d : damages) {
      SCOPED_TRACE(d.what + (reopen ? " (after reopen)" : ""));
      const std::string dir = testing::TempDir("disk_damage");
      std::unique_ptr<DiskTier> tier = OpenTier(dir);
      const BlockKey key = KeyOf(1);
      const BlockKey other = KeyOf(2);
      ASSERT_TRUE(tier->Put(key, MakeObject(1, 2)).ok());
      ASSERT_TRUE(tier->Put(other, MakeObject(2, 2)).ok());
      tier->Flush();
      d.apply(tier->ObjectPath(key), tier->ObjectPath(other));
      if (reopen) {
        tier.reset();
        tier = OpenTier(dir);
      }
      EXPECT_TRUE(tier->Exists({&key, 1})[0]);  // verified only on read
      EXPECT_FALSE(tier->Get({&key, 1})[0].has_value());
      EXPECT_FALSE(fs::exists(tier->ObjectPath(key)));
      EXPECT_FALSE(tier->Exists({&key, 1})[0]);
      const TierStats st = tier->Stats();
      EXPECT_EQ(st.corrupt_dropped, 1u);
      EXPECT_EQ(st.misses, 1u);
      EXPECT_EQ(st.objects, 1u);
      EXPECT_EQ(st.bytes_used, MakeObject(2, 2).size());
      EXPECT_NE(st.last_error.find(tier->ObjectPath(key)), std::string::npos)
          << st.last_error;
      // The intact neighbour still reads.
      EXPECT_TRUE(tier->Get({&other, 1})[0].has_value());
      ExpectDirectoryMatchesIndex(dir, *tier);
    }
  }
}

TEST(DiskTierTest, FileDeletedBehindTheTiersBackIsMissAndError) {
  const std::string dir = testing::TempDir("disk_vanished");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  const BlockKey key = KeyOf(5);
  ASSERT_TRUE(tier->Put(key, MakeObject(5)).ok());
  tier->Flush();
  fs::remove(tier->ObjectPath(key));
  EXPECT_FALSE(tier->Get({&key, 1})[0].has_value());
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.errors, 1u);
  EXPECT_EQ(st.corrupt_dropped, 0u);
  EXPECT_EQ(st.objects, 0u);
  EXPECT_EQ(st.bytes_used, 0u);
}

TEST(DiskTierTest, CapacityEvictsLeastRecentlyUsed) {
  const std::string dir = testing::TempDir("disk_lru");
  std::unique_ptr<DiskTier> tier = OpenTier(dir, 5 * kOneBlockObject);
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 7; ++i) keys.push_back(KeyOf(i));
  for (uint64_t i = 0; i < 5; ++i) {
    ASSERT_TRUE(tier->Put(keys[i], MakeObject(i)).ok());
    tier->Flush();
  }
  // Refresh 0 and 1; a batch refreshes its keys last to first, so 0 ends up
  // the most recent and 2 the least.
  EXPECT_EQ(tier->Get({keys.data(), 2})[0].has_value(), true);
  for (uint64_t i = 5; i < 7; ++i) {
    ASSERT_TRUE(tier->Put(keys[i], MakeObject(i)).ok());
    tier->Flush();
  }
  const std::vector<bool> present = tier->Exists(keys);
  EXPECT_EQ(present,
            (std::vector<bool>{true, true, false, false, true, true, true}));
  TierStats st = tier->Stats();
  EXPECT_EQ(st.evictions, 2u);
  EXPECT_EQ(st.bytes_used, 5 * kOneBlockObject);
  ExpectDirectoryMatchesIndex(dir, *tier);

  // Two more: the two least recent go (4, then 1, which was refreshed
  // before 5 and 6 were stored).
  for (uint64_t i = 7; i < 9; ++i) {
    keys.push_back(KeyOf(i));
    ASSERT_TRUE(tier->Put(keys[i], MakeObject(i)).ok());
    tier->Flush();
  }
  EXPECT_EQ(tier->Exists(keys),
            (std::vector<bool>{true, false, false, false, false, true, true,
                               true, true}));
  // An object larger than the whole capacity is refused up front.
  const Status s = tier->Put(KeyOf(100), MakeObject(100, 7));
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("capacity"), std::string::npos);
  st = tier->Stats();
  EXPECT_EQ(st.dropped_writes, 1u);
  EXPECT_EQ(st.evictions, 4u);
}

TEST(DiskTierTest, CapacityHoldsUnderRandomSizes) {
  const std::string dir = testing::TempDir("disk_capacity");
  const uint64_t capacity = 20 * kOneBlockObject;
  std::unique_ptr<DiskTier> tier = OpenTier(dir, capacity);
  std::mt19937_64 rng(7);
  for (uint64_t i = 0; i < 200; ++i) {
    ASSERT_TRUE(tier->Put(KeyOf(i), MakeObject(i, 1 + int(rng() % 6))).ok());
    if (i % 10 == 9) {
      tier->Flush();
      EXPECT_LE(tier->Stats().bytes_used, capacity);
    }
  }
  tier->Flush();
  const TierStats st = tier->Stats();
  EXPECT_LE(st.bytes_used, capacity);
  EXPECT_GT(st.evictions, 150u);
  EXPECT_EQ(st.writes, 200u);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

TEST(DiskTierTest, ReopenWithLessCapacityKeepsTheNewestByMtime) {
  const std::string dir = testing::TempDir("disk_reopen_small");
  std::vector<BlockKey> keys;
  {
    std::unique_ptr<DiskTier> tier = OpenTier(dir);
    for (uint64_t i = 0; i < 6; ++i) {
      keys.push_back(KeyOf(i));
      ASSERT_TRUE(tier->Put(keys[i], MakeObject(i)).ok());
    }
    tier->Flush();
    // Object i last used at second 1000 + i, except 0, which is the newest.
    for (uint64_t i = 0; i < 6; ++i) {
      const timespec t = {time_t(i == 0 ? 2000 : 1000 + i), 0};
      const timespec times[2] = {t, t};
      ASSERT_EQ(
          ::utimensat(AT_FDCWD, tier->ObjectPath(keys[i]).c_str(), times, 0),
          0);
    }
  }
  std::unique_ptr<DiskTier> tier = OpenTier(dir, 3 * kOneBlockObject);
  EXPECT_EQ(tier->Exists(keys),
            (std::vector<bool>{true, false, false, false, true, true}));
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.evictions, 3u);
  EXPECT_EQ(st.bytes_used, 3 * kOneBlockObject);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

TEST(DiskTierTest, OpenRemovesTempFilesAndLeavesForeignFiles) {
  const std::string dir = testing::TempDir("disk_temp");
  std::string tmp, foreign;
  {
    std::unique_ptr<DiskTier> tier = OpenTier(dir);
    tmp = tier->ObjectPath(KeyOf(1)) + ".tmp";
    foreign = fs::path(tmp).parent_path() / "notes.txt";
  }
  fs::create_directories(fs::path(tmp).parent_path());
  WriteBytes(tmp, MakeObject(1));
  WriteBytes(foreign, Bytes(10, 1));
  ASSERT_TRUE(fs::exists(tmp));
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_TRUE(fs::exists(foreign));
  EXPECT_EQ(tier->Stats().objects, 0u);
  const BlockKey key = KeyOf(1);
  EXPECT_FALSE(tier->Exists({&key, 1})[0]);
}

// Runs `child` in a forked process and returns its exit code (-1 when it did
// not exit normally). The child must not return from `child`.
template <typename F>
int RunInChild(F child) {
  const pid_t pid = ::fork();
  KV_CHECK(pid >= 0);
  if (pid == 0) ::_exit(child());
  int status = 0;
  KV_CHECK(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(DiskTierTest, SecondOpenOfALockedDirectoryFails) {
  const std::string dir = testing::TempDir("disk_lock");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  tier->Flush();  // the writer thread is idle across fork()
  const std::string parent = std::to_string(::getpid());
  const int rc = RunInChild([&] {
    Result<std::unique_ptr<DiskTier>> r = DiskTier::Open({.dir = dir});
    if (r.ok()) return 1;
    if (r.status().code() != StatusCode::kUnavailable) return 2;
    const std::string& m = r.status().message();
    if (m.find(dir + "/LOCK") == std::string::npos) return 3;
    if (m.find("pid " + parent) == std::string::npos) return 4;
    return 0;
  });
  EXPECT_EQ(rc, 0);
  // The same process is refused too (flock is per open file).
  Result<std::unique_ptr<DiskTier>> again = DiskTier::Open({.dir = dir});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
  // Released by the holder's destructor.
  tier.reset();
  EXPECT_TRUE(DiskTier::Open({.dir = dir}).ok());
}

TEST(DiskTierTest, LockIsReleasedWhenItsHolderIsKilled) {
  const std::string dir = testing::TempDir("disk_lock_kill");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Result<std::unique_ptr<DiskTier>> r = DiskTier::Open({.dir = dir});
    const char c = r.ok() ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  EXPECT_EQ(c, 'y');
  EXPECT_EQ(DiskTier::Open({.dir = dir}).status().code(),
            StatusCode::kUnavailable);
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(DiskTier::Open({.dir = dir}).ok());
}

// A writer process killed with SIGKILL at random moments, 24 times, over
// one directory (with evictions going on): every object file left behind is
// complete and is the object its name says; reopening removes temporary
// files and serves every object.
TEST(DiskTierTest, KillNineNeverLeavesATornObject) {
  const std::string dir = testing::TempDir("disk_crash");
  const uint64_t capacity = 40 * kOneBlockObject;
  std::mt19937_64 rng(99);
  size_t objects_seen = 0, temps_seen = 0;
  for (uint64_t round = 0; round < 24; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      Result<std::unique_ptr<DiskTier>> r =
          DiskTier::Open({.dir = dir,
                          .capacity_bytes = capacity,
                          .max_queue_bytes = 8 * kOneBlockObject});
      if (!r.ok()) ::_exit(2);
      for (uint64_t id = round << 32;;) {
        const Status s = (*r)->Put(KeyOf(id), MakeObject(id, 1 + int(id % 4)));
        if (s.ok()) {
          ++id;
        } else {
          ::usleep(50);  // queue full: let the writer catch up
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30000));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "round " << round;

    // What the killed writer left, read raw.
    temps_seen += FilesEndingWith(dir, ".tmp").size();
    const std::vector<fs::path> files = FilesEndingWith(dir, ".kvo");
    objects_seen += files.size();
    std::vector<Bytes> contents;
    for (const fs::path& f : files) contents.push_back(ReadBytes(f));
    std::unique_ptr<DiskTier> tier = OpenTier(dir, capacity);
    std::vector<BlockKey> keys;
    for (size_t k = 0; k < files.size(); ++k) {
      const fs::path& f = files[k];
      const Bytes& b = contents[k];
      Result<ObjectView> v = ParseObject(b);
      ASSERT_TRUE(v.ok()) << "round " << round << " " << f << ": "
                          << v.status().ToString();
      ASSERT_EQ(tier->ObjectPath(v->header.key), f.string());
      uint64_t id = 0;
      for (int i = 0; i < 8; ++i) id |= uint64_t(v->payload[i]) << (8 * i);
      ASSERT_EQ(b, MakeObject(id, 1 + int(id % 4))) << f;
      keys.push_back(v->header.key);
    }
    EXPECT_TRUE(FilesEndingWith(dir, ".tmp").empty());
    const TierStats st = tier->Stats();
    EXPECT_EQ(st.objects, files.size());
    EXPECT_LE(st.bytes_used, capacity);
    for (const std::optional<Bytes>& got : tier->Get(keys)) {
      EXPECT_TRUE(got.has_value());
    }
    EXPECT_EQ(tier->Stats().corrupt_dropped, 0u);
  }
  EXPECT_GT(objects_seen, 0u);
  RecordProperty("objects_seen", int(objects_seen));
  RecordProperty("temps_seen", int(temps_seen));
}

// The writer is held inside open() of its temporary file (a FIFO put in its
// place): the queue fills, further Puts are dropped and counted at once,
// queued objects stay readable, and Erase takes one out of the queue.
TEST(DiskTierTest, FullQueueDropsWritesWithoutBlocking) {
  const std::string dir = testing::TempDir("disk_queue");
  std::unique_ptr<DiskTier> tier =
      OpenTier(dir, uint64_t{1} << 30, 3 * kOneBlockObject);
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 200; ++i) keys.push_back(KeyOf(i));
  const std::string fifo = tier->ObjectPath(keys[0]) + ".tmp";
  fs::create_directories(fs::path(fifo).parent_path());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);

  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(tier->Put(keys[i], MakeObject(i)).ok());
  }
  for (uint64_t i = 3; i < 200; ++i) {
    const Status s = tier->Put(keys[i], MakeObject(i));
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
    EXPECT_NE(s.message().find("queue full"), std::string::npos);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  TierStats st = tier->Stats();
  EXPECT_EQ(st.dropped_writes, 197u);
  EXPECT_EQ(st.queue_objects, 3u);
  EXPECT_EQ(st.queue_bytes, 3 * kOneBlockObject);
  EXPECT_EQ(st.writes, 0u);
  EXPECT_EQ(tier->Exists({keys.data(), 4}),
            (std::vector<bool>{true, true, true, false}));
  std::optional<Bytes> queued = tier->Get({&keys[1], 1})[0];
  ASSERT_TRUE(queued.has_value());
  EXPECT_EQ(*queued, MakeObject(1));

  ASSERT_TRUE(tier->Erase(keys[2]).ok());
  EXPECT_FALSE(tier->Exists({&keys[2], 1})[0]);
  EXPECT_EQ(tier->Stats().queue_objects, 2u);
  ASSERT_TRUE(tier->Put(keys[3], MakeObject(3)).ok());
  EXPECT_EQ(tier->Put(keys[4], MakeObject(4)).code(),
            StatusCode::kResourceExhausted);

  // Release the writer: its write into the FIFO fails and is counted; the
  // rest is stored.
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  tier->Flush();
  ::close(reader);
  st = tier->Stats();
  EXPECT_EQ(st.errors, 1u);
  EXPECT_NE(st.last_error.find(fifo), std::string::npos) << st.last_error;
  EXPECT_EQ(st.writes, 2u);
  EXPECT_EQ(st.queue_objects, 0u);
  EXPECT_EQ(st.dropped_writes, 198u);
  EXPECT_EQ(tier->Exists({keys.data(), 5}),
            (std::vector<bool>{false, true, false, true, false}));
  ExpectDirectoryMatchesIndex(dir, *tier);
}

// Puts, Gets, Erases and Exists from several threads over a small key set
// and a small capacity: every Get returns the right object or nothing, and
// afterwards the directory holds exactly the index.
TEST(DiskTierTest, ConcurrentUseKeepsDirectoryAndIndexInStep) {
  const std::string dir = testing::TempDir("disk_concurrent");
  const uint64_t capacity = 12 * kOneBlockObject;
  std::unique_ptr<DiskTier> tier = OpenTier(dir, capacity, 6 * kOneBlockObject);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(uint64_t(t) + 1);
      for (int op = 0; op < 1500; ++op) {
        const uint64_t id = rng() % 40;
        const BlockKey key = KeyOf(id);
        switch (rng() % 4) {
          case 0:
            (void)tier->Put(key, MakeObject(id, 1 + int(id % 3)));
            break;
          case 1: {
            const std::optional<Bytes> got = tier->Get({&key, 1})[0];
            if (got && *got != MakeObject(id, 1 + int(id % 3))) ++wrong;
            break;
          }
          case 2:
            if (!tier->Erase(key).ok()) ++wrong;
            break;
          case 3:
            (void)tier->Exists({&key, 1});
            break;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  tier->Flush();
  EXPECT_EQ(wrong.load(), 0);
  const TierStats st = tier->Stats();
  EXPECT_LE(st.bytes_used, capacity);
  EXPECT_EQ(st.errors, 0u) << st.last_error;
  EXPECT_EQ(st.corrupt_dropped, 0u);
  EXPECT_GT(st.writes, 0u);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

}  // namespace
}  // namespace kvstash::store
