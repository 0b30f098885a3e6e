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
  clang libclang-rt-14-dev llvm
