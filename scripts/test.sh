#!/usr/bin/env bash
# Builds kvstash and runs the whole test suite: every test in a Release build,
# then the parsing tests (GGUF, llama2.c, tokenizers, hostile files, OpenAI
# request bodies, text streams, Prometheus text, tier objects and the disk
# tier), the Redis tier's tests (replies parsed off the network) and the
# kernels' tests (KV formats packed and read byte by byte, attention over
# every KV type; token eviction's compaction and policies) again under
# AddressSanitizer + UndefinedBehaviorSanitizer
# (whose build compiles the SIMD kernels for the scalar and AVX-512 targets
# only: see CMakeLists.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc)}"

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVSTASH_SANITIZE=address,undefined
# Only the binaries that hold tests labelled "parsing", "redis" or "kvformat".
cmake --build build-asan -j "$JOBS" --target base_test model_test \
  tokenizer_test hostile_files_test serve_test store_test redis_tier_test \
  kernels_test kv_compaction_test compress_test
ctest --test-dir build-asan -L 'parsing|redis|kvformat' --output-on-failure \
  -j "$JOBS"
