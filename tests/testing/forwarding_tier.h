// ForwardingTier: a store::Tier that hands every call to another tier, for
// tests that wrap a real tier to hold, gate or count its Gets (override Get
// and call ForwardingTier::Get).
#pragma once

#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "store/tier.h"

namespace kvstash::testing {

class ForwardingTier : public store::Tier {
 public:
  explicit ForwardingTier(store::Tier* inner) : inner_(inner) {}

  std::string_view name() const override { return inner_->name(); }
  Status Put(const store::BlockKey& key, std::vector<uint8_t> o) override {
    return inner_->Put(key, std::move(o));
  }
  std::vector<std::optional<std::vector<uint8_t>>> Get(
      std::span<const store::BlockKey> keys) override {
    return inner_->Get(keys);
  }
  std::vector<bool> Exists(std::span<const store::BlockKey> keys) override {
    return inner_->Exists(keys);
  }
  Status Erase(const store::BlockKey& key) override {
    return inner_->Erase(key);
  }
  void Flush() override { inner_->Flush(); }
  store::TierStats Stats() const override { return inner_->Stats(); }

 private:
  store::Tier* const inner_;
};

}  // namespace kvstash::testing
