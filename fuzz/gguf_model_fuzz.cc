// GGUF model files: the reader (header, metadata, tensor infos), binding the
// tensors to a Llama config, the vocabulary and the chat template, then a
// forward pass when the file loads (model_load.h).
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "fuzz/model_load.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvstash::fuzz::InputFile* const file = new kvstash::fuzz::InputFile;
  file->Write({data, size});
  kvstash::fuzz::LoadAndUse(file->path(), "");
  return 0;
}
