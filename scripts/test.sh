#!/usr/bin/env bash
# Checks the formatting (scripts/format.sh --check: clang-format, Google
# style), then builds kvstash and runs the whole test suite, in four stages
# (the build fails on any compiler warning in the project's own code:
# -Werror, see CMakeLists.txt):
#  1. Release (g++): every test, with the official openai npm package against
#     a live server (tests/clients, label "client"; needs scripts/setup.sh's
#     `npm ci`, else it is reported skipped). Release only: the stages below
#     do not register it.
#  2. AddressSanitizer + UndefinedBehaviorSanitizer (g++): the parsing tests
#     (GGUF, llama2.c, tokenizers, hostile files, OpenAI request bodies, text
#     streams, Prometheus text, tier objects and the disk tier, Redis
#     replies, the fuzz corpora replayed), the Redis tier's tests (replies
#     parsed off the network) and the kernels' tests (KV formats packed and
#     read byte by byte, attention over every KV type; token eviction's
#     compaction and policies). SIMD kernels for the scalar and AVX-512
#     targets only (see CMakeLists.txt).
#  3. Fuzzers (clang, libFuzzer, ASan + UBSan): every harness in fuzz/ for
#     FUZZ_SECONDS (60) each, from its seeds (scripts/fuzz.sh).
#  4. ThreadSanitizer (clang): the tests of what threads share (thread pool,
#     KV cache with its tiers, disk and Redis tiers, scheduler, HTTP server,
#     tiers under the server, the load generator against a live server: the
#     only test binaries that stage builds),
#     each run 3 times.
# Stages 3 and 4 compile the SIMD kernels for one portable target. Each
# stage prints its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-$(nproc)}"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
stage_start=$SECONDS
stage_done() {
  echo "== stage '$1' took $((SECONDS - stage_start)) s"
  stage_start=$SECONDS
}

scripts/format.sh --check

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"
stage_done release

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVSTASH_SANITIZE=address,undefined
# Only the binaries that hold tests labelled "parsing", "redis" or "kvformat".
cmake --build build-asan -j "$JOBS" --target base_test model_test \
  tokenizer_test hostile_files_test serve_test store_test redis_tier_test \
  kernels_test kv_compaction_test compress_test kvstash_fuzzers
ctest --test-dir build-asan -L 'parsing|redis|kvformat' --output-on-failure \
  -j "$JOBS"
stage_done asan+ubsan

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSTASH_SANITIZE=address,undefined \
  -DKVSTASH_FUZZ=ON
cmake --build build-fuzz -j "$JOBS" --target kvstash_fuzzers
bash scripts/fuzz.sh build-fuzz "$FUZZ_SECONDS"
stage_done fuzzers

CC=clang CXX=clang++ cmake -S . -B build-tsan -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSTASH_SANITIZE=thread
cmake --build build-tsan -j "$JOBS" --target thread_pool_test kvcache_test \
  store_test redis_tier_test scheduler_test server_test tiers_test \
  load_bench_test
# The other binaries are not built: their placeholders (NAME_NOT_BUILT) and
# the corpus replays are left out.
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/scripts/tsan.supp ${TSAN_OPTIONS:-}" \
  ctest --test-dir build-tsan -E '^fuzz_replay_|_NOT_BUILT$' \
  --output-on-failure -j "$JOBS" --repeat until-fail:3
stage_done tsan
