#include "base/file.h"

#include <gtest/gtest.h>

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

TEST(FileTest, EmptyFileMapsToEmpty) {
  const std::string path = testing::TempDir("file_empty") + "/e";
  ASSERT_TRUE(WriteFileAtomic(path, "").ok());
  auto mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok());
  EXPECT_EQ((*mapped)->size(), 0u);
}

}  // namespace
}  // namespace kvstash
