#include "apps/tiers.h"

#include <cmath>
#include <cstdlib>

#include "apps/app_util.h"
#include "base/file.h"
#include "store/redis_tier.h"

namespace kvstash::apps {
namespace {

Result<kvcache::TierWritePolicy> ParseWritePolicy(const std::string& flag,
                                                  const std::string& value) {
  for (const auto policy : {kvcache::TierWritePolicy::kOnCommit,
                            kvcache::TierWritePolicy::kOnSecondUse}) {
    if (value == kvcache::TierWritePolicyName(policy)) return policy;
  }
  return Status::InvalidArgument(flag + " must be commit or second-use, not '" +
                                 value + "'");
}

// The secret in file `path` given by `flag` (ReadSecretFile's rules: a
// private file, trailing whitespace stripped); InvalidArgument naming the
// flag and the path otherwise.
Result<std::string> ReadFlagSecret(const std::string& flag,
                                   const std::string& path) {
  Result<std::string> secret = ReadSecretFile(path);
  if (!secret.ok()) {
    return Status::InvalidArgument(flag + ": " + secret.status().message());
  }
  return secret;
}

// The key of `secret`, or InvalidArgument naming where it came from.
Result<std::optional<store::ObjectAuthenticator>> KeyFrom(
    const std::string& source, const std::string& secret) {
  Result<store::ObjectAuthenticator> key =
      store::ObjectAuthenticator::FromSecret(secret);
  if (!key.ok()) {
    return Status::InvalidArgument(source + ": " + key.status().message());
  }
  return std::optional<store::ObjectAuthenticator>(*key);
}

}  // namespace

Result<std::optional<store::ObjectAuthenticator>> LoadTierKey(
    const std::string& key_file) {
  if (!key_file.empty()) {
    KV_ASSIGN_OR_RETURN(const std::string secret,
                        ReadFlagSecret("--tier-key-file", key_file));
    return KeyFrom("--tier-key-file '" + key_file + "'", secret);
  }
  const char* env = std::getenv("KVSTASH_TIER_KEY");
  if (env != nullptr && *env != '\0') {
    return KeyFrom("KVSTASH_TIER_KEY", env);
  }
  return std::optional<store::ObjectAuthenticator>();
}

Result<store::DiskTierOptions::DiskIo> ParseDiskIo(const std::string& value) {
  if (value == "auto") return store::DiskTierOptions::DiskIo::kAuto;
  if (value == "direct") return store::DiskTierOptions::DiskIo::kDirectUring;
  if (value == "buffered") return store::DiskTierOptions::DiskIo::kBuffered;
  return Status::InvalidArgument(
      "--disk-io must be auto, direct or buffered, not '" + value + "'");
}

Result<store::Codec> ParseTierCodec(const std::string& value) {
  Result<store::Codec> codec = store::ParseCodec(value);
  if (!codec.ok()) return codec.status().WithPrefix("--tier-codec");
  return codec;
}

namespace {

// "chunks of N blocks", or of the automatic size.
std::string ChunkWords(size_t chunk_blocks) {
  return chunk_blocks == 0
             ? std::string("chunks of up to 512 KiB")
             : "chunks of " + std::to_string(chunk_blocks) + " blocks";
}

}  // namespace

Result<size_t> ParseTierChunkBlocks(int value) {
  if (value < 0 || size_t(value) > kvcache::kMaxChunkBlocks) {
    return Status::InvalidArgument("--tier-chunk-blocks must be in [0, " +
                                   std::to_string(kvcache::kMaxChunkBlocks) +
                                   "], not " + std::to_string(value));
  }
  return size_t(value);
}

Result<OpenedTiers> OpenTiers(const TierFlags& flags) {
  OpenedTiers out;
  KV_ASSIGN_OR_RETURN(out.codec, ParseTierCodec(flags.tier_codec));
  KV_ASSIGN_OR_RETURN(out.chunk_blocks,
                      ParseTierChunkBlocks(flags.tier_chunk_blocks));
  if (flags.disk_cache.empty() && flags.redis.empty()) return out;
  KV_ASSIGN_OR_RETURN(const std::optional<store::ObjectAuthenticator> key,
                      LoadTierKey(flags.tier_key_file));
  if (!flags.disk_cache.empty()) {
    if (!(flags.disk_cache_gb > 0) || !std::isfinite(flags.disk_cache_gb)) {
      return Status::InvalidArgument("--disk-cache-gb must be > 0");
    }
    KV_ASSIGN_OR_RETURN(kvcache::TierWritePolicy write,
                        ParseWritePolicy("--disk-write", flags.disk_write));
    store::DiskTierOptions o;
    o.dir = flags.disk_cache;
    o.capacity_bytes = uint64_t(flags.disk_cache_gb * double(1ull << 30));
    KV_ASSIGN_OR_RETURN(o.io, ParseDiskIo(flags.disk_io));
    o.authenticator = key;  // none: the directory's own
    KV_ASSIGN_OR_RETURN(std::unique_ptr<store::DiskTier> disk,
                        store::DiskTier::Open(o));
    out.descriptions.push_back(
        "disk " + o.dir + ": " + HumanBytes(o.capacity_bytes) + ", " +
        std::string(disk->io_mode()) + ", write on " +
        kvcache::TierWritePolicyName(write) +
        (key ? ", fleet key (" : ", its own key (") +
        std::string(store::MacAlgorithmName(disk->seal_with())) + "), codec " +
        store::CodecName(out.codec) + ", " + ChunkWords(out.chunk_blocks));
    out.options.push_back({disk.get(), write});
    out.tiers.push_back(std::move(disk));
  }
  if (!flags.redis.empty()) {
    if (flags.redis_ttl < 0) {
      return Status::InvalidArgument("--redis-ttl must be >= 0");
    }
    KV_ASSIGN_OR_RETURN(kvcache::TierWritePolicy write,
                        ParseWritePolicy("--redis-write", flags.redis_write));
    store::RedisTierOptions o;
    o.url = flags.redis;
    o.key_prefix = flags.redis_prefix;
    o.ttl_seconds = flags.redis_ttl;
    if (key) o.authenticator = *key;
    o.insecure = flags.redis_insecure;
    if (!flags.redis_password_file.empty()) {
      KV_ASSIGN_OR_RETURN(
          o.password,
          ReadFlagSecret("--redis-password-file", flags.redis_password_file));
    }
    KV_ASSIGN_OR_RETURN(std::unique_ptr<store::RedisTier> redis,
                        store::RedisTier::Open(o));
    out.descriptions.push_back(
        "redis " + redis->Describe() + ", keys '" + o.key_prefix + "...', " +
        (o.ttl_seconds > 0 ? "TTL " + std::to_string(o.ttl_seconds) + " s"
                           : std::string("no TTL")) +
        ", write on " + kvcache::TierWritePolicyName(write) +
        (key ? ", fleet key (" +
                   std::string(store::MacAlgorithmName(key->seal_with())) + ")"
             : std::string(", INSECURE (no tier key)")) +
        ", codec " + store::CodecName(out.codec) + ", " +
        ChunkWords(out.chunk_blocks));
    out.options.push_back({redis.get(), write});
    out.tiers.push_back(std::move(redis));
  }
  return out;
}

}  // namespace kvstash::apps
