// Test-only: the KV formats that tests run in and their test names, one list
// for every module's tests.
#pragma once

#include <string>
#include <vector>

#include "kernels/kv_format.h"

namespace kvstash::kernels::testing {

// Every type on both sides, and three pairs of different types (a per-token
// key with a rotated value, KIVI keys with rotated values, f16 keys with
// KIVI values).
inline std::vector<KvFormat> AllKvFormats() {
  std::vector<KvFormat> f;
  for (int t = 0; t < kKvTypeCount; ++t) f.push_back({KvType(t), KvType(t)});
  f.push_back({KvType::kQ8, KvType::kQ4H});
  f.push_back({KvType::kKivi4, KvType::kQ4H});
  f.push_back({KvType::kF16, KvType::kKivi2});
  return f;
}

// A test name for a format: "q8", or "k_q8_v_q4h".
inline std::string KvFormatTestName(const KvFormat& f) {
  if (f.k == f.v) return std::string(KvTypeName(f.k));
  return "k_" + std::string(KvTypeName(f.k)) + "_v_" +
         std::string(KvTypeName(f.v));
}

}  // namespace kvstash::kernels::testing
