#include "store/redis_reply.h"

#include <hiredis/read.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>

#include "base/check.h"
#include "store/crc16.h"

namespace kvstash::store {
namespace {

// The most elements an array reply may announce. The tier's largest reply
// is CLUSTER SLOTS (at most one range per slot); the elements are allocated
// when the count is read, so a hostile peer could otherwise ask for 16 GiB
// in 14 bytes.
constexpr long long kMaxArrayElements = 1 << 16;
// Arrays nested in arrays: CLUSTER SLOTS needs 3.
constexpr size_t kMaxDepth = 8;
// Redis's proto-max-bulk-len default.
constexpr long long kMaxStringBytes = 512ll << 20;
// A status, error or integer line (the tier's are a few dozen bytes).
constexpr size_t kMaxLineBytes = size_t{64} << 10;
// The room the reader's buffer offers a receive: from kMinReadChunk,
// doubled each time a receive fills it, up to kReadChunk (a short-lived
// reader, as the fuzzer's, touches no more memory than it is fed).
constexpr size_t kMinReadChunk = size_t{4} << 10;
constexpr size_t kReadChunk = size_t{64} << 10;

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

// The parser: bytes received into `buf` are parsed as far as they go into
// complete replies (`ready`); an array being read is an open frame that
// owns it until its last element arrives; a large string being received
// directly (`direct`) takes the bytes into its own buffer.
struct RedisReplyReader::State {
  struct Frame {
    std::unique_ptr<RedisValue> array;
    size_t next = 0;  // elements filled
  };

  size_t kept_buffer_bytes = 0;
  size_t direct_bytes = 0, max_direct_bytes = 0;
  std::vector<char> buf;  // received, unparsed: [pos, len)
  size_t pos = 0, len = 0;
  size_t chunk = kMinReadChunk;        // room offered to a receive
  size_t offered = 0;                  // by the last Space into buf
  std::vector<Frame> open;             // innermost last
  std::unique_ptr<RedisValue> direct;  // receiving its bytes (or the CRLF)
  size_t direct_filled = 0;
  std::deque<RedisReply> ready;
  std::string error;  // set: not the protocol; nothing more is parsed

  void Fail(std::string why) {
    error = "protocol error: " + std::move(why);
    direct.reset();
  }

  // `v`, complete, goes into its array (completing the arrays it fills) or
  // out as a reply.
  void Complete(std::unique_ptr<RedisValue> v) {
    while (!open.empty()) {
      Frame& top = open.back();
      top.array->elements[top.next++] = std::move(v);
      if (top.next < top.array->elements.size()) return;
      v = std::move(top.array);
      open.pop_back();
    }
    ready.push_back(std::move(v));
  }

  static std::unique_ptr<RedisValue> Value(int type) {
    auto v = std::make_unique<RedisValue>();
    v->type = type;
    return v;
  }

  // A string's buffer of `n` bytes: recycled for the large ones.
  static std::vector<uint8_t> StringBuffer(size_t n) {
    if (n >= ReplyBuffers::kMinBytes) return Buffers().Take(n);
    return std::vector<uint8_t>(n);
  }

