// Opening the KV tiers a command's flags name (--disk-cache, --redis), for
// the serving stack, the tier benchmark and anything else that builds a
// KvManager with tiers.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "apps/flags.h"
#include "base/status.h"
#include "kvcache/kv_manager.h"
#include "store/disk_tier.h"
#include "store/kv_codec.h"
#include "store/object_mac.h"
#include "store/tier.h"

namespace kvstash::apps {

// The tiers, owned, and how the KvManager uses them (same order: disk, then
// Redis). The Tier objects must outlive the KvManager built from `options`.
struct OpenedTiers {
  std::vector<std::unique_ptr<store::Tier>> tiers;
  std::vector<kvcache::TierOptions> options;
  // One line per tier for the start-up log ("disk /var/cache/kv: 16.00 GiB,
  // direct+io_uring, write on commit").
  std::vector<std::string> descriptions;
  store::Codec codec = store::Codec::kRaw;  // --tier-codec
  size_t chunk_blocks = 0;                  // --tier-chunk-blocks, 0: auto
};

// --disk-io: auto, direct or buffered.
Result<store::DiskTierOptions::DiskIo> ParseDiskIo(const std::string& value);

// The fleet's tier key: the secret of `key_file` (--tier-key-file), else
// of KVSTASH_TIER_KEY in the environment, else nullopt. InvalidArgument
// naming the flag or the variable when the secret is unreadable or short.
Result<std::optional<store::ObjectAuthenticator>> LoadTierKey(
    const std::string& key_file);

// --tier-codec: none, zstd or cachegen; InvalidArgument naming the flag.
Result<store::Codec> ParseTierCodec(const std::string& value);
// --tier-chunk-blocks: 0 (automatic) to kvcache::kMaxChunkBlocks;
// InvalidArgument naming the flag.
Result<size_t> ParseTierChunkBlocks(int value);

// InvalidArgument naming the flag for a bad value; the tier's own error when
// it cannot open (a locked or unwritable disk cache). A Redis that is down
// is not an error: the tier retries in the background.
Result<OpenedTiers> OpenTiers(const TierFlags& flags);

}  // namespace kvstash::apps
