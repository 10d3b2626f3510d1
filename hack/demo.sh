#!/usr/bin/env bash
# The one-command demo: a local control plane with kubehistory wired in, a sample GitDestination and
# WatchRule, changes made with kubectl by two users, and the history shown.
#   hack/demo.sh        start (again) and show
#   hack/demo.sh down   stop only what the demo started
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEMO=${DEMO_DIR:-$ROOT/.demo}
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

mkdir -p "$DEMO" bin
go build -o bin/local-plane ./test/cmd/local-plane
if [ "${1:-}" = down ]; then
  bin/local-plane down --dir "$DEMO"
  exit 0
fi

say "Starting etcd, kube-apiserver and kubehistory-apiserver (first run builds the control plane: ~10 min)"
bin/local-plane up --dir "$DEMO"
# shellcheck source=/dev/null
source "$DEMO/env"
k() { echo "+ kubectl $*" >&2; kubectl "$@"; }

say "A bare Git repository as the destination, a GitDestination and a WatchRule for ConfigMaps in 'demo'"
rm -rf "$DEMO/history.git"
git init -q --bare -b main "$DEMO/history.git"
k create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f - <<YAML
apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: demo}
spec:
  url: file://$DEMO/history.git
  branch: main
  commitWindow: 1s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: demo}
spec:
  destinationRef: {name: history}
  rules:
  - apiGroups: [""]
    resources: ["configmaps", "secrets"]
YAML
# alice may edit ConfigMaps in demo and read their history, nothing else.
kubectl apply -f - <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-editor, namespace: demo}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-configmaps, namespace: demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-editor}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-history, namespace: demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubehistory:history-viewer}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
YAML
sleep 2

say "Changes: the admin creates a ConfigMap and a Secret; alice (impersonated with --as) edits the ConfigMap"
k -n demo create configmap web --from-literal=color=blue --from-literal=replicas=2
k -n demo create secret generic db --from-literal=password=s3cr3t-demo-value
k -n demo patch configmap web --as alice -p '{"data":{"color":"green"}}'
k -n demo create configmap scratch --from-literal=x=1 --as alice
k -n demo delete configmap scratch --as alice

say "Waiting for the changes to reach Git and the index"
for _ in $(seq 1 60); do
  n=$(kubectl get resourcechanges -n demo --no-headers 2>/dev/null | wc -l)
  [ "$n" -ge 5 ] && break
  sleep 1
done

say "The history: kubectl get resourcechanges -n demo"
k get resourcechanges -n demo -o wide
say "alice's changes only (field selector)"
k get resourcechanges -n demo --field-selector actor=alice
for actor in admin alice; do
  name=$(kubectl get resourcechanges -n demo --field-selector "actor=$actor,object.name=web" -o name | tail -1)
  if [ -n "$name" ]; then
    say "$actor's last change of configmap web, with its diff and commit: kubectl get $name -o yaml"
    k get -n demo "$name" -o yaml
  fi
done
say "The repository: git log"
git --git-dir "$DEMO/history.git" log --stat --format='%h %an <%ae> %s%n%b' | head -60
say "The Secret's value never reaches Git:"
if git --git-dir "$DEMO/history.git" log -p --all | grep -q s3cr3t-demo-value; then
  echo "FOUND the secret value in Git"; exit 1
else
  echo "git log -p | grep s3cr3t-demo-value: nothing found"
fi

say "Explore"
cat <<TXT
  source $DEMO/env          # KUBECONFIG for the admin
  kubectl get resourcechanges -n demo -w
  kubectl explain resourcechange
  kubectl get repostatuses -n demo
  git --git-dir $DEMO/history.git log -p
Stop everything the demo started: make demo-down
TXT
