#!/usr/bin/env bash
# Regenerates everything generated from apis/: protobuf (generated.proto and generated.pb.go, go-to-protobuf
# at the pinned k8s.io/code-generator with Debian's protoc), deepcopy, conversion and defaults
# (kube_codegen.sh from the module cache, at the pinned k8s.io/code-generator), clientset + listers +
# informers for both groups, OpenAPI for the history group, and CRD YAML (controller-gen) into
# artifacts/crds.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MODULE=github.com/kubehistory/kubehistory
CACHE=${KUBEHISTORY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubehistory}
CONTROLLER_TOOLS_VERSION=${CONTROLLER_TOOLS_VERSION:-v0.23.0}

# A clean machine has no module cache yet: go list -m prints an empty Dir for a module not downloaded.
go mod download k8s.io/code-generator
CODEGEN_PKG=$(go list -m -f '{{.Dir}}' k8s.io/code-generator)
test -f "$CODEGEN_PKG/kube_codegen.sh" || { echo "k8s.io/code-generator not found in the module cache" >&2; exit 1; }
# shellcheck source=/dev/null
source "$CODEGEN_PKG/kube_codegen.sh"

# Protobuf, as Kubernetes generates k8s.io/api (hack/update-generated-protobuf-dockerized.sh): for every
# package tagged +k8s:protobuf-gen=package, go-to-protobuf writes generated.proto from the Go types (field
# numbers from the types' protobuf struct tags, new fields numbered after the highest, and writes the tags
# back into types.go), protoc runs its protoc-gen-gogo on it, and go-to-protobuf rewrites the result into
# generated.pb.go with no gogo package at run time (--drop-gogo-go, the default). The tools are built from
# the module proxy at the versions of go.mod into the cache. protoc is Debian's protobuf-compiler
# (hack/install-test-deps.sh); the .proto files it imports (apimachinery's, gogo.proto and
# google/protobuf/descriptor.proto) come from the module cache, laid out by import path in a temporary
# directory as go-to-protobuf expects (it runs protoc on <output-dir>/<import path>/generated.proto).
command -v protoc >/dev/null 2>&1 || { echo "protoc not found: run hack/install-test-deps.sh (Debian's protobuf-compiler)" >&2; exit 1; }
CODEGEN_VERSION=$(go list -m -f '{{.Version}}' k8s.io/code-generator)
GOGO_VERSION=$(go list -m -f '{{.Version}}' github.com/gogo/protobuf)
TOOLS_VERSION=$(go list -m -f '{{.Version}}' golang.org/x/tools)
protobuf_bin="$CACHE/bin/go-to-protobuf-$CODEGEN_VERSION-gogo-$GOGO_VERSION-tools-$TOOLS_VERSION"
if [ ! -x "$protobuf_bin/goimports" ]; then
  mkdir -p "$CACHE/bin"
  rm -rf "$protobuf_bin.tmp"
  GOBIN="$protobuf_bin.tmp" go install \
    "k8s.io/code-generator/cmd/go-to-protobuf@$CODEGEN_VERSION" \
    "k8s.io/code-generator/cmd/go-to-protobuf/protoc-gen-gogo@$CODEGEN_VERSION"
  GOBIN="$protobuf_bin.tmp" go install "golang.org/x/tools/cmd/goimports@$TOOLS_VERSION"
  rm -rf "$protobuf_bin"
  mv "$protobuf_bin.tmp" "$protobuf_bin"
fi
go mod download k8s.io/apimachinery "github.com/gogo/protobuf@$GOGO_VERSION"
GOGO_DIR=$(go list -m -f '{{.Dir}}' github.com/gogo/protobuf)
protobuf_gopath=$(mktemp -d)
trap 'rm -rf "$protobuf_gopath"' EXIT
mkdir -p "$protobuf_gopath/${MODULE%/*}" "$protobuf_gopath/k8s.io" "$protobuf_gopath/github.com/gogo"
ln -s "$ROOT" "$protobuf_gopath/$MODULE"
ln -s "$(go list -m -f '{{.Dir}}' k8s.io/apimachinery)" "$protobuf_gopath/k8s.io/apimachinery"
ln -s "$GOGO_DIR" "$protobuf_gopath/github.com/gogo/protobuf"
protobuf_packages=()
while IFS= read -r doc; do
  protobuf_packages+=("$MODULE/$(dirname "$doc")")
done < <(grep -rl --include=doc.go '^// +k8s:protobuf-gen=package' apis | sort)
# apimachinery's packages are inputs only (the leading -): their generated.proto are imported as they
# are in the module cache, never rewritten.
PATH="$protobuf_bin:$PATH" go-to-protobuf \
  --go-header-file hack/boilerplate.go.txt \
  --output-dir "$protobuf_gopath" \
  --proto-import "$protobuf_gopath" \
  --proto-import "$GOGO_DIR/protobuf" \
  --apimachinery-packages "-k8s.io/apimachinery/pkg/util/intstr,-k8s.io/apimachinery/pkg/api/resource,-k8s.io/apimachinery/pkg/runtime/schema,-k8s.io/apimachinery/pkg/runtime,-k8s.io/apimachinery/pkg/apis/meta/v1" \
  --packages "$(IFS=, ; echo "${protobuf_packages[*]}")"

kube::codegen::gen_helpers --boilerplate hack/boilerplate.go.txt apis

kube::codegen::gen_openapi \
  --output-dir pkg/generated/openapi \
  --output-pkg "$MODULE/pkg/generated/openapi" \
  --report-filename hack/api-rule-violations.list --update-report \
  --output-model-name-file zz_generated.model_name.go \
  --boilerplate hack/boilerplate.go.txt \
  apis/history

kube::codegen::gen_client \
  --with-watch \
  --output-dir pkg/generated \
  --output-pkg "$MODULE/pkg/generated" \
  --boilerplate hack/boilerplate.go.txt \
  apis

controller_gen="$CACHE/bin/controller-gen-$CONTROLLER_TOOLS_VERSION"
if [ ! -x "$controller_gen" ]; then
  mkdir -p "$CACHE/bin"
  GOBIN="$CACHE/bin/.controller-gen-$CONTROLLER_TOOLS_VERSION" \
    go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
  mv "$CACHE/bin/.controller-gen-$CONTROLLER_TOOLS_VERSION/controller-gen" "$controller_gen"
fi
rm -f artifacts/crds/config.kubehistory.io_*.yaml
"$controller_gen" crd:allowDangerousTypes=false paths=./apis/config/... output:crd:artifacts:config=artifacts/crds
