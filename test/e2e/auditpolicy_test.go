package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubehistory/kubehistory/test/framework"
)

// TestAuditPolicyLogsNoToken: with the shipped policy (audit-policy --all-resources), kube-apiserver's
// audit of a TokenRequest (`kubectl create token`) and of a TokenReview holds no token, and neither does
// anything kubehistory stored.
func TestAuditPolicyLogsNoToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kc := env.plane.AdminKubeconfig
	// No controller-manager runs on the plane: the ServiceAccount is created here, and the TokenRequest
	// API needs no token controller.
	if _, err := framework.KubectlRun(ctx, kc, "", "-n", "team-a", "create", "serviceaccount", "audit-token-sa"); err != nil {
		t.Fatal(err)
	}
	out, err := framework.KubectlRun(ctx, kc, "", "-n", "team-a", "create", "token", "audit-token-sa")
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(out)
	if len(token) < 100 {
		t.Fatalf("kubectl create token printed %q, not a token", token)
	}
	review := fmt.Sprintf("apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: %s\n", token)
	out, err = framework.KubectlRun(ctx, kc, review, "create", "-f", "-", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "authenticated: true") {
		t.Fatalf("the TokenReview did not authenticate the token:\n%s", out)
	}

	// The log backend is blocking and writes in order: once a later write is in the log, every event
	// of the token calls is too. The marker ConfigMap is that later write.
	marker := fmt.Sprintf("audit-marker-%d", time.Now().UnixNano())
	if _, err := framework.KubectlRun(ctx, kc, "", "-n", "team-a", "create", "configmap", marker); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(env.plane.Dir, framework.AuditLogFile)
	var audit []byte
	if err := framework.WaitFor(ctx, time.Minute, func() error {
		var err error
		if audit, err = os.ReadFile(logPath); err != nil {
			return err
		}
		if !bytes.Contains(audit, []byte(`"name":"`+marker+`"`)) {
			return fmt.Errorf("the marker ConfigMap %s is not in %s yet", marker, logPath)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The token's signature part alone is enough to find any copy of it.
	parts := strings.Split(token, ".")
	needles := []string{token, parts[len(parts)-1]}
	for _, n := range needles {
		if bytes.Contains(audit, []byte(n)) {
			t.Errorf("kube-apiserver's audit log %s holds the token", logPath)
		}
	}
	for _, r := range env.kh.Replicas {
		err := filepath.WalkDir(r.DataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, n := range needles {
				if bytes.Contains(b, []byte(n)) {
					t.Errorf("%s (under kubehistory's --data-dir) holds the token", path)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
