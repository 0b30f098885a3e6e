#include "store/write_behind.h"

#include <utility>

#include "base/check.h"

namespace kvstash::store {

WriteBehindQueue::WriteBehindQueue(std::mutex& mu, Options options,
                                   StoreFn store)
    : mu_(mu), options_(options), store_(std::move(store)) {
  KV_CHECK(options_.max_bytes > 0 && options_.batch_objects > 0);
}

WriteBehindQueue::~WriteBehindQueue() { Stop(); }

void WriteBehindQueue::Start() {
  KV_CHECK(!writer_.joinable());
  writer_ = std::thread([this] { Loop(); });
}

void WriteBehindQueue::Stop() {
  if (!writer_.joinable()) return;
  {
    const std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  writer_.join();
}

std::shared_ptr<const std::vector<uint8_t>> WriteBehindQueue::Find(
    const BlockKey& key) const {
  if (auto q = queued_.find(key); q != queued_.end()) return q->second->bytes;
  if (auto f = in_flight_at_.find(key); f != in_flight_at_.end()) {
    const Write& w = in_flight_[f->second];
    if (!w.cancelled) return w.bytes;
  }
  return nullptr;
}

bool WriteBehindQueue::Push(const BlockKey& key, const BlockKey& parent,
                            std::vector<uint8_t> object) {
  const uint64_t size = object.size();
  if (bytes_ + size > options_.max_bytes) {
    ++dropped_;
    return false;
  }
  queue_.push_back(
      {key, parent,
       std::make_shared<const std::vector<uint8_t>>(std::move(object)),
       ++last_ticket_});
  queued_.emplace(key, std::prev(queue_.end()));
  bytes_ += size;
  work_cv_.notify_one();
  return true;
}

std::optional<WriteBehindQueue::Write> WriteBehindQueue::Cancel(
    const BlockKey& key) {
  if (auto f = in_flight_at_.find(key); f != in_flight_at_.end()) {
    in_flight_[f->second].cancelled = true;
  }
  const auto q = queued_.find(key);
  if (q == queued_.end()) return std::nullopt;
  Write w = std::move(*q->second);
  bytes_ -= w.bytes->size();
  queue_.erase(q->second);
  queued_.erase(q);
  done_cv_.notify_all();
  return w;
}

void WriteBehindQueue::AddStats(TierStats& stats) const {
  stats.dropped_writes += dropped_;
  stats.queue_objects = queue_.size() + in_flight_.size();
  stats.queue_bytes = bytes_;
}

void WriteBehindQueue::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t ticket = last_ticket_;
  done_cv_.wait(lock, [&] {
    return (queue_.empty() || queue_.front().ticket > ticket) &&
           (in_flight_.empty() || in_flight_.front().ticket > ticket);
  });
}

void WriteBehindQueue::SetPaused(bool paused) {
  {
    const std::lock_guard<std::mutex> lock(mu_);
    paused_ = paused;
  }
  work_cv_.notify_all();
}

void WriteBehindQueue::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || (!queue_.empty() && !paused_); });
    if (queue_.empty()) return;  // stopping, and everything is stored
    uint64_t batch_bytes = 0;
    while (!queue_.empty() && in_flight_.size() < options_.batch_objects &&
           (in_flight_.empty() || batch_bytes + queue_.front().bytes->size() <=
                                      options_.batch_bytes)) {
      Write& w = queue_.front();
      batch_bytes += w.bytes->size();
      queued_.erase(w.key);
      in_flight_at_.emplace(w.key, in_flight_.size());
      in_flight_.push_back(std::move(w));
      queue_.pop_front();
    }
    store_(lock, in_flight_);
    for (const Write& w : in_flight_) bytes_ -= w.bytes->size();
    in_flight_.clear();
    in_flight_at_.clear();
    done_cv_.notify_all();
  }
}

}  // namespace kvstash::store
