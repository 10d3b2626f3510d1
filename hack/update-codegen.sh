#!/usr/bin/env bash
# Regenerates everything generated from apis/: deepcopy, conversion and defaults (kube_codegen.sh from the
# module cache, at the pinned k8s.io/code-generator), clientset + listers + informers for both groups,
# OpenAPI for the history group, and CRD YAML (controller-gen) into artifacts/crds.
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
