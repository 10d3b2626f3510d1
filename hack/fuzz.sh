#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZTIME, default 20s each) on top of its committed seeds.
# A failure leaves the crashing input in the package's testdata/fuzz, to be committed with the fix.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FUZZTIME=${FUZZTIME:-20s}
targets=$(grep -rl --include='*_test.go' '^func Fuzz' apis pkg | sort)
for file in $targets; do
  pkg=./$(dirname "$file")
  for name in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
    echo "== $pkg $name ($FUZZTIME)"
    # -fuzzminimizetime bounds the shrinking of large seeds (the EventList fixtures), which otherwise
    # looks like a hang.
    go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s -parallel 2 2>&1 |
      grep -E '^(fuzz: elapsed|PASS|FAIL|ok|---|\s+)' | tail -12
  done
done
