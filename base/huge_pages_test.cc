#include "base/huge_pages.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace kvstash {
namespace {

TEST(HugePagesTest, MapsWholeAlignedZeroedHugePages) {
  for (size_t asked : {size_t{0}, size_t{1}, HugePages::kHugePageBytes,
                       HugePages::kHugePageBytes + 1}) {
    for (bool reserve : {true, false}) {
      Result<std::unique_ptr<HugePages>> pages = HugePages::Map(asked, reserve);
      ASSERT_TRUE(pages.ok()) << pages.status().ToString();
      const HugePages& p = **pages;
      EXPECT_GE(p.bytes(), std::max<size_t>(asked, 1));
      EXPECT_EQ(p.bytes() % HugePages::kHugePageBytes, 0u);
      EXPECT_LT(p.bytes(), asked + HugePages::kHugePageBytes + 1);
      EXPECT_EQ(
          reinterpret_cast<uintptr_t>(p.data()) % HugePages::kHugePageBytes,
          0u);
      EXPECT_EQ(p.data()[0], 0);
      EXPECT_EQ(p.data()[p.bytes() - 1], 0);
      p.data()[p.bytes() - 1] = 7;  // writable to its last byte
      Result<size_t> huge = p.HugePageBytes();
      ASSERT_TRUE(huge.ok()) << huge.status().ToString();
      EXPECT_LE(*huge, p.bytes());
    }
  }
}

TEST(HugePagesTest, ReadOnlyAfterMakeReadOnly) {
  Result<std::unique_ptr<HugePages>> pages = HugePages::Map(100);
  ASSERT_TRUE(pages.ok());
  (*pages)->data()[5] = 9;
  ASSERT_TRUE((*pages)->MakeReadOnly().ok());
  EXPECT_EQ((*pages)->data()[5], 9);
  volatile uint8_t* const data = (*pages)->data();
  EXPECT_DEATH(data[5] = 1, "");
}

}  // namespace
}  // namespace kvstash
