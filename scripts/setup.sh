#!/usr/bin/env bash
# Installs the Debian 12 packages kvstash builds and tests with (see DESIGN.md,
# "Dependencies"). Uses sudo when not run as root.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends \
  g++ cmake ninja-build pkg-config \
  libhwy-dev libcli11-dev nlohmann-json3-dev libpcre2-dev libxxhash-dev \
  libcpp-httplib-dev libhiredis-dev liburing-dev libssl-dev libzstd-dev \
  redis-server \
  redis-tools openssl stunnel4 \
  libgtest-dev libgmock-dev \
  clang libclang-rt-14-dev llvm clang-format

# The client tests (tests/clients, run by ctest as openai_client and
# dashboard): Node.js (Debian 12's is 18), Debian's chromium (driven headless
# by playwright-core for the dashboard) and the npm packages pinned in
# tests/clients/package-lock.json (openai, playwright-core), installed now:
# tests download nothing. A machine that already has node and npm keeps them
# (NodeSource's nodejs, for one, conflicts with Debian's npm package).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get install -y --no-install-recommends nodejs npm
fi
$SUDO apt-get install -y --no-install-recommends chromium
(cd "$(dirname "$0")/../tests/clients" && npm ci --no-audit --no-fund)
