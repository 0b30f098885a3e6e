// TextStream (serve/text_stream.h): generated pieces with stop strings.
// Input: one byte, the number of stop strings (0..4), each a short string,
// then pieces, each a short string, to the end. Checks the contract: what
// is released is a prefix of the concatenated pieces that holds no stop
// string; without a stop string in the text all of it is released (at
// Flush at the latest); after a stop, the unreleased rest begins with one.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "serve/text_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvstash;
  fuzz::InputReader in({data, size});
  std::vector<std::string> stops;
  for (int n = in.Byte() % 5; n > 0; --n) stops.emplace_back(in.Short(16));
  TextStream stream(stops);
  std::string all, released;
  while (!in.empty()) {
    const std::string_view piece = in.Short();
    all += piece;
    released += stream.Add(piece);
    FUZZ_CHECK(all.starts_with(released));
  }
  released += stream.Flush();
  FUZZ_CHECK(all.starts_with(released));

  bool any_stop_in_text = false;
  for (const std::string& s : stops) {
    if (s.empty()) continue;
    FUZZ_CHECK(released.find(s) == std::string::npos);
    if (all.find(s) != std::string::npos) any_stop_in_text = true;
  }
  FUZZ_CHECK(stream.stopped() == any_stop_in_text);
  if (!stream.stopped()) {
    FUZZ_CHECK(released == all);
  } else {
    const std::string_view rest = std::string_view(all).substr(released.size());
    bool begins_with_stop = false;
    for (const std::string& s : stops) {
      if (!s.empty() && rest.starts_with(s)) begins_with_stop = true;
    }
    FUZZ_CHECK(begins_with_stop);
  }
  return 0;
}
