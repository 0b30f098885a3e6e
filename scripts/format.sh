#!/usr/bin/env bash
# Formats the C++ sources with clang-format (the repository's .clang-format,
# Google style), or with --check lists the files that differ and fails.
#   scripts/format.sh           rewrite every tracked *.cc / *.h in place
#   scripts/format.sh --check   change nothing; exit 1 naming unformatted files
# Uses clang-format 14 (Debian 12's; scripts/setup.sh installs it): another
# version may format some constructs differently.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cc' '*.h')
if [ "${1:-}" = "--check" ]; then
  bad=()
  for f in "${files[@]}"; do
    if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
      bad+=("$f")
    fi
  done
  if [ "${#bad[@]}" -gt 0 ]; then
    printf 'not formatted (run scripts/format.sh):\n' >&2
    printf '  %s\n' "${bad[@]}" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files formatted"
  exit 0
fi
clang-format -i "${files[@]}"
