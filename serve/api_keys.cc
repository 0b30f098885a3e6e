#include "serve/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/file.h"

namespace kvstash {
namespace {

constexpr size_t kMinKeyBytes = 16;
constexpr size_t kMaxTenantBytes = 64;

std::array<uint8_t, 32> Digest(std::string_view key) {
  std::array<uint8_t, 32> d;
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(),
         d.data());
  return d;
}

bool ValidKey(std::string_view key) {
  return key.size() >= kMinKeyBytes &&
         std::all_of(key.begin(), key.end(),
                     [](char c) { return c > ' ' && c < 127; });
}

bool ValidTenant(std::string_view tenant) {
  return !tenant.empty() && tenant.size() <= kMaxTenantBytes &&
         std::all_of(tenant.begin(), tenant.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
         });
}

}  // namespace

Status ApiKeys::Add(std::string_view key, std::string_view tenant, bool admin,
                    const std::string& where) {
  if (!ValidKey(key)) {
    return Status::InvalidArgument(
        where + ": a key must be at least " + std::to_string(kMinKeyBytes) +
        " printable ASCII characters without spaces");
  }
  if (!ValidTenant(tenant)) {
    return Status::InvalidArgument(where + ": tenant '" + std::string(tenant) +
                                   "' must be 1 to 64 of [A-Za-z0-9._-]");
  }
  Entry e{Digest(key), {std::string(tenant), admin}};
  for (const Entry& other : entries_) {
    if (other.digest == e.digest) {
      return Status::InvalidArgument(where + ": the key is used twice");
    }
  }
  entries_.push_back(std::move(e));
  return Status::OK();
}

Result<ApiKeys> ApiKeys::Parse(std::string_view text) {
  ApiKeys keys;
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && text[first] == '[') {
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_array()) {
      return Status::InvalidArgument("api keys: not a valid JSON array");
    }
    for (size_t i = 0; i < j.size(); ++i) {
      const std::string where = "api keys: entry " + std::to_string(i);
      const nlohmann::json& e = j[i];
      if (!e.is_object() || !e.contains("key") || !e["key"].is_string() ||
          !e.contains("tenant") || !e["tenant"].is_string() ||
          (e.contains("admin") && !e["admin"].is_boolean())) {
        return Status::InvalidArgument(
            where +
            ": needs \"key\" and \"tenant\" strings (and an optional "
            "\"admin\" boolean)");
      }
      KV_RETURN_IF_ERROR(keys.Add(e["key"].get<std::string>(),
                                  e["tenant"].get<std::string>(),
                                  e.value("admin", false), where));
    }
    return keys;
  }
  std::istringstream lines{std::string(text)};
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    std::istringstream fields(line);
    std::string key, tenant, role, extra;
    if (!(fields >> key) || key[0] == '#') continue;
    fields >> tenant >> role >> extra;
    const std::string where = "api keys: line " + std::to_string(number);
    if (!role.empty() && role != "admin") {
      return Status::InvalidArgument(where + ": role '" + role +
                                     "' is not 'admin'");
    }
    if (!extra.empty()) {
      return Status::InvalidArgument(where + ": expected KEY TENANT [admin]");
    }
    KV_RETURN_IF_ERROR(keys.Add(key, tenant, role == "admin", where));
  }
  return keys;
}

Result<ApiKeys> ApiKeys::Load(const std::string& path) {
  KV_ASSIGN_OR_RETURN(const std::string text, ReadSecretFile(path));
  Result<ApiKeys> keys = Parse(text);
  if (!keys.ok()) {
    return Status::InvalidArgument(path + ": " + keys.status().message());
  }
  if (keys->empty()) {
    return Status::InvalidArgument(path + ": holds no API key");
  }
  return keys;
}

Result<ApiKeys> ApiKeys::Single(std::string_view key) {
  ApiKeys keys;
  KV_RETURN_IF_ERROR(keys.Add(key, "default", /*admin=*/true, "api key"));
  return keys;
}

const Caller* ApiKeys::Find(std::string_view presented) const {
  const std::array<uint8_t, 32> d = Digest(presented);
  const Caller* found = nullptr;
  for (const Entry& e : entries_) {
    // Every entry is compared, whatever matched before.
    if (CRYPTO_memcmp(e.digest.data(), d.data(), d.size()) == 0) {
      found = &e.caller;
    }
  }
  return found;
}

std::string TenantSalt(const Caller& caller, std::string_view cache_salt) {
  if (caller.tenant.empty()) return std::string(cache_salt);
  return "tenant:" + std::to_string(caller.tenant.size()) + ":" +
         caller.tenant + "/" + std::string(cache_salt);
}

}  // namespace kvstash
