#!/usr/bin/env bash
# Runs every fuzzer of a KVSTASH_FUZZ=ON build for a bounded time:
#   scripts/fuzz.sh BUILD_DIR [SECONDS_EACH (60)]
# Each starts from its seeds in fuzz/corpus/NAME (copied: the repository is
# not written) and runs JOBS (nproc) at a time under the build's sanitizers.
# Prints per fuzzer: inputs executed, executions per second, coverage (edges
# and features, as libFuzzer counts them) and the corpus it grew. A crash, a
# sanitizer report, a timeout (> 10 s on one input) or an out-of-memory
# (> 2 GiB) fails the run; its input is kept under $FUZZ_OUT (printed): add
# it to fuzz/corpus/NAME once fixed, and ctest replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:?usage: scripts/fuzz.sh BUILD_DIR [SECONDS_EACH]}"
SECONDS_EACH="${2:-60}"
JOBS="${JOBS:-$(nproc)}"
FUZZ_OUT="${FUZZ_OUT:-$(mktemp -d /tmp/kvstash-fuzz.XXXXXX)}"
export KVSTASH_SHARED_DIR="${KVSTASH_SHARED_DIR:-$PWD/../shared}"

names=()
for dir in fuzz/corpus/*/; do names+=("$(basename "$dir")"); done
for name in "${names[@]}"; do
  if [ ! -x "$BUILD/fuzz/$name" ]; then
    echo "fuzz.sh: $BUILD/fuzz/$name missing (configure with -DKVSTASH_FUZZ=ON and build target kvstash_fuzzers)" >&2
    exit 2
  fi
done

run_one() {
  local name="$1" work="$FUZZ_OUT/$1"
  mkdir -p "$work/corpus" "$work/crashes"
  cp fuzz/corpus/"$name"/* "$work/corpus/"
  if "$BUILD/fuzz/$name" "$work/corpus" -max_total_time="$SECONDS_EACH" \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/crashes/" >"$work/log" 2>&1; then
    echo ok >"$work/result"
  else
    echo failed >"$work/result"
  fi
}
export -f run_one
export BUILD SECONDS_EACH FUZZ_OUT
echo "fuzzing ${#names[@]} harnesses for ${SECONDS_EACH} s each, $JOBS at a time (logs in $FUZZ_OUT)"
printf '%s\n' "${names[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'

failed=0
printf '%-24s %10s %8s %7s %7s %7s  %s\n' harness execs exec/s edges features corpus result
for name in "${names[@]}"; do
  work="$FUZZ_OUT/$name"
  log="$work/log"
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  last=$(grep -E "^#[0-9]+[[:space:]]" "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  result=$(cat "$work/result")
  printf '%-24s %10s %8s %7s %7s %7s  %s\n' "$name" "$(stat number_of_executed_units)" \
    "$(stat average_exec_per_sec)" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
  if [ "$result" != ok ]; then
    failed=1
    echo "---- $name: last lines of $log" >&2
    tail -40 "$log" >&2
    ls -l "$work/crashes" >&2
  fi
done
exit "$failed"
