#include "store/disk_probe.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/testing/shared_data.h"

namespace kvstash::store {
namespace {

namespace fs = std::filesystem;

TEST(DiskProbeTest, MeasuresAnEightMebibyteFileAndRemovesIt) {
  const std::string dir = testing::TempDir("disk_probe");
  Result<DiskProbeResult> r = DirectSequentialReadProbe(dir, 8 << 20);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GT(r->bytes_per_second, 0.0);
  EXPECT_TRUE(fs::is_empty(dir));
  RecordProperty("bytes_per_second", std::to_string(r->bytes_per_second));
  RecordProperty("direct", r->direct ? "yes" : "no");
}

TEST(DiskProbeTest, RefusesNothingToReadAndAMissingDirectory) {
  const std::string dir = testing::TempDir("disk_probe_bad");
  EXPECT_EQ(DirectSequentialReadProbe(dir, 0).status().code(),
            StatusCode::kInvalidArgument);
  Result<DiskProbeResult> r =
      DirectSequentialReadProbe(dir + "/missing", 1 << 20);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kIOError);
  EXPECT_NE(r.status().message().find(dir + "/missing"), std::string::npos);
}

}  // namespace
}  // namespace kvstash::store
