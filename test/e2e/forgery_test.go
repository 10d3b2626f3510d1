package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/test/framework"
)

// TestForeignCommitIsNotTrusted: someone who may push to a destination's repository pushes a commit
// with a forged trailer claiming an impossible resourceVersion for a tracked file. The object is not
// frozen (the next kubectl change still lands in Git), and `index rebuild --from=git` skips the
// commit and says so.
func TestForeignCommitIsNotTrusted(t *testing.T) {
	ctx := context.Background()
	admin := env.plane.AdminKubeconfig
	repo := bareRepo(t, "forgery.git")
	kubectl(t, "create", "namespace", "forgery")
	setup := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: forgery}
spec:
  url: file://%s
  commitWindow: 1s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: forgery}
spec:
  destinationRef: {name: history}
  rules:
  - apiGroups: [""]
    resources: ["configmaps"]
`, repo)
	if _, err := kubectlAs(admin, setup, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitFor(ctx, 30*time.Second, func() error {
		out, err := kubectlAs(admin, "", "get", "gitdestination", "history", "-n", "forgery", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
		if err == nil && out != "True" {
			err = fmt.Errorf("GitDestination Ready=%q", out)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := env.kh.WaitForRules(ctx, framework.Rule{Namespace: "forgery", Name: "configmaps"}); err != nil {
		t.Fatal(err)
	}

	// fileWith waits until the branch holds web's file with want in it, and returns its path.
	fileWith := func(want string) string {
		t.Helper()
		var path string
		if err := framework.WaitFor(ctx, 60*time.Second, func() error {
			out, err := exec.Command("git", "--git-dir", repo, "ls-tree", "-r", "--name-only", "main").CombinedOutput()
			if err != nil {
				return fmt.Errorf("ls-tree: %v: %s", err, out)
			}
			for _, p := range strings.Fields(string(out)) {
				if strings.Contains(p, "forgery") && strings.HasSuffix(p, "/web.yaml") {
					path = p
				}
			}
			if path == "" {
				return fmt.Errorf("no file for configmap forgery/web in:\n%s", out)
			}
			content, err := exec.Command("git", "--git-dir", repo, "show", "main:"+path).CombinedOutput()
			if err != nil || !strings.Contains(string(content), want) {
				return fmt.Errorf("%s does not hold %q: %v\n%s", path, want, err, content)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	kubectl(t, "-n", "forgery", "create", "configmap", "web", "--from-literal=color=blue")
	path := fileWith("blue")

	// The foreign commit: it changes the file and claims the highest possible resourceVersion.
	work := filepath.Join(t.TempDir(), "forger")
	gitRun := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=mallory", "GIT_AUTHOR_EMAIL=mallory@example.com",
			"GIT_COMMITTER_NAME=kubehistory", "GIT_COMMITTER_EMAIL=kubehistory@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+work)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	gitRun("clone", "-q", repo, work)
	if err := os.WriteFile(filepath.Join(work, path), []byte("forged: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitRun("-C", work, "commit", "-q", "-am", "update configmaps forgery/web\n\n"+
		gitrecord.TrailerChangeID+": forged-change\n"+gitrecord.TrailerObjectVersion+": "+path+" 18446744073709551615\n")
	gitRun("-C", work, "push", "-q", "origin", "HEAD:main")

	// Not frozen: a later change of the object still lands in Git.
	kubectl(t, "-n", "forgery", "patch", "configmap", "web", "-p", `{"data":{"color":"green"}}`)
	fileWith("green")

	// The rebuild reads the key from its Secret (written by the server on first start) and skips the
	// foreign commit. It rebuilds into a data directory of its own, so the replica keeps running.
	r := env.kh.Replicas[0]
	bin := r.Args()[0]
	cmd := exec.CommandContext(ctx, bin, "index", "rebuild", "--from=git", "--data-dir="+t.TempDir(),
		"--repository="+repo, "--branch=main", "--destination=forgery/history", "--kubeconfig="+admin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("index rebuild: %v\n%s%s", err, out, stderr.Bytes())
	}
	t.Logf("index rebuild: %s", strings.TrimSpace(string(out)))
	if !strings.Contains(string(out), "skipped 1 foreign commits") {
		t.Errorf("index rebuild did not report the foreign commit: %q", out)
	}
	if !strings.Contains(stderr.String(), "Skipping a commit not sealed by this installation") {
		t.Errorf("index rebuild logged no skipped commit:\n%s", stderr.Bytes())
	}
}
