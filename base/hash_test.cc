#include "base/hash.h"

#include <gtest/gtest.h>

#include <cstring>

namespace kvstash {
namespace {

TEST(HashTest, StreamingEqualsOneShot) {
  const char text[] = "the quick brown fox jumps over the lazy dog";
  Hasher128 h;
  h.Add(text, 10).Add(text + 10, std::strlen(text) - 10);
  EXPECT_EQ(h.Finish(), HashBytes(text, std::strlen(text)));
}

TEST(HashTest, IntegersAreLittleEndian) {
  const uint8_t bytes[12] = {0x04, 0x03, 0x02, 0x01, 0x0c, 0x0b,
                             0x0a, 0x09, 0x08, 0x07, 0x06, 0x05};
  Hasher128 h;
  h.AddU32(0x01020304u).AddU64(0x05060708090a0b0cull);
  EXPECT_EQ(h.Finish(), HashBytes(bytes, sizeof(bytes)));
}

// XXH3-128 of the empty input is a published constant: pins the algorithm
// and the Hex() order (hi first).
TEST(HashTest, KnownValueAndHex) {
  const Hash128 empty = HashBytes(nullptr, 0);
  EXPECT_EQ(empty.Hex(), "99aa06d3014798d86001c324468d497f");
  EXPECT_NE(HashBytes("a", 1), empty);
}

}  // namespace
}  // namespace kvstash
