#include "store/crc16.h"

#include <array>

namespace kvstash::store {
namespace {

constexpr uint16_t kPolynomial = 0x1021;

// kTable[b]: the CRC register after shifting byte b through a zero register.
constexpr std::array<uint16_t, 256> MakeTable() {
  std::array<uint16_t, 256> table{};
  for (unsigned b = 0; b < 256; ++b) {
    uint16_t crc = uint16_t(b << 8);
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 0x8000) ? uint16_t((crc << 1) ^ kPolynomial)
                           : uint16_t(crc << 1);
    }
    table[b] = crc;
  }
  return table;
}

constexpr std::array<uint16_t, 256> kTable = MakeTable();

}  // namespace

uint16_t Crc16Xmodem(std::string_view bytes) {
  uint16_t crc = 0;
  for (const char c : bytes) {
    crc = uint16_t((crc << 8) ^ kTable[((crc >> 8) ^ uint8_t(c)) & 0xff]);
  }
  return crc;
}

int RedisClusterSlot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return Crc16Xmodem(key) % kRedisClusterSlots;
}

}  // namespace kvstash::store
