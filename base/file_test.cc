#include "base/file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "tests/testing/shared_data.h"

namespace kvstash {
namespace {

TEST(FileTest, WriteAtomicThenMapAndRead) {
  const std::string dir = testing::TempDir("file");
  const std::string path = dir + "/x.bin";
  ASSERT_TRUE(WriteFileAtomic(path, "hello world").ok());
  auto mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status().ToString();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*mapped)->data()),
                        (*mapped)->size()),
            "hello world");
  EXPECT_EQ(ReadFile(path).value(), "hello world");
}

TEST(FileTest, MissingFileIsIOError) {
  auto r = MappedFile::Open("/nonexistent/kvstash/file");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_NE(r.status().message().find("/nonexistent/kvstash/file"),
            std::string::npos);
}

TEST(FileTest, SecretFilesMustBePrivate) {
  const std::string dir = testing::TempDir("secret");
  const std::string path = dir + "/key";
  ASSERT_TRUE(WriteFileAtomic(path, "s3cret value \n").ok());
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  Result<std::string> open = ReadSecretFile(path);
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(open.status().message().find("chmod 600 " + path),
            std::string::npos);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(ReadSecretFile(path).value(), "s3cret value");
  ASSERT_TRUE(WriteFileAtomic(path, " \n").ok());
  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);
  EXPECT_EQ(ReadSecretFile(path).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ReadSecretFile(dir + "/missing").ok());
}

TEST(FileTest, EmptyFileMapsToEmpty) {
  const std::string path = testing::TempDir("file_empty") + "/e";
  ASSERT_TRUE(WriteFileAtomic(path, "").ok());
  for (FileMemory memory : {FileMemory::kMapped, FileMemory::kHugePages}) {
    auto mapped = MappedFile::Open(path, memory);
    ASSERT_TRUE(mapped.ok());
    EXPECT_EQ((*mapped)->size(), 0u);
    EXPECT_EQ((*mapped)->HugePageBytes().value(), 0u);
  }
}

// The setting in brackets of a transparent_hugepage file ("" when absent).
std::string ThpSetting(const std::string& name) {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/" + name);
  std::string line;
  std::getline(in, line);
  const size_t open = line.find('['), close = line.find(']');
  if (open == std::string::npos || close < open) return "";
  return line.substr(open + 1, close - open - 1);
}

// Release gives back only the whole pages inside the range: a mapped file
// reads its bytes again, a copy in huge pages reads zeros there, and the
// bytes around the range are kept in both.
TEST(FileTest, ReleaseGivesBackWholePagesInsideTheRange) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::string contents(8 * page, '\0');
  for (size_t i = 0; i < contents.size(); ++i) {
    contents[i] = static_cast<char>(1 + i % 251);
  }
  const std::string path = testing::TempDir("file_release") + "/w.bin";
  ASSERT_TRUE(WriteFileAtomic(path, contents).ok());
  // From mid page 1 to mid page 6: pages 2-5 are wholly inside.
  const size_t offset = page + page / 2, size = 5 * page;
  for (FileMemory memory : {FileMemory::kMapped, FileMemory::kHugePages}) {
    auto file = MappedFile::Open(path, memory);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    (*file)->Release(offset, size);
    const uint8_t* data = (*file)->data();
    for (size_t i = 0; i < contents.size(); ++i) {
      const bool released = i >= 2 * page && i < 6 * page;
      const uint8_t want = memory == FileMemory::kHugePages && released
                               ? 0
                               : static_cast<uint8_t>(contents[i]);
      ASSERT_EQ(data[i], want)
          << "byte " << i << (released ? " (released)" : "");
    }
  }
}

TEST(FileTest, HugePagesHoldTheFileReadOnlyInHugePages) {
  // 5 MiB and a bit: two whole huge pages and a partial third.
  std::string contents((size_t{5} << 20) + 12345, '\0');
  for (size_t i = 0; i < contents.size(); ++i) {
    contents[i] = static_cast<char>((i * 2654435761u) >> 13);
  }
  const std::string path = testing::TempDir("file_huge") + "/w.bin";
  ASSERT_TRUE(WriteFileAtomic(path, contents).ok());
  auto huge = MappedFile::Open(path, FileMemory::kHugePages);
  ASSERT_TRUE(huge.ok()) << huge.status().ToString();
  const MappedFile& file = **huge;
  EXPECT_EQ(file.memory(), FileMemory::kHugePages);
  ASSERT_EQ(file.size(), contents.size());
  EXPECT_EQ(std::memcmp(file.data(), contents.data(), contents.size()), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(file.data()) % (2u << 20), 0u);
  Result<size_t> huge_bytes = file.HugePageBytes();
  ASSERT_TRUE(huge_bytes.ok()) << huge_bytes.status().ToString();
  EXPECT_LE(*huge_bytes, size_t{6} << 20);
  // Asked of the kernel only where it hands huge pages to madvised memory
  // and compacts for them on a fault.
  const std::string enabled = ThpSetting("enabled");
  const std::string defrag = ThpSetting("defrag");
  if ((enabled == "always" || enabled == "madvise") &&
      (defrag == "always" || defrag == "madvise" ||
       defrag == "defer+madvise")) {
    EXPECT_GE(*huge_bytes, size_t{2} << 20)
        << "transparent_hugepage enabled=" << enabled << " defrag=" << defrag;
  }
  auto mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok());
  EXPECT_EQ((*mapped)->HugePageBytes().value(), 0u);
}

}  // namespace
}  // namespace kvstash
