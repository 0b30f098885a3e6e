// TextStream: the text a client sees of a stream of generated pieces.
//
// Generated tokens arrive one piece of text at a time. A piece may end in
// the middle of a UTF-8 character (byte-fallback tokens), and the request's
// stop strings may span several pieces. TextStream holds back just what may
// still change: an incomplete UTF-8 sequence at the end, and the longest
// tail that is a prefix of a stop string. Everything before that is safe to
// send. When a stop string appears, the text up to (not including) it is
// released and the stream is stopped; nothing after it is ever sent.
// Thread-compatible.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvstash {

class TextStream {
 public:
  // Empty stop strings are ignored.
  explicit TextStream(std::vector<std::string> stops);

  // Appends `piece`; returns the text that became safe to send (possibly
  // empty). After a stop string was found, returns "" and ignores input.
  std::string Add(std::string_view piece);
  // The end of generation: releases what was held back (unless stopped).
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  // Bytes at the end of held_ that must wait for more input.
  size_t HoldBack() const;

  std::vector<std::string> stops_;
  std::string held_;  // received, not yet released
  bool stopped_ = false;
};

}  // namespace kvstash
