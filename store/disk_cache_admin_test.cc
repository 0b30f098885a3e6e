#include "store/disk_cache_admin.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "store/disk_tier.h"
#include "store/object_format.h"
#include "store/object_testing.h"
#include "store/tier_test_util.h"
#include "tests/testing/shared_data.h"

namespace kvstash::store {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

const Hash128 kNamespaceA = HashBytes("namespace a", 11);
const Hash128 kNamespaceB = HashBytes("namespace b", 11);

// Object `id` of namespace `fingerprint`: `blocks` blocks of 4 tokens.
Bytes MakeObject(const Hash128& fingerprint, uint64_t id, int blocks) {
  return store::MakeObject(id, blocks, fingerprint, fingerprint);
}

uint64_t FileBytes(const Bytes& object) {
  return (object.size() + 4095) / 4096 * 4096;
}

Bytes ReadBytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& p, const Bytes& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

// A cache directory written by a DiskTier: objects 0..a-1 of namespace A
// (object i has i + 1 blocks) and a..a+b-1 of namespace B (one block each).
struct TestCache {
  std::string dir;
  std::vector<std::string> paths;  // of object i
  uint64_t bytes = 0;              // of all object files
};

TestCache MakeCache(const std::string& name, int a, int b) {
  TestCache c{testing::TempDir(name), {}, 0};
  Result<std::unique_ptr<DiskTier>> tier = DiskTier::Open({.dir = c.dir});
  KV_CHECK(tier.ok());
  for (int i = 0; i < a + b; ++i) {
    const Bytes object = i < a ? MakeObject(kNamespaceA, i, i + 1)
                               : MakeObject(kNamespaceB, i, 1);
    KV_CHECK((*tier)->Put(KeyOf(i), object).ok());
    c.paths.push_back((*tier)->ObjectPath(KeyOf(i)));
    c.bytes += FileBytes(object);
  }
  return c;  // the tier's destructor stores everything
}

std::vector<std::string> BadPaths(const DiskCacheReport& r) {
  std::vector<std::string> out;
  for (const DiskCacheBadFile& b : r.bad) out.push_back(b.path);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(DiskCacheAdminTest, ScanCountsObjectsTempFilesAndNamespaces) {
  const TestCache c = MakeCache("admin_scan", 5, 3);
  const std::string temp = c.paths[0] + ".tmp";
  WriteBytes(temp, Bytes(100, 1));
  WriteBytes(fs::path(c.paths[0]).parent_path() / "notes.txt", Bytes(7, 1));
  WriteBytes(c.dir + "/README", Bytes(9, 1));

  Result<DiskCacheReport> r = ScanDiskCache(c.dir, false, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->dir, c.dir);
  EXPECT_EQ(r->objects, 8u);
  EXPECT_EQ(r->bytes, c.bytes);
  EXPECT_EQ(r->temp_files, 1u);
  EXPECT_EQ(r->temp_bytes, 100u);
  EXPECT_FALSE(r->verified);
  EXPECT_TRUE(r->bad.empty());
  EXPECT_EQ(r->removed_files, 0u);
  ASSERT_EQ(r->namespaces.size(), 2u);
  const bool a_first = kNamespaceA.Hex() < kNamespaceB.Hex();
  const DiskCacheNamespace& a = r->namespaces[a_first ? 0 : 1];
  const DiskCacheNamespace& b = r->namespaces[a_first ? 1 : 0];
  EXPECT_EQ(a.fingerprint, kNamespaceA.Hex());
  EXPECT_EQ(a.objects, 5u);
  EXPECT_EQ(a.tokens, 4u * (1 + 2 + 3 + 4 + 5));
  EXPECT_EQ(b.fingerprint, kNamespaceB.Hex());
  EXPECT_EQ(b.objects, 3u);
  EXPECT_EQ(b.tokens, 12u);
  EXPECT_EQ(a.bytes + b.bytes, c.bytes);

  r = ScanDiskCache(c.dir, true, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->verified);
  EXPECT_TRUE(r->bad.empty());
  EXPECT_TRUE(fs::exists(temp));  // a scan deletes nothing it was not asked
}

// Damage only a full read sees (payload, padding) and damage the header
// shows (a truncated file, another key's object): a plain scan finds the
// latter, a verifying scan finds exactly all four, and remove_bad deletes
// exactly those.
TEST(DiskCacheAdminTest, VerifyFindsExactlyTheBadFilesAndRemovesThem) {
  const TestCache c = MakeCache("admin_verify", 6, 4);
  Bytes b = ReadBytes(c.paths[1]);
  b[200] ^= 4;
  WriteBytes(c.paths[1], b);
  b = ReadBytes(c.paths[2]);
  b[b.size() - 1] = 9;
  WriteBytes(c.paths[2], b);
  b = ReadBytes(c.paths[3]);
  b.resize(b.size() / 2);
  WriteBytes(c.paths[3], b);
  WriteBytes(c.paths[7], ReadBytes(c.paths[8]));

  std::vector<std::string> header_bad = {c.paths[3], c.paths[7]};
  std::vector<std::string> all_bad = {c.paths[1], c.paths[2], c.paths[3],
                                      c.paths[7]};
  std::sort(header_bad.begin(), header_bad.end());
  std::sort(all_bad.begin(), all_bad.end());

  Result<DiskCacheReport> r = ScanDiskCache(c.dir, false, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(BadPaths(*r), header_bad);
  EXPECT_EQ(r->objects, 10u);

  r = ScanDiskCache(c.dir, true, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(BadPaths(*r), all_bad);
  for (const DiskCacheBadFile& bad : r->bad) {
    const std::string expected = bad.path == c.paths[1]   ? "checksum"
                                 : bad.path == c.paths[2] ? "padding"
                                 : bad.path == c.paths[7] ? "key"
                                                          : "bytes";
    EXPECT_NE(bad.reason.find(expected), std::string::npos) << bad.reason;
  }
  uint64_t good = 0;
  for (const DiskCacheNamespace& ns : r->namespaces) good += ns.objects;
  EXPECT_EQ(good, 6u);
  for (const std::string& p : all_bad) EXPECT_TRUE(fs::exists(p));

  uint64_t bad_bytes = 0;
  for (const std::string& p : all_bad) bad_bytes += fs::file_size(p);
  r = ScanDiskCache(c.dir, true, true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(BadPaths(*r), all_bad);
  EXPECT_EQ(r->removed_files, 4u);
  EXPECT_EQ(r->removed_bytes, bad_bytes);
  for (size_t i = 0; i < c.paths.size(); ++i) {
    const bool was_bad =
        std::find(all_bad.begin(), all_bad.end(), c.paths[i]) != all_bad.end();
    EXPECT_EQ(fs::exists(c.paths[i]), !was_bad) << i;
  }

  r = ScanDiskCache(c.dir, true, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->bad.empty());
  EXPECT_EQ(r->objects, 6u);
  // A tier opened on the cleaned directory serves every object left.
  Result<std::unique_ptr<DiskTier>> tier = DiskTier::Open({.dir = c.dir});
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  EXPECT_EQ((*tier)->Stats().objects, 6u);
  const std::vector<BlockKey> keys = {KeyOf(0), KeyOf(4), KeyOf(5),
                                      KeyOf(6), KeyOf(8), KeyOf(9)};
  for (const auto& got : (*tier)->Get(keys)) EXPECT_TRUE(got.has_value());
  EXPECT_EQ((*tier)->Stats().corrupt_dropped, 0u);
}

// verify checks MACs under the key the servers use (given), else the
// directory's own; without any key, checksums only, and says so.
TEST(DiskCacheAdminTest, VerifyChecksMacsAndCountsForgedObjects) {
  const TestCache c = MakeCache("admin_mac", 3, 1);
  Bytes object = ReadBytes(c.paths[0]);
  object.resize(MakeObject(kNamespaceA, 0, 1).size());
  object[kObjectHeaderBytes + 1] ^= 1;
  RecomputeChecksum(object);
  object.resize(FileBytes(object), 0);
  WriteBytes(c.paths[0], object);

  Result<DiskCacheReport> r = ScanDiskCache(c.dir, true, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->authenticated);
  EXPECT_EQ(r->forged, 1u);
  EXPECT_EQ(BadPaths(*r), std::vector<std::string>{c.paths[0]});
  EXPECT_NE(r->bad[0].reason.find("MAC"), std::string::npos)
      << r->bad[0].reason;

  const ObjectAuthenticator other =
      ObjectAuthenticator::FromSecret(std::string(32, 'o')).value();
  r = ScanDiskCache(c.dir, true, false, other);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->forged, 4u);  // every object: sealed under the dir's key

  fs::remove(c.dir + "/TIER_KEY");
  r = ScanDiskCache(c.dir, true, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->authenticated);
  EXPECT_TRUE(r->bad.empty());  // intact, as far as checksums tell
}

TEST(DiskCacheAdminTest, RekeyClearsObjectsAndTheDirectorysKey) {
  const TestCache c = MakeCache("admin_rekey", 2, 0);
  const Bytes old_key = ReadBytes(c.dir + "/TIER_KEY");
  Result<DiskCacheReport> r = ClearDiskCache(c.dir, true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->key_removed);
  EXPECT_EQ(r->removed_files, 2u);
  EXPECT_FALSE(fs::exists(c.dir + "/TIER_KEY"));
  Result<std::unique_ptr<DiskTier>> tier = DiskTier::Open({.dir = c.dir});
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  EXPECT_NE(ReadBytes(c.dir + "/TIER_KEY"), old_key);
}

TEST(DiskCacheAdminTest, ClearRemovesObjectsAndTempFilesOnly) {
  const TestCache c = MakeCache("admin_clear", 4, 2);
  const std::string temp = c.paths[3] + ".tmp";
  const std::string foreign = fs::path(c.paths[3]).parent_path() / "keep.me";
  WriteBytes(temp, Bytes(10, 1));
  WriteBytes(foreign, Bytes(10, 1));
  Result<DiskCacheReport> r = ClearDiskCache(c.dir);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->objects, 6u);
  EXPECT_EQ(r->bytes, c.bytes);
  EXPECT_EQ(r->temp_files, 1u);
  EXPECT_EQ(r->removed_files, 7u);
  EXPECT_EQ(r->removed_bytes, c.bytes + 10);
  for (const std::string& p : c.paths) EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_TRUE(fs::exists(foreign));
  EXPECT_TRUE(fs::exists(c.dir + "/LOCK"));
  r = ScanDiskCache(c.dir, true, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->objects, 0u);
  EXPECT_EQ(r->temp_files, 0u);
  EXPECT_TRUE(r->namespaces.empty());
}

TEST(DiskCacheAdminTest, LockedDirectoryIsRefused) {
  const TestCache c = MakeCache("admin_locked", 2, 0);
  Result<std::unique_ptr<DiskTier>> tier = DiskTier::Open({.dir = c.dir});
  ASSERT_TRUE(tier.ok()) << tier.status().ToString();
  const std::string pid = "pid " + std::to_string(::getpid());
  for (const Result<DiskCacheReport>& r :
       {ScanDiskCache(c.dir, true, true), ClearDiskCache(c.dir)}) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(r.status().message().find(pid), std::string::npos)
        << r.status().message();
  }
  for (const std::string& p : c.paths) EXPECT_TRUE(fs::exists(p));
  tier->reset();
  EXPECT_TRUE(ScanDiskCache(c.dir, false, false).ok());
}

TEST(DiskCacheAdminTest, MissingDirectoryIsNotFound) {
  const std::string dir = testing::TempDir("admin_missing") + "/nothing";
  EXPECT_EQ(ScanDiskCache(dir, false, false).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(ClearDiskCache(dir).status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(dir));
}

}  // namespace
}  // namespace kvstash::store
