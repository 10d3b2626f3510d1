#!/usr/bin/env bash
# Fails when generated files differ from what hack/update-codegen.sh produces from apis/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Regenerate in a copy so a stale tree is reported, not silently fixed.
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$tmp")
(cd "$tmp" && hack/update-codegen.sh >/dev/null)
status=0
for d in pkg/generated artifacts/crds apis hack/api-rule-violations.list; do
  if ! diff -r -u "$ROOT/$d" "$tmp/$d"; then
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "generated files are stale: run hack/update-codegen.sh" >&2
  exit 1
fi
echo "generated files are up to date"
