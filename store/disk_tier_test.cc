#include "store/disk_tier.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store/disk_io.h"
#include "store/object_format.h"
#include "store/object_testing.h"
#include "store/tier_test_util.h"
#include "tests/testing/shared_data.h"

namespace kvstash::store {
namespace {

namespace fs = std::filesystem;
using kernels::BlockLayout;
using Bytes = std::vector<uint8_t>;

const uint64_t kOneBlockObject = MakeObject(0).size();  // 640 bytes
// Object files are padded to whole pages: one page holds up to 7 blocks.
constexpr uint64_t kPage = 4096;

// Blocks of an object whose file takes exactly `pages` pages.
int BlocksForPages(int pages) { return 8 * pages - 1; }

// The file that holds `object`.
Bytes FileOf(Bytes object) {
  object.resize(AlignUp(object.size()), 0);
  return object;
}

uint64_t FileBytes(const Bytes& object) { return AlignUp(object.size()); }

// The object in an object file, checked: intact, and followed by zero
// padding up to the file's (page-aligned) end.
Result<ObjectView> ParseObjectFile(const Bytes& file) {
  KV_ASSIGN_OR_RETURN(const ObjectHeader h, ParseHeaderPrefix(file));
  const size_t n = kObjectHeaderBytes + size_t(h.payload_bytes);
  if (h.payload_bytes > file.size() || file.size() != AlignUp(n)) {
    return Status::Corruption("file size " + std::to_string(file.size()));
  }
  for (size_t i = n; i < file.size(); ++i) {
    if (file[i] != 0) return Status::Corruption("padding");
  }
  return ParseObject(std::span<const uint8_t>(file).first(n));
}

using DiskIo = DiskTierOptions::DiskIo;

DiskTierOptions Options(const std::string& dir, DiskIo io,
                        uint64_t capacity = uint64_t{1} << 30,
                        uint64_t max_queue = uint64_t{64} << 20) {
  return {.dir = dir,
          .capacity_bytes = capacity,
          .max_queue_bytes = max_queue,
          .io = io};
}

std::unique_ptr<DiskTier> OpenTierWith(const DiskTierOptions& options) {
  Result<std::unique_ptr<DiskTier>> tier = DiskTier::Open(options);
  KV_CHECK_MSG(tier.ok(), tier.status().ToString().c_str());
  return std::move(tier).value();
}

// The DiskTier suite runs once per I/O mode: kBuffered, and kAuto (O_DIRECT
// through io_uring where this machine allows it, else buffered again). Both
// must give the same results.
class DiskTierTest : public ::testing::TestWithParam<DiskIo> {
 protected:
  DiskTierOptions Opts(const std::string& dir,
                       uint64_t capacity = uint64_t{1} << 30,
                       uint64_t max_queue = uint64_t{64} << 20) const {
    return Options(dir, GetParam(), capacity, max_queue);
  }
  std::unique_ptr<DiskTier> OpenTier(const std::string& dir,
                                     uint64_t capacity = uint64_t{1} << 30,
                                     uint64_t max_queue = uint64_t{64}
                                                          << 20) const {
    return OpenTierWith(Opts(dir, capacity, max_queue));
  }
};

INSTANTIATE_TEST_SUITE_P(IoModes, DiskTierTest,
                         ::testing::Values(DiskIo::kBuffered, DiskIo::kAuto),
                         [](const ::testing::TestParamInfo<DiskIo>& info) {
                           return std::string(info.param == DiskIo::kBuffered
                                                  ? "Buffered"
                                                  : "Auto");
                         });

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
    Result<ObjectView> v = ParseObjectFile(b);
    ASSERT_TRUE(v.ok()) << f << ": " << v.status().ToString();
    EXPECT_EQ(tier.ObjectPath(v->header.key), f.string());
  }
  EXPECT_EQ(files.size(), st.objects);
  EXPECT_EQ(bytes, st.bytes_used);
  EXPECT_TRUE(FilesEndingWith(dir, ".tmp").empty());
}

