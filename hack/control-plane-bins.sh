#!/usr/bin/env bash
# Builds the pinned kube-apiserver and etcd from the Go module proxy into a cache folder outside the
# repository, once per version, and prints their paths (KUBE_APISERVER=..., ETCD=...).
#
# The cache is keyed by version: a new pin builds new binaries next to the old ones. A cold build takes
# ~12 minutes on 2 cores (kube-apiserver) plus ~2 minutes (etcd); a warm one is instant.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}
CACHE=${KUBEHISTORY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubehistory}
BIN="$CACHE/bin"
mkdir -p "$BIN"

log() { echo "control-plane-bins: $*" >&2; }

kube_apiserver="$BIN/kube-apiserver-$K8S_VERSION"
etcd="$BIN/etcd-$ETCD_VERSION"

build_kube_apiserver() {
  local work="$CACHE/src/kubernetes-$K8S_VERSION"
  local staging="v0${K8S_VERSION#v1}"
  rm -rf "$work" && mkdir -p "$work"
  log "building kube-apiserver $K8S_VERSION (cold: ~12 min on 2 cores) in $work"
  # Every staging module of k8s.io/kubernetes is replaced with its published tag; the list comes from
  # kubernetes' own go.mod so it stays right when the pin moves.
  local gomod
  gomod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module kubehistory.local/k8s-tools"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" |
      awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
  } >"$work/go.mod"
  cat >"$work/tools.go" <<'EOF'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
EOF
  (cd "$work" && go mod tidy >&2 &&
    go build -o "$kube_apiserver.tmp" \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)" \
      k8s.io/kubernetes/cmd/kube-apiserver >&2)
  mv "$kube_apiserver.tmp" "$kube_apiserver"
}

build_etcd() {
  local work="$CACHE/src/etcd-$ETCD_VERSION"
  rm -rf "$work" && mkdir -p "$work"
  log "building etcd $ETCD_VERSION (cold: ~2 min) in $work"
  cat >"$work/go.mod" <<EOF
module kubehistory.local/etcd-tools

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat >"$work/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
  (cd "$work" && go mod tidy >&2 && go build -o "$etcd.tmp" -ldflags "-s -w" go.etcd.io/etcd/server/v3 >&2)
  mv "$etcd.tmp" "$etcd"
}

[ -x "$etcd" ] || build_etcd
[ -x "$kube_apiserver" ] || build_kube_apiserver

echo "KUBE_APISERVER=$kube_apiserver"
echo "ETCD=$etcd"
