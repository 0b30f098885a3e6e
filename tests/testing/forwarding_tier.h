// ForwardingTier: a store::Tier that hands every call to another tier, for
// tests that wrap a real tier to hold, gate or count its reads (override
// Visit or ReadRanges and call ForwardingTier's); HeldTier, one whose reads
// wait until Open(); SteppedTier, one whose ranged reads do, after the
// first few.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
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
  std::vector<bool> Visit(std::span<const store::BlockKey> keys,
                          const ObjectVisitor& visit) override {
    return inner_->Visit(keys, visit);
  }
  std::vector<bool> Exists(std::span<const store::BlockKey> keys) override {
    return inner_->Exists(keys);
  }
  bool reads_ranges() const override { return inner_->reads_ranges(); }
  std::vector<bool> ReadRanges(std::span<const store::BlockKey> keys,
                               std::span<const RangeRead> ranges) override {
    return inner_->ReadRanges(keys, ranges);
  }
  Status VerifyGathered(
      const store::BlockKey& key, std::span<const uint8_t> header,
      std::span<const std::span<const uint8_t>> payload) override {
    return inner_->VerifyGathered(key, header, payload);
  }
  Status Erase(const store::BlockKey& key) override {
    return inner_->Erase(key);
  }
  void Flush() override { inner_->Flush(); }
  store::TierStats Stats() const override { return inner_->Stats(); }

 private:
  store::Tier* const inner_;
};

// A tier whose Gets wait until Open(); counts the keys asked of it. It reads
// no ranges, so loads from it are whole-object Prefetches.
class HeldTier final : public ForwardingTier {
 public:
  using ForwardingTier::ForwardingTier;
  bool reads_ranges() const override { return false; }
  std::vector<bool> Visit(std::span<const store::BlockKey> keys,
                          const ObjectVisitor& visit) override {
    {
      std::unique_lock lock(mu_);
      keys_read_ += keys.size();
      ++inside_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return open_; });
    }
    return ForwardingTier::Visit(keys, visit);
  }

  // Waits until a Get is inside.
  void AwaitGet() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return inside_ > 0; });
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  size_t keys_read() const {
    std::lock_guard lock(mu_);
    return keys_read_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  size_t keys_read_ = 0;
  int inside_ = 0;
  bool open_ = false;
};

// A tier whose ReadRanges calls after the first `free_calls` wait until
// Open() (a layered load held after its first groups of layers); records
// the (offset, size) of each call's ranges.
class SteppedTier final : public ForwardingTier {
 public:
  SteppedTier(store::Tier* inner, int free_calls)
      : ForwardingTier(inner), free_calls_(free_calls) {}

  std::vector<bool> ReadRanges(std::span<const store::BlockKey> keys,
                               std::span<const RangeRead> ranges) override {
    {
      std::unique_lock lock(mu_);
      calls_.emplace_back();
      for (const RangeRead& r : ranges) {
        calls_.back().push_back({r.offset, r.into.size()});
      }
      cv_.notify_all();
      cv_.wait(lock,
               [&] { return open_ || int(calls_.size()) <= free_calls_; });
    }
    return ForwardingTier::ReadRanges(keys, ranges);
  }
  // Waits until `n` calls have begun.
  void AwaitCalls(size_t n) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return calls_.size() >= n; });
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // Per call, (offset, size) of each range.
  std::vector<std::vector<std::pair<uint64_t, size_t>>> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }

 private:
  const int free_calls_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::vector<std::pair<uint64_t, size_t>>> calls_;
  bool open_ = false;
};

}  // namespace kvstash::testing
