// Tier objects as a disk file or a Redis value may hold them
// (store/object_format.h, store/object_mac.h, store/kv_codec.h): framing,
// checksum, MAC verification (keyed and unkeyed), identity checks, and the
// codecs' decoders run on payloads whose checksum was never right (the
// verified path, DecodeVerifiedObject, is what a tier takes after its MAC
// check). An intact, unsealed raw object must encode back to its bytes.
#include <cstdint>
#include <span>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "store/object_format.h"
#include "store/object_mac.h"

namespace {

constexpr size_t kMaxDecodedBytes = size_t{16} << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvstash;
  using namespace kvstash::store;
  static const ObjectAuthenticator* const keyed = [] {
    Result<ObjectAuthenticator> a = ObjectAuthenticator::FromSecret(
        "fuzz-secret-fuzz-secret-fuzz-secret-0123456789");
    FUZZ_CHECK(a.ok());
    return new ObjectAuthenticator(*a);
  }();
  const std::span<const uint8_t> bytes(data, size);

  const Result<ObjectView> unkeyed = ObjectAuthenticator().Verify(bytes);
  const Result<ObjectView> verified = keyed->Verify(bytes);
  FUZZ_CHECK(!verified.ok() || unkeyed.ok());  // a MAC implies integrity
  (void)ParseHeaderPrefix(bytes);

  const Result<ObjectHeader> header = ParseObjectHeader(bytes);
  if (!header.ok()) return 0;
  const ObjectHeader& h = *header;
  const Result<ObjectView> view =
      DecodeVerifiedObject(bytes, h.fingerprint, h.key, h.layout, h.codec);
  if (!view.ok()) return 0;
  const size_t blocks = h.token_count / size_t(h.layout.block_tokens);
  if (blocks == 0 || blocks * h.layout.block_bytes() > kMaxDecodedBytes) {
    return 0;
  }
  std::vector<uint8_t> decoded(blocks * h.layout.block_bytes());
  const Status status = DecodeObjectBlocks(*view, h.layout, decoded);
  if (status.ok() && unkeyed.ok() && h.codec == Codec::kRaw &&
      h.mac == MacAlgorithm::kNone) {
    FUZZ_CHECK(EncodeObject(h.fingerprint, h.parent, h.key, h.layout,
                            h.token_count, decoded, Codec::kRaw) ==
               std::vector<uint8_t>(bytes.begin(), bytes.end()));
  }
  return 0;
}
