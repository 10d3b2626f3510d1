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
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	versioned "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned"
	"github.com/kubehistory/kubehistory/pkg/generated/informers/externalversions"
	"github.com/kubehistory/kubehistory/test/framework"
)

const statusNS = "status-e2e"

// TestConventionalStatus: GitDestination Ready follows the writer's pushes, so that `kubectl wait
// --for=condition=Ready` passes on a healthy destination and times out, with the push error as the
// condition's message, while the remote refuses pushes (a pre-receive hook that exits 1); RepoStatus
// keeps its state under .status and conditions that kubectl wait reads, is watchable (`kubectl get
// repostatuses -w` prints an update), honours its field selectors, and goes away with its
// GitDestination.
func TestConventionalStatus(t *testing.T) {
	admin := env.plane.AdminKubeconfig
	dir := t.TempDir()
	healthy, frozen := filepath.Join(dir, "healthy.git"), filepath.Join(dir, "frozen.git")
	for _, repo := range []string{healthy, frozen} {
		if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
			t.Fatalf("git init: %v: %s", err, out)
		}
	}
	hook := filepath.Join(frozen, "hooks", "pre-receive")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho 'pushes are frozen' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "create", "namespace", statusNS)
	setup := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: healthy, namespace: %[1]s}
spec: {url: "file://%[2]s", commitWindow: 1s}
---
apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: frozen, namespace: %[1]s}
spec: {url: "file://%[3]s", commitWindow: 1s}
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: to-healthy, namespace: %[1]s}
spec:
  destinationRef: {name: healthy}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: to-frozen, namespace: %[1]s}
spec:
  destinationRef: {name: frozen}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
