#!/usr/bin/env bash
# Builds kvstash and runs the whole test suite, in three stages:
#  1. Release (g++): every test.
#  2. AddressSanitizer + UndefinedBehaviorSanitizer (clang, with libFuzzer's
#     coverage instrumentation): the parsing tests (GGUF, llama2.c,
#     tokenizers, hostile files, OpenAI request bodies, text streams,
#     Prometheus text, tier objects and the disk tier, the fuzz corpora
#     replayed), the Redis tier's tests (replies parsed off the network) and
#     the kernels' tests (KV formats packed and read byte by byte, attention
#     over every KV type; token eviction's compaction and policies); then
#     every fuzzer for FUZZ_SECONDS (60) each (scripts/fuzz.sh).
#  3. ThreadSanitizer (clang): the tests of what threads share (thread pool,
#     KV cache with its tiers, disk and Redis tiers, scheduler, HTTP server,
#     tiers under the server: label "concurrency"), each run 3 times.
# The sanitized builds compile the SIMD kernels for the scalar and AVX-512
# targets only (see CMakeLists.txt). Each stage prints its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc)}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
stage_start=$SECONDS
stage_done() {
  echo "== stage '$1' took $((SECONDS - stage_start)) s"
  stage_start=$SECONDS
}

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"
stage_done release

CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSTASH_SANITIZE=address,undefined \
  -DKVSTASH_FUZZ=ON
# Only the binaries that hold tests labelled "parsing", "redis" or
# "kvformat", and the fuzzers.
cmake --build build-asan -j "$JOBS" --target base_test model_test \
  tokenizer_test hostile_files_test serve_test store_test redis_tier_test \
  kernels_test kv_compaction_test compress_test kvstash_fuzzers
ctest --test-dir build-asan -L 'parsing|redis|kvformat' --output-on-failure \
  -j "$JOBS"
bash scripts/fuzz.sh build-asan "$FUZZ_SECONDS"
stage_done "asan+ubsan and fuzzers"

CC=clang CXX=clang++ cmake -S . -B build-tsan -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSTASH_SANITIZE=thread
cmake --build build-tsan -j "$JOBS" --target thread_pool_test kvcache_test \
  store_test redis_tier_test scheduler_test server_test tiers_test
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  ctest --test-dir build-tsan -L concurrency --output-on-failure -j "$JOBS" \
  --repeat until-fail:3
stage_done tsan
