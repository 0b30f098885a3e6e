// llama2.c checkpoints: the header, the weights' layout, with the real
// stories260K tokenizer (512 tokens) beside them, then a forward pass when
// the file loads (model_load.h).
#include <cstdint>
#include <string>

#include "fuzz/fuzz_support.h"
#include "fuzz/model_load.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvstash::fuzz::InputFile* const file = new kvstash::fuzz::InputFile;
  static const std::string* const tokenizer = new std::string(
      kvstash::fuzz::SharedPath("models/stories260K/tok512.bin"));
  file->Write({data, size});
  kvstash::fuzz::LoadAndUse(file->path(), *tokenizer);
  return 0;
}
