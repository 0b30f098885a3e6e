#include "serve/api_keys.h"

#include <gtest/gtest.h>

namespace kvstash {
namespace {

TEST(ApiKeysTest, LinesAndJsonNameTenantsAndRoles) {
  for (const char* text :
       {"# tenants\n"
        "alice-key-0123456789 alice\n"
        "\n"
        "  root-key-0123456789\tops admin\n",
        R"([{"key": "alice-key-0123456789", "tenant": "alice"},
            {"key": "root-key-0123456789", "tenant": "ops", "admin": true}])"}) {
    Result<ApiKeys> keys = ApiKeys::Parse(text);
    ASSERT_TRUE(keys.ok()) << keys.status().ToString();
    EXPECT_EQ(keys->size(), 2u);
    const Caller* alice = keys->Find("alice-key-0123456789");
    ASSERT_NE(alice, nullptr);
    EXPECT_EQ(alice->tenant, "alice");
    EXPECT_FALSE(alice->admin);
    const Caller* ops = keys->Find("root-key-0123456789");
    ASSERT_NE(ops, nullptr);
    EXPECT_TRUE(ops->admin);
    EXPECT_EQ(keys->Find("alice-key-012345678"), nullptr);  // a prefix
    EXPECT_EQ(keys->Find("alice-key-01234567890"), nullptr);
    EXPECT_EQ(keys->Find(""), nullptr);
  }
}

TEST(ApiKeysTest, BadEntriesNameTheirLine) {
  const struct {
    const char* text;
    const char* says;
  } cases[] = {
      {"short alice\n", "line 1"},
      {"ok-key-0123456789 alice\nok-key-0123456789 bob\n", "used twice"},
      {"\nok-key-0123456789 al/ice\n", "line 2"},
      {"ok-key-0123456789\n", "tenant"},
      {"ok-key-0123456789 alice root\n", "role 'root'"},
      {"ok-key-0123456789 alice admin extra\n", "KEY TENANT"},
      {R"([{"key": "ok-key-0123456789"}])", "entry 0"},
      {"[1, 2", "JSON"},
  };
  for (const auto& c : cases) {
    Result<ApiKeys> keys = ApiKeys::Parse(c.text);
    ASSERT_FALSE(keys.ok()) << c.text;
    EXPECT_NE(keys.status().message().find(c.says), std::string::npos)
        << keys.status().message();
  }
  EXPECT_FALSE(ApiKeys::Load("/nonexistent/keys").ok());
  EXPECT_FALSE(ApiKeys::Single("short").ok());
  Result<ApiKeys> one = ApiKeys::Single("single-key-0123456789");
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(one->Find("single-key-0123456789")->admin);
}

// A client's salt narrows its tenant's namespace and never reaches another
// tenant's: every salt a tenant can send yields a different string.
TEST(ApiKeysTest, TenantSaltsNeverMeet) {
  const Caller a{"a", false}, ab{"ab", false}, none;
  EXPECT_EQ(TenantSalt(none, "x"), "x");  // no keys: as before tenants
  EXPECT_NE(TenantSalt(a, "b/x"), TenantSalt(ab, "x"));
  EXPECT_NE(TenantSalt(a, ""), TenantSalt(ab, ""));
  EXPECT_NE(TenantSalt(a, ""), TenantSalt(none, ""));
  EXPECT_NE(TenantSalt(a, "x"), TenantSalt(a, "y"));
  // The form is fixed: "tenant:<length>:<name>/<salt>".
  EXPECT_EQ(TenantSalt(ab, "s"), "tenant:2:ab/s");
}

}  // namespace
}  // namespace kvstash
