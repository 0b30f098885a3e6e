// What a Redis server says, read off the wire: the Redis protocol (RESP2)
// parsed into RedisValue trees, and the two replies whose text the tier
// interprets, -MOVED/-ASK redirections and CLUSTER SLOTS.
//
// RedisReplyReader takes bytes as they arrive, in pieces of any size, and
// hands out each reply once complete. It says where the next bytes should
// land (Space): usually its own buffer, but while a large string (a value of
// the tier) is arriving, the string's own buffer, so the socket's bytes are
// copied once, by the kernel, into the buffer the tier hands to its caller.
// A byte stream that is not the protocol gives IOError, after which the
// reader must be dropped; so do an array that announces more than 65536
// elements or nests deeper than 8 (they would be allocated before they
// arrive), a string over 512 MiB (Redis's own proto-max-bulk-len) and a
// status, error or integer line over 64 KiB. A string is allocated whole
// when its length arrives only up to kMaxDirectBytes; a longer one grows
// with the bytes that come. ParseRedirect and ParseClusterSlots accept any
// reply (a fuzzer feeds them and the reader arbitrary bytes,
// fuzz/redis_reply_fuzz.cc): what is not the shape they expect is "not a
// redirection" or InvalidArgument. The reader is thread-compatible; the
// functions are pure.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/redis_url.h"

namespace kvstash::store {

// A parsed reply. The buffers of large strings (values: objects of the
// tier) are recycled: a value's destructor hands its buffer to a pool the
// parser takes the next one from, so a steady stream of GETs allocates
// (and faults in) no fresh memory per value.
struct RedisValue {
  RedisValue() = default;
  ~RedisValue();
  RedisValue(const RedisValue&) = delete;
  RedisValue& operator=(const RedisValue&) = delete;

  int type = 0;  // REDIS_REPLY_* of <hiredis/read.h>
  long long integer = 0;
  std::vector<uint8_t> bytes;                         // string, status, error
  std::vector<std::unique_ptr<RedisValue>> elements;  // array

  bool is_error() const;
  bool is_string() const;
  std::string_view text() const {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
};
using RedisReply = std::unique_ptr<RedisValue>;

class RedisReplyReader {
 public:
  // Strings of at least this many bytes are received straight into their
  // buffer; shorter ones are parsed out of the reader's buffer.
  static constexpr size_t kDirectBytes = size_t{64} << 10;
  static constexpr size_t kMaxDirectBytes = size_t{64} << 20;

  // Once empty, the reader keeps its buffer up to `kept_buffer_bytes`
  // instead of freeing it and growing it again for the next large reply.
  // Strings of [direct_bytes, max_direct_bytes] bytes are received directly
  // (direct_bytes >= 1); tests and the fuzzer lower both, to reach the
  // direct path with small inputs and to allocate no more than they feed.
  explicit RedisReplyReader(size_t kept_buffer_bytes,
                            size_t direct_bytes = kDirectBytes,
                            size_t max_direct_bytes = kMaxDirectBytes);
  ~RedisReplyReader();
  RedisReplyReader(const RedisReplyReader&) = delete;
  RedisReplyReader& operator=(const RedisReplyReader&) = delete;

  // Where the next received bytes go (never empty): write up to its size,
  // then Commit what was written. Valid until the next call.
  std::span<char> Space();
  // `n` bytes (at most Space().size()) were written at Space()'s start.
  void Commit(size_t n);
  // Copies `bytes` in through Space and Commit.
  void Feed(std::span<const char> bytes);
  // The next complete reply (null when none is complete yet), or IOError
  // once the bytes are not the Redis protocol (after the replies that
  // completed before the fault).
  Result<RedisReply> Take();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// A -MOVED or -ASK error reply: "MOVED SLOT HOST:PORT". An empty HOST
// (":PORT") means the host of the node that replied.
struct RedisRedirect {
  bool ask = false;
  int slot = 0;
  RedisEndpoint to;
};
// `reply` as a redirection, when it is one whose slot is 0..16383 and whose
// endpoint parses; `replier_host` fills an empty HOST.
std::optional<RedisRedirect> ParseRedirect(const RedisValue& reply,
                                           std::string_view replier_host);

// One range of the reply to CLUSTER SLOTS: slots first..last are served by
// `master`. An empty host means the host of the node that replied; the host
// "?" (a master whose address the node does not know) is kept as is.
struct RedisSlotRange {
  int first = 0;
  int last = 0;
  RedisEndpoint master;
};
// The ranges of a CLUSTER SLOTS reply (an array of [first, last, [host,
// port, ...], replicas...] with 0 <= first <= last <= 16383);
// InvalidArgument when it is not one.
Result<std::vector<RedisSlotRange>> ParseClusterSlots(const RedisValue& reply);

}  // namespace kvstash::store
