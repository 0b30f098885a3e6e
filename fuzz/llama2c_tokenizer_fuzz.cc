// llama2.c tokenizer.bin files. Input: one byte, the vocabulary size minus 3
// (3..258 tokens), then the file. A tokenizer that loads must encode and
// decode text with ids in range.
#include <cstdint>
#include <memory>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvstash;
  static fuzz::InputFile* const file = new fuzz::InputFile;
  fuzz::InputReader in({data, size});
  const int vocab_size = 3 + in.Byte();
  file->Write(in.Rest());
  Result<std::unique_ptr<Tokenizer>> t =
      Tokenizer::FromLlama2c(file->path(), vocab_size);
  if (!t.ok()) return 0;
  FUZZ_CHECK((*t)->vocab_size() == vocab_size);
  const std::vector<int32_t> ids =
      (*t)->Encode("Once upon a time, \xff!", true);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < vocab_size);
  (void)(*t)->Decode(ids);
  return 0;
}
