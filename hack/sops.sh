#!/usr/bin/env bash
# Builds the sops CLI (https://getsops.io) from the Go module proxy into the cache, once, and prints its
# path. The SOPS tests decrypt kubehistory's encrypted files with it: the standard tool, not ours.
set -euo pipefail
SOPS_VERSION=${SOPS_VERSION:-v3.13.3}
CACHE=${KUBEHISTORY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubehistory}
bin="$CACHE/bin/sops-$SOPS_VERSION"
if [ ! -x "$bin" ]; then
  mkdir -p "$CACHE/bin"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # Outside the repository's module: sops' own go.mod decides its dependencies.
  (cd "$tmp" && GOBIN="$tmp/bin" GOFLAGS=-mod=mod go install "github.com/getsops/sops/v3/cmd/sops@$SOPS_VERSION")
  mv "$tmp/bin/sops" "$bin"
fi
echo "SOPS=$bin"
