#include "store/tier.h"

#include "base/check.h"

namespace kvstash::store {

std::vector<std::optional<std::vector<uint8_t>>> Tier::Get(
    std::span<const BlockKey> keys) {
  std::vector<std::optional<std::vector<uint8_t>>> out(keys.size());
  Visit(keys, [&](size_t i, std::span<const uint8_t> object) {
    out[i].emplace(object.begin(), object.end());
  });
  return out;
}

std::vector<bool> Tier::ReadRanges(std::span<const BlockKey> /*keys*/,
                                   std::span<const RangeRead> /*ranges*/) {
  KV_CHECK_MSG(false, "this tier does not read ranges");
  return {};
}

Status Tier::VerifyGathered(const BlockKey& /*key*/,
                            std::span<const uint8_t> /*header*/,
                            std::span<const std::span<const uint8_t>>) {
  KV_CHECK_MSG(false, "this tier does not read ranges");
  return Status::Internal("unreachable");
}

}  // namespace kvstash::store
