#include "store/redis_reply.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <mutex>

#include "base/check.h"
#include "store/crc16.h"

namespace kvstash::store {
namespace {

// The most elements an array reply may announce. The tier's largest reply
// is CLUSTER SLOTS (at most one range per slot); hiredis 0.14 takes any
// count up to INT_MAX, and the elements are allocated when the count is
// read, so a hostile peer could otherwise ask for 16 GiB in 14 bytes.
constexpr int kMaxArrayElements = 1 << 16;

// The recycled buffers of large string replies (see RedisValue). A fresh
// 512 KiB vector per value cost the Redis tier's restores about as much CPU
// as everything else together (page faults and zeroing: each value freed
// by a load thread's arena was trimmed and faulted in again).
class ReplyBuffers {
 public:
  static constexpr size_t kMinBytes = size_t{64} << 10;  // smaller: malloc
  static constexpr size_t kKeptBytes = size_t{64} << 20;

  // A buffer of `n` bytes (n >= kMinBytes); its contents are unspecified.
  std::vector<uint8_t> Take(size_t n) {
    std::vector<uint8_t> b;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      const auto it = std::find_if(free_.begin(), free_.end(),
                                   [&](auto& f) { return f.capacity() >= n; });
      if (it != free_.end()) {
        std::iter_swap(it, free_.end() - 1);
        b = std::move(free_.back());
        free_.pop_back();
        kept_ -= b.capacity();
      }
    }
    b.resize(n);  // zero-fills only where it grows past the last use
    return b;
  }

  void Give(std::vector<uint8_t> b) {
    if (b.capacity() < kMinBytes) return;
    const std::lock_guard<std::mutex> lock(mu_);
    if (kept_ + b.capacity() > kKeptBytes) return;
    kept_ += b.capacity();
    free_.push_back(std::move(b));
  }

 private:
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> free_;  // guarded by mu_
  size_t kept_ = 0;                         // their capacity, guarded by mu_
};

ReplyBuffers& Buffers() {
  static ReplyBuffers* const buffers = new ReplyBuffers;  // never destroyed
  return *buffers;
}

// hiredis's parser builds RedisValues through these, so that a string reply
// is copied once, into its value's buffer.
RedisValue* NewValue(const redisReadTask* task, int type) {
  auto* v = new RedisValue;
  v->type = type;
  if (task->parent != nullptr) {
    static_cast<RedisValue*>(task->parent->obj)
        ->elements[size_t(task->idx)]
        .reset(v);
  }
  return v;
}

void* NewString(const redisReadTask* task, char* str, size_t len) {
  RedisValue* v = NewValue(task, task->type);
  if (len >= ReplyBuffers::kMinBytes) {
    v->bytes = Buffers().Take(len);
    std::memcpy(v->bytes.data(), str, len);
  } else {
    v->bytes.assign(str, str + len);
  }
  return v;
}

void* NewArray(const redisReadTask* task, int elements) {
  if (elements > kMaxArrayElements) return nullptr;  // hiredis: "Out of memory"
  RedisValue* v = NewValue(task, REDIS_REPLY_ARRAY);
  v->elements.resize(size_t(std::max(elements, 0)));
  return v;
}

void* NewInteger(const redisReadTask* task, long long integer) {
  RedisValue* v = NewValue(task, REDIS_REPLY_INTEGER);
  v->integer = integer;
  return v;
}

void* NewNil(const redisReadTask* task) {
  return NewValue(task, REDIS_REPLY_NIL);
}

void FreeValue(void* v) { delete static_cast<RedisValue*>(v); }

redisReplyObjectFunctions kValueFunctions = {NewString, NewArray, NewInteger,
                                             NewNil, FreeValue};

// The integer `text` is, when all of it is one within [lo, hi].
std::optional<long long> IntegerIn(std::string_view text, long long lo,
                                   long long hi) {
  long long v = 0;
  const auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < lo ||
      v > hi) {
    return std::nullopt;
  }
  return v;
}

}  // namespace

RedisValue::~RedisValue() { Buffers().Give(std::move(bytes)); }

bool RedisValue::is_error() const { return type == REDIS_REPLY_ERROR; }
bool RedisValue::is_string() const { return type == REDIS_REPLY_STRING; }

RedisReplyReader::RedisReplyReader(size_t kept_buffer_bytes)
    : reader_(redisReaderCreateWithFunctions(&kValueFunctions)) {
  KV_CHECK(reader_ != nullptr);
  reader_->maxbuf = kept_buffer_bytes;
}

RedisReplyReader::~RedisReplyReader() { redisReaderFree(reader_); }

Status RedisReplyReader::Feed(std::span<const char> bytes) {
  if (redisReaderFeed(reader_, bytes.data(), bytes.size()) != REDIS_OK) {
    return Status::IOError("cannot buffer a reply");
  }
  return Status::OK();
}

Result<RedisReply> RedisReplyReader::Take() {
  void* reply = nullptr;
  if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
    return Status::IOError(std::string("protocol error: ") + reader_->errstr +
                           " (or an array of over " +
                           std::to_string(kMaxArrayElements) + " elements)");
  }
  return RedisReply(static_cast<RedisValue*>(reply));
}

std::optional<RedisRedirect> ParseRedirect(const RedisValue& reply,
                                           std::string_view replier_host) {
  if (!reply.is_error()) return std::nullopt;
  const std::string_view text = reply.text();
  RedisRedirect r;
  std::string_view rest;
  if (text.starts_with("MOVED ")) {
    rest = text.substr(6);
  } else if (text.starts_with("ASK ")) {
    r.ask = true;
    rest = text.substr(4);
  } else {
    return std::nullopt;
  }
  const size_t space = rest.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  const std::optional<long long> slot =
      IntegerIn(rest.substr(0, space), 0, kRedisClusterSlots - 1);
  std::string where(rest.substr(space + 1));
  if (where.starts_with(':')) where.insert(0, replier_host);
  Result<RedisEndpoint> to = ParseRedisEndpoint(where);
  if (!slot || !to.ok()) return std::nullopt;
  r.slot = int(*slot);
  r.to = std::move(to).value();
  return r;
}

Result<std::vector<RedisSlotRange>> ParseClusterSlots(const RedisValue& reply) {
  const Status malformed =
      Status::InvalidArgument("malformed CLUSTER SLOTS reply");
  if (reply.type != REDIS_REPLY_ARRAY) return malformed;
  std::vector<RedisSlotRange> ranges;
  for (const RedisReply& range : reply.elements) {
    if (range->type != REDIS_REPLY_ARRAY || range->elements.size() < 3) {
      return malformed;
    }
    const RedisValue& first = *range->elements[0];
    const RedisValue& last = *range->elements[1];
    const RedisValue& master = *range->elements[2];
    if (first.type != REDIS_REPLY_INTEGER || last.type != REDIS_REPLY_INTEGER ||
        first.integer < 0 || first.integer > last.integer ||
        last.integer >= kRedisClusterSlots ||
        master.type != REDIS_REPLY_ARRAY || master.elements.size() < 2 ||
        master.elements[0]->type != REDIS_REPLY_STRING ||
        master.elements[1]->type != REDIS_REPLY_INTEGER ||
        master.elements[1]->integer < 0 ||
        master.elements[1]->integer > 65535) {
      return malformed;
    }
    ranges.push_back({int(first.integer),
                      int(last.integer),
                      {std::string(master.elements[0]->text()),
                       int(master.elements[1]->integer)}});
  }
  return ranges;
}

}  // namespace kvstash::store