TEST_P(DiskTierTest, PutGetExistsErase) {
  const std::string dir = testing::TempDir("disk_basic");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  EXPECT_EQ(tier->name(), "disk");
  if (GetParam() == DiskIo::kBuffered) {
    EXPECT_EQ(tier->io_mode(), "buffered");
  }
  RecordProperty("io_mode", std::string(tier->io_mode()));
  std::vector<BlockKey> keys;
  uint64_t total = 0, file_total = 0;
  for (uint64_t i = 0; i < 10; ++i) {
    keys.push_back(KeyOf(i));
    const Bytes object = MakeObject(i, 1 + int(i % 3) * 9);
    total += object.size();
    file_total += FileBytes(object);
    ASSERT_TRUE(tier->Put(keys.back(), object).ok());
  }
  // Visible at once, whether queued or stored.
  for (const bool e : tier->Exists(keys)) EXPECT_TRUE(e);
  std::vector<std::optional<Bytes>> got = tier->Get(keys);
  for (uint64_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(got[i].has_value());
    EXPECT_EQ(Unsealed(*got[i]), MakeObject(i, 1 + int(i % 3) * 9));
  }
  tier->Flush();
  TierStats st = tier->Stats();
  EXPECT_EQ(st.writes, 10u);
  EXPECT_EQ(st.objects, 10u);
  EXPECT_EQ(st.bytes_used, file_total);
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
    EXPECT_EQ(Unsealed(*got[i]), MakeObject(i, 1 + int(i % 3) * 9));
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

// The reads reuse their buffers (uninitialized, grown where too small):
// objects never show another's bytes, whatever the order of their sizes,
// also with two threads reading at once (each takes its own reader).
TEST_P(DiskTierTest, VisitsReuseBuffersWithoutMixingObjects) {
  const std::string dir = testing::TempDir("disk_visit");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  ExpectVisitsGiveEachObjectExactly(*tier);
  std::thread other([&] { ExpectVisitsGiveEachObjectExactly(*tier); });
  ExpectVisitsGiveEachObjectExactly(*tier);
  other.join();
  EXPECT_EQ(tier->Stats().corrupt_dropped, 0u);
}

TEST_P(DiskTierTest, PutRefusesWhatIsNotAnObjectOfItsKey) {
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

TEST_P(DiskTierTest, OpenRefusesBadOptions) {
  const std::string dir = testing::TempDir("disk_bad_options");
  EXPECT_EQ(DiskTier::Open({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DiskTier::Open({.dir = dir, .capacity_bytes = 0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(DiskTier::Open({.dir = dir, .max_queue_bytes = 0}).status().code(),
            StatusCode::kInvalidArgument);
  const std::string file = dir + "/plain_file";
  WriteBytes(file, Bytes(3, 1));
  Result<std::unique_ptr<DiskTier>> r = DiskTier::Open(Opts(file));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_NE(r.status().message().find(file), std::string::npos);
}

TEST_P(DiskTierTest, RestartFindsAndVerifiesObjects) {
  const std::string dir = testing::TempDir("disk_restart") + "/nested/cache";
  std::vector<BlockKey> keys;
  uint64_t total = 0;
  {
    std::unique_ptr<DiskTier> tier = OpenTier(dir);
    for (uint64_t i = 0; i < 50; ++i) {
      keys.push_back(KeyOf(i));
      total += FileBytes(MakeObject(i, 1 + int(i % 4)));
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
    EXPECT_EQ(Unsealed(*got[i]), MakeObject(i, 1 + int(i % 4)));
  }
  st = tier->Stats();
  EXPECT_EQ(st.hits, 50u);
  EXPECT_EQ(st.corrupt_dropped, 0u);
  EXPECT_EQ(st.errors, 0u);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

// Damage that the header shows (framing, key, length against the file) is
// dropped by Open; the rest is caught by the checksum when read.
TEST_P(DiskTierTest, DamagedObjectIsMissDeletedAndCounted) {
  struct Damage {
    std::string what;
    bool seen_by_open;
    void (*apply)(Bytes& file, const Bytes& other);
  };
  const Damage damages[] = {
      {"payload byte flipped", false,
       [](Bytes& b, const Bytes&) { b[kObjectHeaderBytes + 700] ^= 0x10; }},
      {"header byte flipped", false,
       [](Bytes& b, const Bytes&) { b[41] ^= 1; }},
      {"checksum byte flipped", false,
       [](Bytes& b, const Bytes&) { b[90] ^= 0x80; }},
      {"padding byte set", false,
       [](Bytes& b, const Bytes&) { b[b.size() - 3] = 1; }},
      {"magic", true, [](Bytes& b, const Bytes&) { b[0] = 'X'; }},
      {"truncated", true,
       [](Bytes& b, const Bytes&) { b.resize(b.size() / 2); }},
      {"padding cut off", true,
       [](Bytes& b, const Bytes&) { b.resize(MakeObject(1, 2).size()); }},
      {"grown", true,
       [](Bytes& b, const Bytes&) { b.resize(b.size() + kPage); }},
      {"emptied", true, [](Bytes& b, const Bytes&) { b.clear(); }},
      {"another key's object", true,
       [](Bytes& b, const Bytes& other) { b = other; }},
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
      Bytes file = ReadBytes(tier->ObjectPath(key));
      d.apply(file, ReadBytes(tier->ObjectPath(other)));
      WriteBytes(tier->ObjectPath(key), file);
      if (reopen) {
        tier.reset();
        tier = OpenTier(dir);
      }
      // Verified only on read, unless Open saw it.
      EXPECT_EQ(tier->Exists({&key, 1})[0], !(reopen && d.seen_by_open));
      EXPECT_FALSE(tier->Get({&key, 1})[0].has_value());
      EXPECT_FALSE(fs::exists(tier->ObjectPath(key)));
      EXPECT_FALSE(tier->Exists({&key, 1})[0]);
      const TierStats st = tier->Stats();
      EXPECT_EQ(st.corrupt_dropped, 1u);
      EXPECT_EQ(st.misses, 1u);
      EXPECT_EQ(st.errors, 0u);
      EXPECT_EQ(st.objects, 1u);
      EXPECT_EQ(st.bytes_used, FileBytes(MakeObject(2, 2)));
      EXPECT_NE(st.last_error.find(tier->ObjectPath(key)), std::string::npos)
          << st.last_error;
      // The intact neighbour still reads.
      EXPECT_TRUE(tier->Get({&other, 1})[0].has_value());
      ExpectDirectoryMatchesIndex(dir, *tier);
    }
  }
}

// The attack of issue 13: whoever can write a cache file edits an object
// and recomputes its checksum, or plants an object of their own. Neither is
// ever returned: both are misses, deleted and counted as forged, before and
// after a restart, and the intact neighbour still reads.
TEST_P(DiskTierTest, ForgedObjectsAreRefusedDeletedAndCounted) {
  for (const bool reopen : {false, true}) {
    SCOPED_TRACE(reopen ? "after reopen" : "live");
    const std::string dir = testing::TempDir("disk_forged");
    std::unique_ptr<DiskTier> tier = OpenTier(dir);
    const BlockKey edited = KeyOf(1), planted = KeyOf(3), good = KeyOf(2);
    ASSERT_TRUE(tier->Put(edited, MakeObject(1, 2)).ok());
    ASSERT_TRUE(tier->Put(good, MakeObject(2, 2)).ok());
    tier->Flush();
    Bytes object = ReadBytes(tier->ObjectPath(edited));
    object.resize(MakeObject(1, 2).size());  // the padding off
    object[kObjectHeaderBytes + 9] ^= 0x40;  // a K/V value
    RecomputeChecksum(object);
    WriteBytes(tier->ObjectPath(edited), FileOf(object));
    // An unsealed object, as anyone can encode one.
    fs::create_directories(fs::path(tier->ObjectPath(planted)).parent_path());
    WriteBytes(tier->ObjectPath(planted), FileOf(MakeObject(3, 1)));
    tier.reset();  // a planted file is indexed at Open
    tier = OpenTier(dir);
    if (reopen) {
      tier.reset();
      tier = OpenTier(dir);
    }
    const BlockKey keys[] = {edited, planted, good};
    const std::vector<std::optional<Bytes>> got = tier->Get(keys);
    EXPECT_FALSE(got[0].has_value());
    EXPECT_FALSE(got[1].has_value());
    ASSERT_TRUE(got[2].has_value());
    EXPECT_EQ(Unsealed(*got[2]), MakeObject(2, 2));
    EXPECT_FALSE(fs::exists(tier->ObjectPath(edited)));
    EXPECT_FALSE(fs::exists(tier->ObjectPath(planted)));
    const TierStats st = tier->Stats();
    EXPECT_EQ(st.forged_dropped, 2u);
    EXPECT_EQ(st.corrupt_dropped, 0u);
    EXPECT_EQ(st.objects, 1u);
    EXPECT_NE(st.last_error.find("PermissionDenied"), std::string::npos)
        << st.last_error;
  }
}

// A directory's objects are sealed with the key it is given (or its own
// TIER_KEY): reopened under another key, they are refused as forged.
TEST_P(DiskTierTest, ObjectsOfAnotherKeyAreRefused) {
  const std::string dir = testing::TempDir("disk_keys");
  const auto key = [](char c) {
    return ObjectAuthenticator::FromSecret(std::string(40, c)).value();
  };
  DiskTierOptions a = Opts(dir);
  a.authenticator = key('a');
  {
    std::unique_ptr<DiskTier> tier = OpenTierWith(a);
    ASSERT_TRUE(tier->Put(KeyOf(1), MakeObject(1)).ok());
    ASSERT_TRUE(tier->Put(KeyOf(2), MakeObject(2)).ok());
  }
  EXPECT_FALSE(fs::exists(dir + "/TIER_KEY"));  // a key was given
  {
    std::unique_ptr<DiskTier> tier = OpenTierWith(a);  // the same key
    const BlockKey k = KeyOf(1);
    EXPECT_TRUE(tier->Get({&k, 1})[0].has_value());
  }
  DiskTierOptions b = Opts(dir);
  b.authenticator = key('b');
  std::unique_ptr<DiskTier> tier = OpenTierWith(b);
  const BlockKey k = KeyOf(2);
  EXPECT_FALSE(tier->Get({&k, 1})[0].has_value());
  EXPECT_EQ(tier->Stats().forged_dropped, 1u);
  tier.reset();

  DiskTierOptions none = Opts(dir);
  none.authenticator = ObjectAuthenticator();
  const Result<std::unique_ptr<DiskTier>> refused = DiskTier::Open(none);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
}

// Only the owner can read or write what the cache holds: directories 0700
// (an existing one is made so), files 0600, the generated key included.
TEST_P(DiskTierTest, FilesAndDirectoriesArePrivate) {
  const std::string dir = testing::TempDir("disk_modes");
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  ASSERT_TRUE(tier->Put(KeyOf(1), MakeObject(1)).ok());
  tier->Flush();
  const auto mode = [](const std::string& path) {
    struct stat st;
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  };
  const std::string object = tier->ObjectPath(KeyOf(1));
  EXPECT_EQ(mode(dir), 0700u);
  EXPECT_EQ(mode(fs::path(object).parent_path().string()), 0700u);
  EXPECT_EQ(mode(object), 0600u);
  EXPECT_EQ(mode(dir + "/LOCK"), 0600u);
  EXPECT_EQ(mode(dir + "/TIER_KEY"), 0600u);
  EXPECT_EQ(ReadBytes(dir + "/TIER_KEY").size(), 65u);  // 64 hex digits, \n
  // The generated key survives the restart, so the object still reads.
  tier.reset();
  tier = OpenTier(dir);
  const BlockKey k = KeyOf(1);
  EXPECT_TRUE(tier->Get({&k, 1})[0].has_value());
  // A key file others may read is refused, with the fix in the message.
  tier.reset();
  ASSERT_EQ(::chmod((dir + "/TIER_KEY").c_str(), 0644), 0);
  const Result<std::unique_ptr<DiskTier>> open = DiskTier::Open(Opts(dir));
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(open.status().message().find("chmod 600"), std::string::npos);
}

// A kill -9 of a build that wrote the key file in place could leave it
// empty: it holds no key, and the next Open makes one (written to a
// temporary file and linked into place now, so it is never torn).
TEST_P(DiskTierTest, AnEmptyKeyFileIsMadeAgain) {
  const std::string dir = testing::TempDir("disk_empty_key");
  OpenTier(dir).reset();
  fs::resize_file(dir + "/TIER_KEY", 0);
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  EXPECT_EQ(ReadBytes(dir + "/TIER_KEY").size(), 65u);
  ASSERT_TRUE(tier->Put(KeyOf(1), MakeObject(1)).ok());
  tier->Flush();
  tier.reset();
  tier = OpenTier(dir);
  const BlockKey k = KeyOf(1);
  EXPECT_TRUE(tier->Get({&k, 1})[0].has_value());
  std::vector<std::string> left;  // no temporary key file stays
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().rfind("TIER_KEY.", 0) == 0) {
      left.push_back(e.path().string());
    }
  }
  EXPECT_TRUE(left.empty());
}

TEST_P(DiskTierTest, FileDeletedBehindTheTiersBackIsMissAndError) {
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

TEST_P(DiskTierTest, CapacityEvictsLeastRecentlyUsed) {
  const std::string dir = testing::TempDir("disk_lru");
  std::unique_ptr<DiskTier> tier = OpenTier(dir, 5 * kPage);
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
  EXPECT_EQ(st.bytes_used, 5 * kPage);
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
  const Status s = tier->Put(KeyOf(100), MakeObject(100, BlocksForPages(6)));
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("capacity"), std::string::npos);
  st = tier->Stats();
  EXPECT_EQ(st.dropped_writes, 1u);
  EXPECT_EQ(st.evictions, 4u);
}

TEST_P(DiskTierTest, CapacityHoldsUnderRandomSizes) {
  const std::string dir = testing::TempDir("disk_capacity");
  const uint64_t capacity = 20 * kPage;
  std::unique_ptr<DiskTier> tier = OpenTier(dir, capacity);
  std::mt19937_64 rng(7);
  for (uint64_t i = 0; i < 200; ++i) {
    ASSERT_TRUE(tier->Put(KeyOf(i), MakeObject(i, 1 + int(rng() % 40))).ok());
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

TEST_P(DiskTierTest, ReopenWithLessCapacityKeepsTheNewestByMtime) {
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
  std::unique_ptr<DiskTier> tier = OpenTier(dir, 3 * kPage);
  EXPECT_EQ(tier->Exists(keys),
            (std::vector<bool>{true, false, false, false, true, true}));
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.evictions, 3u);
  EXPECT_EQ(st.bytes_used, 3 * kPage);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

TEST_P(DiskTierTest, OpenRemovesTempFilesAndLeavesForeignFiles) {
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

TEST_P(DiskTierTest, SecondOpenOfALockedDirectoryFails) {
  const std::string dir = testing::TempDir("disk_lock");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  tier->Flush();  // the writer thread is idle across fork()
  const std::string parent = std::to_string(::getpid());
  const int rc = RunInChild([&] {
    Result<std::unique_ptr<DiskTier>> r = DiskTier::Open(Opts(dir));
    if (r.ok()) return 1;
    if (r.status().code() != StatusCode::kUnavailable) return 2;
    const std::string& m = r.status().message();
    if (m.find(dir + "/LOCK") == std::string::npos) return 3;
    if (m.find("pid " + parent) == std::string::npos) return 4;
    return 0;
  });
  EXPECT_EQ(rc, 0);
  // The same process is refused too (flock is per open file).
  Result<std::unique_ptr<DiskTier>> again = DiskTier::Open(Opts(dir));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);
  // Released by the holder's destructor.
  tier.reset();
  EXPECT_TRUE(DiskTier::Open(Opts(dir)).ok());
}

TEST_P(DiskTierTest, LockIsReleasedWhenItsHolderIsKilled) {
  const std::string dir = testing::TempDir("disk_lock_kill");
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Result<std::unique_ptr<DiskTier>> r = DiskTier::Open(Opts(dir));
    const char c = r.ok() ? 'y' : 'n';
    (void)!::write(ready[1], &c, 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  EXPECT_EQ(c, 'y');
  EXPECT_EQ(DiskTier::Open(Opts(dir)).status().code(),
            StatusCode::kUnavailable);
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(DiskTier::Open(Opts(dir)).ok());
}

// A writer process killed with SIGKILL at random moments, 24 times (more,
// up to 200, until a kill has landed inside a write, a temporary file left
// behind, and one after a write, an object file left behind), over one
// directory (with evictions going on): every object file left behind is
// complete and is the object its name says; reopening removes temporary
// files and serves every object. Kills come within 30 ms of the start,
// later after each 24 rounds that have not seen both (up to 480 ms): a
// loaded machine under a sanitizer may take longer to sync a first file.
TEST_P(DiskTierTest, KillNineNeverLeavesATornObject) {
  const std::string dir = testing::TempDir("disk_crash");
  const uint64_t capacity = 40 * kPage;
  std::mt19937_64 rng(99);
  size_t objects_seen = 0, temps_seen = 0;
  for (uint64_t round = 0;
       round < 24 || ((temps_seen == 0 || objects_seen == 0) && round < 200);
       ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      Result<std::unique_ptr<DiskTier>> r =
          DiskTier::Open(Opts(dir, capacity, 8 * kOneBlockObject));
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
    const uint64_t max_delay_us = uint64_t{30000}
                                  << std::min<uint64_t>(round / 24, 4);
    std::this_thread::sleep_for(
        std::chrono::microseconds(rng() % max_delay_us));
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
      Result<ObjectView> v = ParseObjectFile(b);
      ASSERT_TRUE(v.ok()) << "round " << round << " " << f << ": "
                          << v.status().ToString();
      ASSERT_EQ(tier->ObjectPath(v->header.key), f.string());
      uint64_t id = 0;
      for (int i = 0; i < 8; ++i) id |= uint64_t(v->payload[i]) << (8 * i);
      ASSERT_EQ(Unsealed(b), FileOf(MakeObject(id, 1 + int(id % 4)))) << f;
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
  EXPECT_GT(temps_seen, 0u) << "no kill landed inside a write";
  RecordProperty("objects_seen", int(objects_seen));
  RecordProperty("temps_seen", int(temps_seen));
}

// The writer is paused: the queue fills, further Puts are dropped and
// counted at once, queued objects stay readable, and Erase takes one out of
// the queue. Then what was planted at the writer's temporary paths neither
// stalls it (a FIFO is replaced, never opened: O_EXCL | O_NOFOLLOW) nor is
// written through; a directory there fails that write, counted.
TEST_P(DiskTierTest, FullQueueDropsWritesWithoutBlocking) {
  const std::string dir = testing::TempDir("disk_queue");
  std::unique_ptr<DiskTier> tier =
      OpenTier(dir, uint64_t{1} << 30, 3 * kOneBlockObject);
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 200; ++i) keys.push_back(KeyOf(i));
  const std::string blocked = tier->ObjectPath(keys[0]) + ".tmp";
  const std::string fifo = tier->ObjectPath(keys[1]) + ".tmp";
  fs::create_directories(blocked);
  fs::create_directories(fs::path(fifo).parent_path());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  tier->PauseWriterForTesting(true);

  // The writer is paused: a Put that waited for room would never return,
  // so returning (refused, counted) is the proof that it does not block.
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(tier->Put(keys[i], MakeObject(i)).ok());
  }
  for (uint64_t i = 3; i < 200; ++i) {
    const Status s = tier->Put(keys[i], MakeObject(i));
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
    EXPECT_NE(s.message().find("queue full"), std::string::npos);
  }
  TierStats st = tier->Stats();
  EXPECT_EQ(st.dropped_writes, 197u);
  EXPECT_EQ(st.queue_objects, 3u);
  EXPECT_EQ(st.queue_bytes, 3 * kOneBlockObject);
  EXPECT_EQ(st.writes, 0u);
  EXPECT_EQ(tier->Exists({keys.data(), 4}),
            (std::vector<bool>{true, true, true, false}));
  std::optional<Bytes> queued = tier->Get({&keys[1], 1})[0];
  ASSERT_TRUE(queued.has_value());
  EXPECT_EQ(Unsealed(*queued), MakeObject(1));

  ASSERT_TRUE(tier->Erase(keys[2]).ok());
  EXPECT_FALSE(tier->Exists({&keys[2], 1})[0]);
  EXPECT_EQ(tier->Stats().queue_objects, 2u);
  ASSERT_TRUE(tier->Put(keys[3], MakeObject(3)).ok());
  EXPECT_EQ(tier->Put(keys[4], MakeObject(4)).code(),
            StatusCode::kResourceExhausted);

  tier->PauseWriterForTesting(false);
  tier->Flush();
  st = tier->Stats();
  EXPECT_EQ(st.errors, 1u);
  EXPECT_NE(st.last_error.find(blocked), std::string::npos) << st.last_error;
  EXPECT_EQ(st.writes, 2u);
  EXPECT_EQ(st.queue_objects, 0u);
  EXPECT_EQ(st.dropped_writes, 198u);
  EXPECT_EQ(tier->Exists({keys.data(), 5}),
            (std::vector<bool>{false, true, false, true, false}));
  EXPECT_FALSE(fs::exists(fifo));
  fs::remove(blocked);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

TEST_P(DiskTierTest, ConcurrentUseKeepsDirectoryAndIndexInStep) {
  const std::string dir = testing::TempDir("disk_concurrent");
  const uint64_t capacity = 12 * kPage;
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
            if (got && Unsealed(*got) != MakeObject(id, 1 + int(id % 3))) {
              ++wrong;
            }
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

// Stores the chain `ids` (first to last) whose first object names `parent`,
// one object per block, and waits until it is stored.
void PutChain(DiskTier& tier, const std::vector<uint64_t>& ids,
              Hash128 parent) {
  for (const uint64_t id : ids) {
    ASSERT_TRUE(tier.Put(KeyOf(id), MakeObject(id, 1, parent)).ok());
    parent = KeyOf(id);
  }
  tier.Flush();
}

// A head of three objects shared by branches of three objects each, in a
// tier of nine pages: the branches' tails go first, a branch loses its tail
// before its first object, and the shared head stays (plain LRU would have
// dropped it first, it is the oldest). The same holds when Open rebuilds
// the order from headers and mtimes.
TEST_P(DiskTierTest, EvictionTakesTailsBeforeSharedHeads) {
  const std::string dir = testing::TempDir("disk_leaf_first");
  const std::vector<uint64_t> head = {100, 101, 102};
  auto branch = [](uint64_t b) {
    return std::vector<uint64_t>{1000 * b, 1000 * b + 1, 1000 * b + 2};
  };
  std::vector<uint64_t> all = head;
  for (uint64_t b = 1; b <= 4; ++b) {
    for (const uint64_t id : branch(b)) all.push_back(id);
  }
  // Which of `all` the tier holds.
  auto held = [&](DiskTier& tier) {
    std::vector<BlockKey> keys;
    for (const uint64_t id : all) keys.push_back(KeyOf(id));
    const std::vector<bool> present = tier.Exists(keys);
    std::vector<uint64_t> out;
    for (size_t i = 0; i < all.size(); ++i) {
      if (present[i]) out.push_back(all[i]);
    }
    return out;
  };
  auto concat = [](std::initializer_list<std::vector<uint64_t>> parts) {
    std::vector<uint64_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  {
    std::unique_ptr<DiskTier> tier = OpenTier(dir, 9 * kPage);
    PutChain(*tier, head, kFingerprint);
    for (uint64_t b = 1; b <= 3; ++b) PutChain(*tier, branch(b), KeyOf(102));
    EXPECT_EQ(held(*tier), concat({head, branch(2), branch(3)}));
    EXPECT_EQ(tier->Stats().evictions, 3u);

    // A hit on branch 2 (with its head) makes branch 3 the least recently
    // used leaf: branch 4 replaces it, tail first.
    std::vector<BlockKey> hit;
    for (const uint64_t id : concat({head, branch(2)})) {
      hit.push_back(KeyOf(id));
    }
    for (const auto& got : tier->Get(hit)) EXPECT_TRUE(got.has_value());
    PutChain(*tier, branch(4), KeyOf(102));
    EXPECT_EQ(held(*tier), concat({head, branch(2), branch(4)}));
    EXPECT_EQ(tier->Stats().evictions, 6u);
    ExpectDirectoryMatchesIndex(dir, *tier);

    // Recency for the reopen: the head oldest, then branch 2, then 4.
    int64_t second = 1000;
    for (const uint64_t id : concat({head, branch(2), branch(4)})) {
      const timespec t = {time_t(second++), 0};
      const timespec times[2] = {t, t};
      ASSERT_EQ(
          ::utimensat(AT_FDCWD, tier->ObjectPath(KeyOf(id)).c_str(), times, 0),
          0);
    }
  }
  {
    std::unique_ptr<DiskTier> tier = OpenTier(dir, 6 * kPage);
    EXPECT_EQ(held(*tier), concat({head, branch(4)}));
    EXPECT_EQ(tier->Stats().evictions, 3u);
    ExpectDirectoryMatchesIndex(dir, *tier);
  }
  // Down to two pages: the last branch goes, then the head from its tail.
  std::unique_ptr<DiskTier> tier = OpenTier(dir, 2 * kPage);
  EXPECT_EQ(held(*tier), (std::vector<uint64_t>{100, 101}));
  EXPECT_EQ(tier->Stats().evictions, 4u);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

// Objects whose parents form a cycle (no real chain does) have no leaf
// among them; eviction then takes the least recently used object, and the
// tier stays within capacity. So does an object that names itself.
TEST_P(DiskTierTest, ParentCyclesStillEvict) {
  const std::string dir = testing::TempDir("disk_cycle");
  std::unique_ptr<DiskTier> tier = OpenTier(dir, 2 * kPage);
  ASSERT_TRUE(tier->Put(KeyOf(1), MakeObject(1, 1, KeyOf(2))).ok());
  ASSERT_TRUE(tier->Put(KeyOf(2), MakeObject(2, 1, KeyOf(1))).ok());
  tier->Flush();
  ASSERT_TRUE(tier->Put(KeyOf(3), MakeObject(3, 1, KeyOf(3))).ok());
  tier->Flush();
  const std::vector<BlockKey> keys = {KeyOf(1), KeyOf(2), KeyOf(3), KeyOf(4)};
  EXPECT_EQ(tier->Exists(keys), (std::vector<bool>{false, true, true, false}));
  // 2 lost its child, so it is a leaf and older than 3.
  ASSERT_TRUE(tier->Put(KeyOf(4), MakeObject(4)).ok());
  tier->Flush();
  EXPECT_EQ(tier->Exists(keys), (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(tier->Stats().bytes_used, 2 * kPage);
  ExpectDirectoryMatchesIndex(dir, *tier);
  tier.reset();
  tier = OpenTier(dir, kPage);
  EXPECT_EQ(tier->Stats().objects, 1u);
}

// Ranges of stored objects read exactly their bytes, in either I/O mode,
// and again after a restart (the index then has each object's length from
// its header).
TEST_P(DiskTierTest, RangesReadStoredObjectsAndGatheredOnesVerify) {
  const std::string dir = testing::TempDir("disk_ranges");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  ExpectRangesReadStoredObjects(*tier, 200, 8);
  tier.reset();
  tier = OpenTier(dir);
  ExpectRangesReadStoredObjects(*tier, 200, 8);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

TEST_P(DiskTierTest, MissingKeysAndRangesPastTheEndFailAlone) {
  const std::string dir = testing::TempDir("disk_ranges_missing");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  ExpectMissingKeysAndRangesPastTheEndFailAlone(*tier);
  ExpectDirectoryMatchesIndex(dir, *tier);
}

// The attack of issue 13, and damage, on an object read in ranges: the
// ranges read (they are not verified), VerifyGathered refuses the object,
// deletes it and counts it, as Get would have.
TEST_P(DiskTierTest, ForgedOrDamagedObjectsReadInRangesAreRefusedAndDropped) {
  for (const ObjectEdit& c : RangeReadEdits()) {
    SCOPED_TRACE(c.what);
    const std::string dir = testing::TempDir("disk_ranges_forged");
    std::unique_ptr<DiskTier> tier = OpenTier(dir);
    const BlockKey key = KeyOf(1), other = KeyOf(2);
    ASSERT_TRUE(tier->Put(key, MakeObject(1, 20)).ok());
    ASSERT_TRUE(tier->Put(other, MakeObject(2, 20)).ok());
    tier->Flush();
    const size_t n = MakeObject(1, 20).size();
    Bytes object = ReadBytes(tier->ObjectPath(key));
    Bytes other_object = ReadBytes(tier->ObjectPath(other));
    object.resize(n);
    other_object.resize(n);
    c.apply(object, other_object);
    WriteBytes(tier->ObjectPath(key), FileOf(object));

    ExpectEditedObjectRefused(*tier, key, object, c, tier->ObjectPath(key));
    EXPECT_FALSE(fs::exists(tier->ObjectPath(key)));
    EXPECT_FALSE(tier->Exists({&key, 1})[0]);
    const TierStats st = tier->Stats();
    EXPECT_EQ(st.objects, 1u);
    // The neighbour still reads.
    EXPECT_TRUE(tier->Get({&other, 1})[0].has_value());
    ExpectDirectoryMatchesIndex(dir, *tier);
  }
}

// A file that ends before the object the index knows (cut behind the
// tier's back) fails its key and is dropped as damaged; a file deleted
// behind its back fails its key and is counted as an error, as Get does.
TEST_P(DiskTierTest, RangesOfFilesChangedBehindTheTiersBackFailTheirKey) {
  const std::string dir = testing::TempDir("disk_ranges_cut");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  const BlockKey cut = KeyOf(1), gone = KeyOf(2), good = KeyOf(3);
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(tier->Put(KeyOf(id), MakeObject(id, 20)).ok());
  }
  tier->Flush();
  ASSERT_EQ(::truncate(tier->ObjectPath(cut).c_str(), off_t(kPage)), 0);
  ASSERT_EQ(::unlink(tier->ObjectPath(gone).c_str()), 0);
  const std::vector<BlockKey> keys = {cut, gone, good};
  Bytes b0(1000), b1(1000), b2(1000);
  const std::vector<Tier::RangeRead> ranges = {
      {0, kPage + 100, b0}, {1, 5, b1}, {2, kPage + 100, b2}};
  EXPECT_EQ(tier->ReadRanges(keys, ranges),
            (std::vector<bool>{false, false, true}));
  const Bytes object = MakeObject(3, 20);
  EXPECT_TRUE(std::equal(b2.begin(), b2.end(),
                         object.begin() + ptrdiff_t(kPage + 100)));
  const TierStats st = tier->Stats();
  EXPECT_EQ(st.corrupt_dropped, 1u);
  EXPECT_EQ(st.errors, 1u);
  EXPECT_EQ(st.objects, 1u);
  EXPECT_EQ(tier->Exists(keys), (std::vector<bool>{false, false, true}));
  ExpectDirectoryMatchesIndex(dir, *tier);
}

// While the writer is held, an accepted object is read in ranges from the
// queue (no file exists yet, nothing is read from the disk), and verifies.
TEST_P(DiskTierTest, RangesOfQueuedObjectsComeFromTheQueue) {
  const std::string dir = testing::TempDir("disk_ranges_queued");
  std::unique_ptr<DiskTier> tier = OpenTier(dir);
  tier->PauseWriterForTesting(true);
  ExpectQueuedObjectReadInRanges(*tier, [&] {
    EXPECT_TRUE(FilesEndingWith(dir, ".kvo").empty());
    tier->PauseWriterForTesting(false);
  });
}

// Put, Flush and Get of a few objects through `tier` (empty, or holding
// just these): true when all come back as put.
bool RoundTrips(DiskTier& tier) {
  std::vector<BlockKey> keys;
  for (uint64_t id = 0; id < 5; ++id) {
    keys.push_back(KeyOf(id));
    if (!tier.Put(keys.back(), MakeObject(id, 1 + int(id) * 5)).ok()) {
      return false;
    }
  }
  tier.Flush();
  const std::vector<std::optional<Bytes>> got = tier.Get(keys);
  for (uint64_t id = 0; id < 5; ++id) {
    if (!got[id] || Unsealed(*got[id]) != MakeObject(id, 1 + int(id) * 5)) {
      return false;
    }
  }
  return tier.Stats().objects == 5;
}

// kDirectUring opens exactly where kAuto picks direct I/O, and agrees with
// it on the mode.
TEST(DiskTierIoTest, DirectUringOpensWhereAutoPicksIt) {
  const std::string dir = testing::TempDir("disk_io_modes");
  std::string auto_mode;
  {
    std::unique_ptr<DiskTier> tier = OpenTierWith(Options(dir, DiskIo::kAuto));
    auto_mode = tier->io_mode();
    EXPECT_TRUE(RoundTrips(*tier));
  }
  RecordProperty("auto_io_mode", auto_mode);
  Result<std::unique_ptr<DiskTier>> direct =
      DiskTier::Open(Options(dir, DiskIo::kDirectUring));
  if (auto_mode == "direct+io_uring") {
    ASSERT_TRUE(direct.ok()) << direct.status().ToString();
    EXPECT_EQ((*direct)->io_mode(), "direct+io_uring");
    // It reads what the kAuto tier wrote.
    EXPECT_EQ((*direct)->Stats().objects, 5u);
    EXPECT_TRUE(RoundTrips(**direct));
  } else {
    EXPECT_EQ(auto_mode, "buffered");
    ASSERT_FALSE(direct.ok());
    EXPECT_EQ(direct.status().code(), StatusCode::kNotSupported);
  }
}

// Installs a seccomp filter in this process that refuses io_uring_setup
// (EPERM, as container runtimes do) or every open with O_DIRECT (EINVAL, as
// file systems without direct I/O do). False when it cannot be installed.
bool RefuseInThisProcess(bool uring, bool direct) {
  std::vector<sock_filter> f;
  f.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
  if (uring) {
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1));
    f.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
  }
  if (direct) {
    // openat(dir_fd, path, flags, mode): the low half of flags, which is
    // where a little-endian machine keeps it.
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 3));
    f.push_back(
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[2])));
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, O_DIRECT, 0, 1));
    f.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL));
  }
  f.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  const sock_fprog prog = {uint16_t(f.size()), f.data()};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

// Where the kernel refuses io_uring, or the file system O_DIRECT, kAuto
// falls back to buffered I/O and works, and kDirectUring refuses to open
// with NotSupported saying why. Each case runs in a child process that
// installs the refusal.
TEST(DiskTierIoTest, AutoFallsBackToBufferedWhenRefused) {
  struct Case {
    std::string what;
    bool uring, direct;
    std::string reason;
  };
  const Case cases[] = {{"io_uring refused", true, false, "io_uring"},
                        {"O_DIRECT refused", false, true, "O_DIRECT"},
                        {"both refused", true, true, "io_uring"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string dir = testing::TempDir("disk_io_refused");
    const int rc = RunInChild([&] {
      if (!RefuseInThisProcess(c.uring, c.direct)) return 10;
      {
        Result<std::unique_ptr<DiskTier>> tier =
            DiskTier::Open(Options(dir, DiskIo::kAuto));
        if (!tier.ok()) return 11;
        if ((*tier)->io_mode() != "buffered") return 12;
        if (!RoundTrips(**tier)) return 13;
      }
      Result<std::unique_ptr<DiskTier>> direct =
          DiskTier::Open(Options(dir, DiskIo::kDirectUring));
      if (direct.ok()) return 14;
      if (direct.status().code() != StatusCode::kNotSupported) return 15;
      const std::string& m = direct.status().message();
      if (m.find(dir) == std::string::npos) return 16;
      if (m.find(c.reason) == std::string::npos) return 17;
      return 0;
    });
    EXPECT_EQ(rc, 0);
  }
}

// On tmpfs, kAuto works and picks direct I/O exactly where this kernel
// takes O_DIRECT on tmpfs (kernels before 6.6 refuse it with EINVAL, later
// ones accept it) and io_uring.
TEST(DiskTierIoTest, AutoOnTmpfsUsesWhatTheKernelAllows) {
  if (!fs::is_directory("/dev/shm")) GTEST_SKIP() << "no /dev/shm";
  const std::string dir =
      "/dev/shm/kvstash_test_disk_tmpfs_" + std::to_string(::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string probe = dir + "/probe";
  const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_DIRECT, 0644);
  const bool tmpfs_direct = fd >= 0;
  if (fd >= 0) ::close(fd);
  fs::remove(probe);
  const bool uring = IoRing::Create(1).ok();
  {
    std::unique_ptr<DiskTier> tier = OpenTierWith(Options(dir, DiskIo::kAuto));
    EXPECT_EQ(tier->io_mode(),
              tmpfs_direct && uring ? "direct+io_uring" : "buffered");
    EXPECT_TRUE(RoundTrips(*tier));
    RecordProperty("tmpfs_io_mode", std::string(tier->io_mode()));
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kvstash::store
