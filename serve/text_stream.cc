#include "serve/text_stream.h"

#include <algorithm>

namespace kvstash {
namespace {

// Length of the incomplete UTF-8 sequence ending `s` (0 if it ends whole).
size_t IncompleteUtf8Tail(std::string_view s) {
  for (size_t back = 1; back <= std::min<size_t>(3, s.size()); ++back) {
    const unsigned char c = s[s.size() - back];
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    const size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return want > back ? back : 0;
  }
  return 0;
}

}  // namespace

TextStream::TextStream(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

size_t TextStream::HoldBack() const {
  size_t hold = IncompleteUtf8Tail(held_);
  for (const std::string& stop : stops_) {
    // Longest proper prefix of `stop` that ends held_.
    for (size_t n = std::min(stop.size() - 1, held_.size()); n > hold; --n) {
      if (held_.compare(held_.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

std::string TextStream::Add(std::string_view piece) {
  if (stopped_) return "";
  held_.append(piece);
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) {
    first = std::min(first, held_.find(stop));
  }
  std::string out;
  if (first != std::string::npos) {
    out = held_.substr(0, first);
    held_.clear();
    stopped_ = true;
    return out;
  }
  const size_t keep = HoldBack();
  out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string TextStream::Flush() {
  if (stopped_) return "";
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace kvstash