  // Parses what `buf` holds as far as it goes.
  void Parse() {
    while (error.empty()) {
      if (direct != nullptr) {
        std::vector<uint8_t>& bytes = direct->bytes;
        const size_t take = std::min(len - pos, bytes.size() - direct_filled);
        std::copy_n(buf.data() + pos, take, bytes.data() + direct_filled);
        pos += take;
        direct_filled += take;
        if (direct_filled < bytes.size() || len - pos < 2) return;
        if (buf[pos] != '\r' || buf[pos + 1] != '\n') {
          return Fail("a string does not end where its length says");
        }
        pos += 2;
        Complete(std::move(direct));
        continue;
      }
      const std::string_view rest(buf.data() + pos, len - pos);
      const size_t eol = rest.find("\r\n");
      if (eol == std::string_view::npos) {
        if (rest.size() > kMaxLineBytes) Fail("a line over 64 KiB");
        return;
      }
      if (eol == 0) return Fail("an empty line");
      const char type = rest[0];
      const std::string_view line = rest.substr(1, eol - 1);
      const size_t after = eol + 2;  // bytes of the line with its CRLF
      if (type == '+' || type == '-') {
        auto v = Value(type == '+' ? REDIS_REPLY_STATUS : REDIS_REPLY_ERROR);
        v->bytes.assign(line.begin(), line.end());
        pos += after;
        Complete(std::move(v));
      } else if (type == ':') {
        const std::optional<long long> n =
            IntegerIn(line, std::numeric_limits<long long>::min(),
                      std::numeric_limits<long long>::max());
        if (!n) return Fail("a bad integer");
        auto v = Value(REDIS_REPLY_INTEGER);
        v->integer = *n;
        pos += after;
        Complete(std::move(v));
      } else if (type == '$') {
        const std::optional<long long> n = IntegerIn(line, -1, kMaxStringBytes);
        if (!n) return Fail("a bad string length (or over 512 MiB)");
        if (*n == -1) {
          pos += after;
          Complete(Value(REDIS_REPLY_NIL));
          continue;
        }
        const size_t bytes = size_t(*n);
        if (bytes >= direct_bytes && bytes <= max_direct_bytes) {
          direct = Value(REDIS_REPLY_STRING);
          direct->bytes = StringBuffer(bytes);
          direct_filled = 0;
          pos += after;
          continue;
        }
        if (rest.size() < after + bytes + 2) return;  // wait for all of it
        if (rest.substr(after + bytes, 2) != "\r\n") {
          return Fail("a string does not end where its length says");
        }
        auto v = Value(REDIS_REPLY_STRING);
        v->bytes = StringBuffer(bytes);
        std::copy_n(rest.data() + after, bytes, v->bytes.data());
        pos += after + bytes + 2;
        Complete(std::move(v));
      } else if (type == '*') {
        const std::optional<long long> n =
            IntegerIn(line, -1, kMaxArrayElements);
        if (!n) {
          return Fail("a bad array length (or over " +
                      std::to_string(kMaxArrayElements) + " elements)");
        }
        pos += after;
        if (*n <= 0) {
          auto v = Value(*n == -1 ? REDIS_REPLY_NIL : REDIS_REPLY_ARRAY);
          Complete(std::move(v));
          continue;
        }
        if (open.size() == kMaxDepth) return Fail("arrays nested over 8 deep");
        auto v = Value(REDIS_REPLY_ARRAY);
        v->elements.resize(size_t(*n));
        open.push_back(Frame{std::move(v), 0});
      } else {
        return Fail("unknown reply type byte " + std::to_string(uint8_t(type)));
      }
    }
  }
};

RedisReplyReader::RedisReplyReader(size_t kept_buffer_bytes,
                                   size_t direct_bytes, size_t max_direct_bytes)
    : state_(std::make_unique<State>()) {
  KV_CHECK(direct_bytes >= 1);
  state_->kept_buffer_bytes = kept_buffer_bytes;
  state_->direct_bytes = direct_bytes;
  state_->max_direct_bytes = max_direct_bytes;
}

RedisReplyReader::~RedisReplyReader() = default;

std::span<char> RedisReplyReader::Space() {
  State& s = *state_;
  if (s.direct != nullptr && s.direct_filled < s.direct->bytes.size()) {
    // Parse copied every buffered byte before asking for more.
    KV_DCHECK(s.pos == s.len);
    return {reinterpret_cast<char*>(s.direct->bytes.data()) + s.direct_filled,
            s.direct->bytes.size() - s.direct_filled};
  }
  if (s.pos == s.len) {
    s.pos = s.len = 0;
    if (s.buf.size() > s.kept_buffer_bytes) s.buf = std::vector<char>();
  } else if (s.pos > 0 && s.buf.size() - s.len < s.chunk) {
    std::memmove(s.buf.data(), s.buf.data() + s.pos, s.len - s.pos);
    s.len -= s.pos;
    s.pos = 0;
  }
  if (s.buf.size() - s.len < s.chunk) {
    s.buf.resize(std::max(s.len + s.chunk, 2 * s.buf.size()));
  }
  s.offered = s.buf.size() - s.len;
  return {s.buf.data() + s.len, s.offered};
}

void RedisReplyReader::Commit(size_t n) {
  State& s = *state_;
  if (s.direct != nullptr && s.direct_filled < s.direct->bytes.size()) {
    KV_CHECK(n <= s.direct->bytes.size() - s.direct_filled);
    s.direct_filled += n;
  } else {
    KV_CHECK(n <= s.buf.size() - s.len);
    s.len += n;
    if (n == s.offered) s.chunk = std::min(2 * s.chunk, kReadChunk);
  }
  if (s.error.empty()) s.Parse();
}

void RedisReplyReader::Feed(std::span<const char> bytes) {
  while (!bytes.empty()) {
    const std::span<char> space = Space();
    const size_t n = std::min(space.size(), bytes.size());
    std::memcpy(space.data(), bytes.data(), n);
    Commit(n);
    bytes = bytes.subspan(n);
  }
}

Result<RedisReply> RedisReplyReader::Take() {
  State& s = *state_;
  if (!s.ready.empty()) {
    RedisReply r = std::move(s.ready.front());
    s.ready.pop_front();
    return r;
  }
  if (!s.error.empty()) return Status::IOError(s.error);
  return RedisReply();
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