`, statusNS, healthy, frozen)
	if _, err := kubectlAs(admin, setup, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}

	t.Run("kubectl wait passes on a healthy destination", func(t *testing.T) {
		kubectl(t, "-n", statusNS, "wait", "--for=condition=Ready", "--timeout=120s", "gitdestination/healthy", "watchrule/to-healthy", "watchrule/to-frozen")
		if gen := kubectl(t, "-n", statusNS, "get", "gitdestination", "healthy", "-o", "jsonpath={.metadata.generation} {.status.observedGeneration}"); gen != "1 1" {
			t.Errorf("generation and observedGeneration: %q", gen)
		}
	})

	t.Run("kubectl wait times out while the remote refuses pushes", func(t *testing.T) {
		kubectl(t, "-n", statusNS, "create", "configmap", "web", "--from-literal=color=blue")
		// The signal: the writer tried to push and the status says it failed.
		kubectl(t, "-n", statusNS, "wait", "--for=condition=Ready=False", "--timeout=120s", "gitdestination/frozen")
		got := kubectl(t, "-n", statusNS, "get", "gitdestination", "frozen", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].reason}|{.status.conditions[?(@.type=="Ready")].message}`)
		reason, msg, _ := strings.Cut(got, "|")
		if reason != "PushFailed" || !strings.Contains(msg, "refused the push") || !strings.Contains(msg, "pre-receive hook declined") {
			t.Errorf("Ready condition of the frozen destination: reason %q, message %q", reason, msg)
		}
		out, err := kubectlAs(admin, "", "-n", statusNS, "wait", "--for=condition=Ready", "--timeout=5s", "gitdestination/frozen")
		if err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("kubectl wait on a destination that refuses pushes: err=%v out=%s", err, out)
		}
		// The message is in the wide table, and the RepoStatus has the detail.
		if wide := kubectl(t, "-n", statusNS, "get", "gitdestination", "frozen", "-o", "wide"); !strings.Contains(wide, "PushFailed") || !strings.Contains(wide, "refused the push") {
			t.Errorf("kubectl get gitdestination -o wide:\n%s", wide)
		}
		var rs historyv1alpha1.RepoStatus
		if err := json.Unmarshal([]byte(kubectl(t, "-n", statusNS, "get", "repostatus", "frozen", "-o", "json")), &rs); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rs.Status.LastError, "refused the push") || rs.Status.LastErrorTime == nil || rs.Status.PendingChanges < 1 || rs.Status.OldestPendingTime == nil {
			t.Errorf("RepoStatus of the frozen destination: %+v", rs.Status)
		}
		// The healthy destination recorded the same change, and says so where kubectl wait looks.
		kubectl(t, "-n", statusNS, "wait", "--for=condition=Ready", "--timeout=120s", "repostatus/healthy")
		if err := framework.WaitFor(context.Background(), 60*time.Second, func() error {
			head := strings.TrimSpace(git(t, healthy, "rev-parse", "main"))
			got := kubectl(t, "-n", statusNS, "get", "gitdestination", "healthy", "-o", `jsonpath={.status.headCommit} {.status.conditions[?(@.type=="Ready")].reason}`)
			if got != head+" Pushed" {
				return fmt.Errorf("healthy destination status %q, head %s", got, head)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})

	t.Run("Ready again once the remote accepts pushes", func(t *testing.T) {
		if err := os.Remove(hook); err != nil {
			t.Fatal(err)
		}
		// The writer retries with backoff (at most a minute apart by default).
		kubectl(t, "-n", statusNS, "wait", "--for=condition=Ready", "--timeout=180s", "gitdestination/frozen")
		if files := git(t, frozen, "ls-tree", "-r", "--name-only", "main"); !strings.Contains(files, statusNS+"/core/configmaps/web.yaml") {
			t.Errorf("files in the formerly frozen repository:\n%s", files)
		}
	})

	t.Run("kubectl get repostatuses -w prints an update", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		lines, stderr := kubectlWatch(ctx, t, admin, "get", "repostatuses", "-n", statusNS, "-w", "--output-watch-events")
		// until reads lines until one satisfies ok.
		until := func(what string, ok func(string) bool) string {
			t.Helper()
			for {
				select {
				case line, open := <-lines:
					if !open {
						t.Fatalf("kubectl -w ended before %s: %s", what, stderr.String())
					}
					if ok(line) {
						return line
					}
				case <-ctx.Done():
					t.Fatalf("kubectl -w did not print %s: %s", what, stderr.String())
				}
			}
		}
		header := until("the header", func(l string) bool { return strings.HasPrefix(l, "EVENT") })
		for _, col := range []string{"LAST PUSH", "READY", "REASON"} {
			if !strings.Contains(header, col) {
				t.Errorf("header %q lacks %q", header, col)
			}
		}
		if strings.Contains(header, "-") {
			t.Errorf("a column name with a hyphen: %q", header)
		}
		until("the healthy destination", func(l string) bool { return strings.HasPrefix(l, "ADDED") && strings.Contains(l, "healthy") })
		kubectl(t, "-n", statusNS, "create", "configmap", "while-watching", "--from-literal=a=b")
		line := until("an update of the healthy destination", func(l string) bool { return strings.HasPrefix(l, "MODIFIED") && strings.Contains(l, "healthy") })
		t.Logf("watched: %s", line)
	})

	t.Run("the generated RepoStatus informer syncs and follows updates", func(t *testing.T) {
		for _, contentType := range []string{"application/json", "application/vnd.kubernetes.protobuf"} {
			t.Run(contentType, func(t *testing.T) {
				cfg, err := clientcmd.BuildConfigFromFlags("", admin)
				if err != nil {
					t.Fatal(err)
				}
				cfg.ContentType = contentType
				client, err := versioned.NewForConfig(cfg)
				if err != nil {
					t.Fatal(err)
				}
				factory := externalversions.NewSharedInformerFactoryWithOptions(client, 0, externalversions.WithNamespace(statusNS))
				inf := factory.History().V1alpha1().RepoStatuses()
				informer := inf.Informer()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				factory.Start(ctx.Done())
				defer func() {
					cancel()
					factory.Shutdown()
				}()
				if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
					t.Fatal("the RepoStatus informer did not sync")
				}
				before, err := inf.Lister().RepoStatuses(statusNS).Get("healthy")
				if err != nil {
					t.Fatal(err)
				}
				name := "informer-" + strings.TrimPrefix(contentType[strings.LastIndex(contentType, "/")+1:], "vnd.kubernetes.")
				kubectl(t, "-n", statusNS, "create", "configmap", name, "--from-literal=a=b")
				if err := framework.WaitFor(ctx, 90*time.Second, func() error {
					rs, err := inf.Lister().RepoStatuses(statusNS).Get("healthy")
					if err != nil {
						return err
					}
					head := strings.TrimSpace(git(t, healthy, "rev-parse", "main"))
					if rs.Status.HeadCommit == before.Status.HeadCommit || rs.Status.HeadCommit != head {
						return fmt.Errorf("the informer's RepoStatus head %s (before %s), Git %s", rs.Status.HeadCommit, before.Status.HeadCommit, head)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			})
		}
	})

	t.Run("field selectors are honoured", func(t *testing.T) {
		all := strings.Fields(kubectl(t, "-n", statusNS, "get", "repostatuses", "--field-selector", "status.branch=main", "-o", "name"))
		if len(all) != 2 {
			t.Errorf("status.branch=main: %v", all)
		}
		if none := kubectl(t, "-n", statusNS, "get", "repostatuses", "--field-selector", "status.branch=elsewhere", "-o", "name"); strings.TrimSpace(none) != "" {
			t.Errorf("status.branch=elsewhere: %q", none)
		}
		one := kubectl(t, "-n", statusNS, "get", "repostatuses", "--field-selector", "metadata.name=healthy", "-o", "name")
		if strings.TrimSpace(one) != "repostatus.history.kubehistory.io/healthy" {
			t.Errorf("metadata.name=healthy: %q", one)
		}
		if _, err := kubectlAs(admin, "", "-n", statusNS, "get", "repostatuses", "--field-selector", "branch=main"); err == nil || !strings.Contains(err.Error(), "supported") {
			t.Errorf("an unsupported field selector: want a 400 naming the supported ones, got %v", err)
		}
	})

	t.Run("a deleted GitDestination's RepoStatus is gone", func(t *testing.T) {
		kubectl(t, "-n", statusNS, "get", "repostatus", "frozen")
		kubectl(t, "-n", statusNS, "delete", "watchrule", "to-frozen")
		kubectl(t, "-n", statusNS, "delete", "gitdestination", "frozen")
		kubectl(t, "-n", statusNS, "wait", "--for=delete", "--timeout=120s", "repostatus/frozen")
		if out, err := kubectlAs(admin, "", "-n", statusNS, "get", "repostatus", "frozen"); err == nil || !strings.Contains(err.Error(), "NotFound") {
			t.Errorf("get of a deleted destination's RepoStatus: err=%v out=%s", err, out)
		}
		kubectl(t, "-n", statusNS, "get", "repostatus", "healthy")
	})
}
