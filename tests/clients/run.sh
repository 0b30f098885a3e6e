#!/usr/bin/env bash
# Runs a node test file (default openai_client_test.mjs: the official
# `openai` npm package, pinned in package.json) against a live `kvstash serve`
# on stories260K. Starts the server on a port of its own choosing (--port 0)
# with a fresh API key, waits for /health, runs the node tests with
# OPENAI_BASE_URL, OPENAI_API_KEY, KVSTASH_ROOT_URL and KVSTASH_BINARY set,
# and stops the server however the tests end. Exits non-zero on any failure.
#
#   tests/clients/run.sh KVSTASH_BINARY [SHARED_DIR] [TEST_FILE] [SERVE_ARG...]
#
# SHARED_DIR: KVSTASH_SHARED_DIR when set, else the argument (or an empty
# one), else ../shared beside the repository. TEST_FILE: a path, or a name in
# tests/clients. SERVE_ARGs are added to `kvstash serve`'s, with {work}
# standing for a scratch folder removed at the end. NODE: the node binary
# (default: node on PATH). Needs Node.js >= 18.19 and `npm ci` run in
# tests/clients (scripts/setup.sh does both); nothing is downloaded here.
# ctest runs it as `openai_client` and `dashboard` (dashboard_test.mjs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:?usage: run.sh KVSTASH_BINARY [SHARED_DIR]}"
shared="${KVSTASH_SHARED_DIR:-${2:-$here/../../../shared}}"
test_file="${3:-openai_client_test.mjs}"
case "$test_file" in */*) ;; *) test_file="$here/$test_file" ;; esac
shift $(($# < 3 ? $# : 3))
node="${NODE:-node}"
model_id="stories260K"
model="$shared/models/stories260K/stories260K.bin"
tokenizer="$shared/models/stories260K/tok512.bin"

fail() { echo "run.sh: $*" >&2; exit 1; }
[ -x "$bin" ] || fail "no kvstash binary at $bin"
[ -f "$model" ] || fail "missing $model (set KVSTASH_SHARED_DIR to the shared/ folder)"
[ -f "$tokenizer" ] || fail "missing $tokenizer"
[ -f "$test_file" ] || fail "no test file $test_file"
command -v "$node" >/dev/null || fail "node not found (bash scripts/setup.sh)"
[ -f "$here/node_modules/openai/package.json" ] ||
  fail "tests/clients/node_modules/openai missing: run 'npm ci' in tests/clients (bash scripts/setup.sh)"

work="$(mktemp -d)"
log="$work/server.log"
serve_args=()
for arg in "$@"; do serve_args+=("${arg//\{work\}/$work}"); done
server_pid=""
tests_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$server_pid" ]; then wait "$server_pid" 2>/dev/null || true; fi
  server_pid=""
}
cleanup() {
  if [ -n "$tests_pid" ]; then kill -TERM "$tests_pid" 2>/dev/null || true; fi
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
show_log() {
  echo "---- kvstash serve log (last 40 lines) ----" >&2
  tail -n 40 "$log" >&2 || true
}

# The key travels in the environment, not on the command line (ps).
key="client-test-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# `timeout` is a backstop: the server dies within 10 minutes even if this
# script is killed with SIGKILL and its trap never runs.
KVSTASH_API_KEY="$key" timeout -k 10 600 "$bin" serve \
  --model "$model" --tokenizer "$tokenizer" --model-id "$model_id" \
  --host 127.0.0.1 --port 0 --threads 2 --kv-cache-mb 64 \
  ${serve_args[@]+"${serve_args[@]}"} >"$log" 2>&1 </dev/null &
server_pid=$!

# The server prints "kvstash: serving NAME on http://HOST:PORT (...)".
port=""
for _ in $(seq 600); do
  port="$(sed -n 's|.* on http://[^ ]*:\([0-9][0-9]*\) .*|\1|p' "$log" | head -n 1)"
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { show_log; fail "kvstash serve exited at start"; }
  sleep 0.1
done
[ -n "$port" ] || { show_log; fail "kvstash serve did not report its port in 60 s"; }
root_url="http://127.0.0.1:$port"

# /health answers 200 once the server takes requests.
healthy=""
for _ in $(seq 300); do
  if "$node" -e 'fetch(process.argv[1], {signal: AbortSignal.timeout(2000)})
      .then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' \
      "$root_url/health" 2>/dev/null; then
    healthy=1
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || { show_log; fail "kvstash serve exited"; }
  sleep 0.2
done
[ -n "$healthy" ] || { show_log; fail "$root_url/health did not answer 200"; }
echo "run.sh: kvstash serve ($model_id) on $root_url; $("$node" --version)," \
  "openai $("$node" -p 'require(process.argv[1]).version' \
  "$here/node_modules/openai/package.json")"

# In the background, so that a signal to this script runs its trap at once.
OPENAI_BASE_URL="$root_url/v1" OPENAI_API_KEY="$key" \
  KVSTASH_ROOT_URL="$root_url" KVSTASH_BINARY="$bin" \
  KVSTASH_MODEL_ID="$model_id" \
  timeout -k 10 300 "$node" --test --test-reporter=spec \
  "$test_file" </dev/null &
tests_pid=$!
status=0
wait "$tests_pid" || status=$?
tests_pid=""
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "run.sh: kvstash serve died during the tests" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then show_log; fi
stop_server
exit "$status"
