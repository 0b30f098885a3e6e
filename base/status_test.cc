#include "base/status.h"

#include <gtest/gtest.h>

namespace kvstash {
namespace {

Result<int> ParsePositive(int x) {
  if (x <= 0)
    return Status::InvalidArgument("not positive: " + std::to_string(x));
  return x;
}

Result<int> Doubled(int x) {
  KV_ASSIGN_OR_RETURN(int v, ParsePositive(x));
  return 2 * v;
}

Status Check(int x) {
  KV_RETURN_IF_ERROR(Doubled(x).status());
  return Status::OK();
}

TEST(StatusTest, OkAndErrors) {
  EXPECT_TRUE(Status::OK().ok());
  Status s = Status::Corruption("bad header");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_EQ(s.ToString(), "Corruption: bad header");
  EXPECT_EQ(s.WithPrefix("gguf").message(), "gguf: bad header");
}

TEST(StatusTest, ResultPropagates) {
  EXPECT_EQ(Doubled(4).value(), 8);
  Result<int> r = Doubled(-1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "not positive: -1");
  EXPECT_TRUE(Check(3).ok());
  EXPECT_EQ(Check(0).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstash
