package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/kubehistory/kubehistory/internal/testtools"
)

// TestSOPSDestinationRestoresSecret: a GitDestination asking for SOPS encryption. The Secret's file in
// Git holds no value (plaintext, base64 or unkeyed SHA-256); the standard sops CLI with the age identity
// decrypts it to the cluster's Secret; after the Secret is deleted, `kubectl apply` of the decrypted
// file restores it with the same data.
func TestSOPSDestinationRestoresSecret(t *testing.T) {
	ctx := context.Background()
	sops, err := testtools.Sops()
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	admin := env.plane.AdminKubeconfig
	ns := "sops"
	repo := bareRepo(t, "sops.git")
	kubectl(t, "create", "namespace", ns)
	setup := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: %[1]s}
spec:
  url: file://%[2]s
  commitWindow: 1s
  encryption:
    ageRecipients: [%[3]q]
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: secrets, namespace: %[1]s}
spec:
  destinationRef: {name: history}
  rules: [{apiGroups: [""], resources: ["secrets"]}]
`, ns, repo, id.Recipient().String())
	if _, err := kubectlAs(admin, setup, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=60s", "gitdestination/history", "watchrule/secrets")
	sc := &leakScanner{t: t, values: map[string]string{}}
	v1, v2 := secretValue(t, "sops-1"), secretValue(t, "sops-2")
	sc.values[v1], sc.values[v2] = "sops create", "sops apply"
	kubectl(t, "-n", ns, "create", "secret", "generic", "db", "--from-literal=password="+v1, "--from-literal=user=app")
	secret := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: %s}\nstringData: {password: %q, user: app}\n", ns, v2)
	if out, err := kubectlAs(admin, secret, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	waitForEntries(ctx, t, ns, map[string]int{"create/db": 1, "patch/db": 1})

	file := git(t, repo, "show", "main:"+ns+"/core/secrets/db.yaml")
	sc.scanRepo(repo)
	for _, f := range sc.found {
		t.Error(f)
	}
	path := filepath.Join(t.TempDir(), "db.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sops, "--decrypt", "--input-type", "yaml", "--output-type", "yaml", path)
	cmd.Env = append(os.Environ(), "SOPS_AGE_KEY="+id.String())
	plain, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sops --decrypt: %v\n%s\nfile:\n%s", err, plain, file)
	}
	data := func() map[string]string {
		var s struct {
			Data map[string]string `json:"data"`
		}
		if err := json.Unmarshal([]byte(kubectl(t, "-n", ns, "get", "secret", "db", "-o", "json")), &s); err != nil {
			t.Fatal(err)
		}
		return s.Data
	}
	want := data()
	if !strings.Contains(string(plain), want["password"]) || !strings.Contains(string(plain), want["user"]) {
		t.Fatalf("decrypted file is not the cluster's Secret %v:\n%s", want, plain)
	}
	kubectl(t, "-n", ns, "delete", "secret", "db")
	if out, err := kubectlAs(admin, string(plain), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of the decrypted file: %v: %s", err, out)
	}
	if got := data(); got["password"] != want["password"] || got["user"] != want["user"] {
		t.Fatalf("restored %v, want %v", got, want)
	}
}
