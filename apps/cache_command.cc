// `kvstash cache stats|verify|clear|rekey --disk-cache DIR`: a disk KV
// cache inspected or emptied (store/disk_cache_admin.h).
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "apps/app_util.h"
#include "apps/commands.h"
#include "apps/tiers.h"
#include "store/disk_cache_admin.h"

namespace kvstash::apps {
namespace {

struct CacheCommandOptions {
  std::string action;  // stats, verify, clear or rekey
  std::string dir;
  std::string tier_key_file;  // verify: the servers' key (else the dir's)
  bool remove_bad = false;    // verify: delete the objects that fail
  bool json = false;
};

Json ReportJson(const store::DiskCacheReport& r) {
  Json namespaces = Json::array();
  for (const store::DiskCacheNamespace& n : r.namespaces) {
    namespaces.push_back({{"fingerprint", n.fingerprint},
                          {"objects", n.objects},
                          {"bytes", n.bytes},
                          {"tokens", n.tokens}});
  }
  Json bad = Json::array();
  for (const store::DiskCacheBadFile& b : r.bad) {
    bad.push_back({{"path", b.path}, {"reason", b.reason}});
  }
  return {{"dir", r.dir},
          {"objects", r.objects},
          {"bytes", r.bytes},
          {"temp_files", r.temp_files},
          {"temp_bytes", r.temp_bytes},
          {"namespaces", namespaces},
          {"verified", r.verified},
          {"authenticated", r.authenticated},
          {"forged", r.forged},
          {"bad", bad},
          {"removed_files", r.removed_files},
          {"removed_bytes", r.removed_bytes},
          {"key_removed", r.key_removed}};
}

void PrintReport(const store::DiskCacheReport& r) {
  std::printf("%s: %llu objects, %s", r.dir.c_str(),
              static_cast<unsigned long long>(r.objects),
              HumanBytes(r.bytes).c_str());
  if (r.temp_files > 0) {
    std::printf(", %llu temporary files (%s)",
                static_cast<unsigned long long>(r.temp_files),
                HumanBytes(r.temp_bytes).c_str());
  }
  std::printf("\n");
  for (const store::DiskCacheNamespace& n : r.namespaces) {
    std::printf(
        "  namespace %s: %llu objects, %llu tokens, %s\n",
        n.fingerprint.c_str(), static_cast<unsigned long long>(n.objects),
        static_cast<unsigned long long>(n.tokens), HumanBytes(n.bytes).c_str());
  }
  for (const store::DiskCacheBadFile& b : r.bad) {
    std::printf("  bad: %s: %s\n", b.path.c_str(), b.reason.c_str());
  }
  if (r.verified) {
    std::printf(
        "verified every object (%s): %zu bad, %llu of them forged\n",
        r.authenticated ? "MACs and checksums" : "checksums only: no tier key",
        r.bad.size(), static_cast<unsigned long long>(r.forged));
  }
  if (r.key_removed) {
    std::printf(
        "removed the directory's TIER_KEY: a new one is made at the "
        "next start without --tier-key-file\n");
  }
  if (r.removed_files > 0) {
    std::printf("removed %llu files (%s)\n",
                static_cast<unsigned long long>(r.removed_files),
                HumanBytes(r.removed_bytes).c_str());
  }
}

int RunCache(const CacheCommandOptions& options) {
  Result<std::optional<store::ObjectAuthenticator>> key =
      LoadTierKey(options.tier_key_file);
  if (!key.ok()) return Fail(key.status().message());
  const bool clear = options.action == "clear" || options.action == "rekey";
  Result<store::DiskCacheReport> report =
      clear ? store::ClearDiskCache(options.dir, options.action == "rekey")
            : store::ScanDiskCache(options.dir, options.action == "verify",
                                   options.remove_bad, *key);
  if (!report.ok()) return Fail(report.status().message());
  if (options.json) {
    PrintJson(ReportJson(*report));
  } else {
    PrintReport(*report);
  }
  // verify fails (exit 1) when bad objects remain.
  const bool bad_left = !report->bad.empty() &&
                        !(options.remove_bad && options.action == "verify");
  return options.action == "verify" && bad_left ? 1 : 0;
}

}  // namespace

Command RegisterCache(CLI::App& parent) {
  auto o = std::make_shared<CacheCommandOptions>();
  CLI::App* cmd = parent.add_subcommand(
      "cache",
      "inspect a disk KV cache: stats, verify (MACs and checksums), clear, "
      "rekey (clear, and drop the directory's own key)");
  cmd->add_option("action", o->action, "stats, verify, clear or rekey")
      ->required()
      ->check(CLI::IsMember({"stats", "verify", "clear", "rekey"}));
  cmd->add_option("--disk-cache", o->dir, "the cache directory")->required();
  cmd->add_flag("--remove-bad", o->remove_bad,
                "verify: delete the objects that fail");
  cmd->add_option("--tier-key-file", o->tier_key_file,
                  "verify: the key the servers use (else KVSTASH_TIER_KEY, "
                  "else the directory's TIER_KEY)");
  AddJsonFlag(cmd, &o->json);
  return {cmd, [o] { return RunCache(*o); }};
}

}  // namespace kvstash::apps
