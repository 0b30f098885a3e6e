#include "base/file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

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
  auto mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok());
  EXPECT_EQ((*mapped)->size(), 0u);
}

}  // namespace
}  // namespace kvstash
