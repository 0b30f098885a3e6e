// What a Redis server says, read off the wire: the Redis protocol (RESP2)
// parsed by hiredis's reader into RedisValue trees, and the two replies whose
// text the tier interprets, -MOVED/-ASK redirections and CLUSTER SLOTS.
//
// RedisReplyReader takes bytes as they arrive, in pieces of any size, and
// hands out each reply once complete; a byte stream that is not the protocol
// gives IOError, after which the reader must be dropped; so does an array
// that announces more than 65536 elements (which would be allocated before
// they arrive). A string reply
// lands in its RedisValue's own buffer, which the tier hands to its caller
// without another copy. ParseRedirect and ParseClusterSlots accept any
// reply (a fuzzer feeds them arbitrary bytes, fuzz/redis_reply_fuzz.cc):
// what is not the shape they expect is "not a redirection" or
// InvalidArgument. The reader is thread-compatible; the functions are pure.
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

struct redisReader;

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
  // Once empty, the reader keeps its buffer up to `kept_buffer_bytes`
  // instead of freeing it and growing it again for the next large reply.
  explicit RedisReplyReader(size_t kept_buffer_bytes);
  ~RedisReplyReader();
  RedisReplyReader(const RedisReplyReader&) = delete;
  RedisReplyReader& operator=(const RedisReplyReader&) = delete;

  // Appends received bytes. IOError only when out of memory.
  Status Feed(std::span<const char> bytes);
  // The next complete reply (null when none is complete yet), or IOError
  // when the bytes are not the Redis protocol.
  Result<RedisReply> Take();

 private:
  redisReader* const reader_;
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
