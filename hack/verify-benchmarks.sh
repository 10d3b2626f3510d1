#!/usr/bin/env bash
# Fails when a figure in docs/benchmarks.md is stale: every figure table has a "measured at" column
# naming the commit its row was measured at, and every section with such a table names the code under
# its figures ("Code under these figures: `pkg/a` `pkg/b` ..."). A row is stale when that code (its
# non-test Go files, and the benchmark files themselves) changed between the row's commit and HEAD.
# A row whose "measured at" is "(history)" records an earlier step and is not checked.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
doc=docs/benchmarks.md
if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
  if ! git fetch -q --unshallow 2>/dev/null; then
    # Without history the commits the figures name cannot be compared; say so loudly rather than fail a
    # build for how it was cloned. Every full clone (and every developer's) runs the check.
    echo "verify-benchmarks: NOT CHECKED: shallow clone whose history cannot be fetched" >&2
    exit 0
  fi
fi
trim() { local s="$1"; s="${s#"${s%%[![:space:]]*}"}"; printf '%s' "${s%"${s##*[![:space:]]}"}"; }
status=0
tables=0
section=""
code=""
col=-1
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  case "$line" in
    "#"*)
      section="$line"; code=""; col=-1; continue ;;
    "Code under these figures:"*)
      code=$(printf '%s\n' "$line" | grep -o '`[^`]*`' | tr -d '`' | tr '\n' ' '); continue ;;
    "|"*) ;;
    *) col=-1; continue ;;
  esac
  IFS='|' read -r -a cells <<<"$line"
  if [ "$col" -lt 0 ]; then
    # A table's first row is its header: find the "measured at" column.
    for i in "${!cells[@]}"; do
      if [ "$(trim "${cells[$i]}")" = "measured at" ]; then col=$i; fi
    done
    if [ "$col" -ge 0 ]; then
      tables=$((tables + 1))
      if [ -z "$code" ]; then
        echo "$doc:$lineno: section \"$section\" has figures but no \"Code under these figures:\" line" >&2
        status=1
      fi
    else
      col=0 # a table without figures to check (a history of steps): skip its rows
    fi
    continue
  fi
  if [ "$col" -eq 0 ] || [[ "$line" =~ ^\|[-\ |]+\|$ ]]; then
    continue
  fi
  row=$(trim "${cells[1]}")
  commit=$(echo "${cells[$col]:-}" | tr -d '` ' )
  # A row marked "(history)" is an earlier step kept for the record, not a current figure.
  [ "$commit" = "(history)" ] && continue
  if ! [[ "$commit" =~ ^[0-9a-f]{7,40}$ ]] || ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "$doc:$lineno: row \"$row\" names no commit of this repository in its \"measured at\" column (\"$commit\")" >&2
    status=1
    continue
  fi
  # shellcheck disable=SC2086
  changed=$(git diff --name-only "$commit" HEAD -- $code | grep -E '\.go$' | grep -Ev '_test\.go$' || true)
  # shellcheck disable=SC2086
  benches=$(git diff --name-only "$commit" HEAD -- $code | grep -E 'bench_test\.go$' || true)
  if [ -n "$changed$benches" ]; then
    echo "$doc:$lineno: row \"$row\" ($section) was measured at $commit, but the code under it changed since:" >&2
    printf '  %s\n' $changed $benches >&2
    status=1
  fi
done <"$doc"
if [ "$tables" -lt 4 ]; then
  echo "$doc: only $tables tables with a \"measured at\" column; every figure table needs one" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "docs/benchmarks.md has stale figures: re-run the benchmarks named in the section and update the rows (with the commit measured)" >&2
  exit 1
fi
echo "benchmark figures are current ($tables tables)"
