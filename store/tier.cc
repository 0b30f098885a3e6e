#include "store/tier.h"

namespace kvstash::store {

std::vector<std::optional<std::vector<uint8_t>>> Tier::Get(
    std::span<const BlockKey> keys) {
  std::vector<std::optional<std::vector<uint8_t>>> out(keys.size());
  Visit(keys, [&](size_t i, std::span<const uint8_t> object) {
    out[i].emplace(object.begin(), object.end());
  });
  return out;
}

}  // namespace kvstash::store
