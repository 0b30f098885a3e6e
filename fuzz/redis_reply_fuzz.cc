// What a Redis server (or anything answering on its port) sends back
// (store/redis_reply.h): the reply reader fed in pieces of the sizes the
// input's first byte chooses, receiving strings from the length its second
// byte chooses on into their own buffers, and every complete reply read as a
// -MOVED/-ASK redirection and as a CLUSTER SLOTS reply, as the tier does.
// The same bytes as text go through the URL and endpoint parsers
// (store/redis_url.h).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz/fuzz_support.h"
#include "store/redis_reply.h"
#include "store/redis_url.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvstash;
  using namespace kvstash::store;
  fuzz::InputReader in({data, size});
  const size_t piece = 1 + in.Byte();
  // Strings from this length on are received into their own buffer.
  const size_t direct = 1 + in.Byte();
  const std::string_view wire = fuzz::AsText(in.Rest());

  // Longer ones than the input could hold are not allocated when announced
  // (that zero-filled up to 64 MiB per input).
  RedisReplyReader reader(size_t{1} << 16, direct, size_t{4} << 10);
  for (size_t at = 0; at < wire.size(); at += piece) {
    const std::string_view chunk = wire.substr(at, piece);
    reader.Feed({chunk.data(), chunk.size()});
    Result<RedisReply> reply = reader.Take();
    for (; reply.ok() && *reply != nullptr; reply = reader.Take()) {
      if (std::optional<RedisRedirect> r = ParseRedirect(**reply, "replier")) {
        FUZZ_CHECK(r->slot >= 0 && r->slot < 16384);
        FUZZ_CHECK(r->to.port >= 1 && r->to.port <= 65535);
      }
      if (Result<std::vector<RedisSlotRange>> ranges =
              ParseClusterSlots(**reply);
          ranges.ok()) {
        for (const RedisSlotRange& range : *ranges) {
          FUZZ_CHECK(0 <= range.first && range.first <= range.last &&
                     range.last < 16384);
        }
      }
    }
    if (!reply.ok()) break;  // not the protocol: the tier drops the connection
  }

  if (Result<RedisUrl> url = ParseRedisUrl(wire); url.ok()) {
    FUZZ_CHECK(!url->endpoints.empty());
    for (const RedisEndpoint& e : url->endpoints) {
      FUZZ_CHECK(e.port >= 1 && e.port <= 65535);
    }
  }
  (void)RedactRedisUrl(wire);
  (void)ParseRedisEndpoint(wire);
  return 0;
}
