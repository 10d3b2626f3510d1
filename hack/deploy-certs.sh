#!/usr/bin/env bash
# Creates the certificates a cluster install needs and puts them where they go:
#   - a CA and the serving certificate of the history API (for kubehistory-apiserver.kubehistory-system.svc),
#     as Secret kubehistory-serving-cert, and that CA as the APIService's caBundle;
#   - a CA and the audit listener's serving certificate, a CA and the client certificate kube-apiserver
#     presents to it (CN kube-apiserver-audit), as Secret kubehistory-audit-tls;
#   - the files kube-apiserver's audit webhook kubeconfig names (artifacts/deploy/audit/webhook.kubeconfig),
#     in OUT (copy them to /etc/kubernetes/kubehistory on the control-plane nodes).
# Usage: hack/deploy-certs.sh [OUT]   (kubectl must point at the cluster; run after kubectl apply -k)
set -euo pipefail
OUT=${1:-./kubehistory-certs}
NS=kubehistory-system
SVC=kubehistory-apiserver
mkdir -p "$OUT"
cd "$OUT"

ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=$1" -keyout "$1.key" -out "$1.crt" 2>/dev/null; }
leaf() { # name CN CA ext
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 365 -out "$1.crt" -extfile <(printf '%s\n' "$4") 2>/dev/null
  rm -f "$1.csr"
}

ca kubehistory-serving-ca
leaf serving "$SVC" kubehistory-serving-ca "subjectAltName=DNS:$SVC.$NS.svc,DNS:$SVC.$NS.svc.cluster.local
extendedKeyUsage=serverAuth"
ca audit-ca
leaf audit-serving "$SVC" audit-ca "subjectAltName=DNS:$SVC.$NS.svc,DNS:$SVC.$NS.svc.cluster.local
extendedKeyUsage=serverAuth"
ca audit-client-ca
leaf audit-client kube-apiserver-audit audit-client-ca "extendedKeyUsage=clientAuth"

kubectl -n "$NS" create secret tls kubehistory-serving-cert --cert=serving.crt --key=serving.key \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic kubehistory-audit-tls --from-file=tls.crt=audit-serving.crt \
  --from-file=tls.key=audit-serving.key --from-file=client-ca.crt=audit-client-ca.crt \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl patch apiservice v1alpha1.history.kubehistory.io --type=merge \
  -p "{\"spec\":{\"caBundle\":\"$(base64 -w0 < kubehistory-serving-ca.crt)\"}}"
echo "kube-apiserver files for the audit webhook in $OUT: audit-ca.crt audit-client.crt audit-client.key"
