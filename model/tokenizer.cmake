# Owned by the tokenizer work. Included by model/CMakeLists.txt before
# kvstash_model exists: sets the sources (relative to model/) and private
# libraries that kvstash_model takes, and defines kvstash_tokenizer_tests(),
# which model/CMakeLists.txt calls once the library exists.
set(KVSTASH_TOKENIZER_SOURCES tokenizer.cc byte_level.cc)
set(KVSTASH_TOKENIZER_LIBS PkgConfig::PCRE2)

function(kvstash_tokenizer_tests)
  kvstash_test(tokenizer_test
    SOURCES tokenizer_test.cc byte_level_test.cc
    LIBS kvstash_model
    LABELS parsing)
endfunction()
