// The hash slot of a key in a Redis Cluster, as the cluster specification
// defines it: slot = CRC16(key) mod 16384, where CRC16 is the XMODEM variant
// (polynomial 0x1021, initial value 0, bits not reflected, no final xor), and
// a key holding a hash tag is hashed by the tag alone. The tag is the text
// between the first '{' and the first '}' after it, when that text is not
// empty; keys sharing a tag land in one slot. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

namespace kvstash::store {

inline constexpr int kRedisClusterSlots = 16384;

// CRC16-XMODEM of `bytes`; Crc16Xmodem("123456789") == 0x31C3.
uint16_t Crc16Xmodem(std::string_view bytes);

// The slot of `key`, in [0, kRedisClusterSlots).
int RedisClusterSlot(std::string_view key);

}  // namespace kvstash::store
