package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/test/framework"
)

func git(t *testing.T, gitDir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"--git-dir", gitDir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// bareRepo creates an empty bare repository (branch main) in the test's temp dir: a GitDestination's
// file:// remote.
func bareRepo(t *testing.T, name string) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	return repo
}

func listChanges(t *testing.T, kubeconfig, namespace string, extra ...string) []historyv1alpha1.ResourceChange {
	t.Helper()
	out, err := kubectlAs(kubeconfig, "", append([]string{"get", "resourcechanges", "-n", namespace, "-o", "json"}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	var list historyv1alpha1.ResourceChangeList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// TestAuditToGitToHistory drives kubectl against the real kube-apiserver and checks the whole path:
// audit webhook → filter → JetStream → Git writer → index → history API.
func TestAuditToGitToHistory(t *testing.T) {
	ctx := context.Background()
	admin := env.plane.AdminKubeconfig
	repo := bareRepo(t, "history.git")
	kubectl(t, "create", "namespace", "watched")
	kubectl(t, "create", "namespace", "unwatched")
	setup := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: watched}
spec:
  url: file://%s
  commitWindow: 2s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps-and-secrets, namespace: watched}
spec:
  destinationRef: {name: history}
  rules:
  - apiGroups: [""]
    resources: ["configmaps", "secrets"]
---
apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: unwatched}
spec:
  url: file://%s-unwatched
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-editor, namespace: watched}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "update", "patch", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice, namespace: watched}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-editor}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}, {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}]
`, repo, repo)
	if _, err := kubectlAs(admin, setup, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	alice, err := env.plane.Kubeconfig("alice", "developers")
	if err != nil {
		t.Fatal(err)
	}
	// The writer and the rule cache follow the new objects through informers.
	if err := framework.WaitFor(ctx, 30*time.Second, func() error {
		out, err := kubectlAs(admin, "", "get", "gitdestination", "history", "-n", "watched", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
		if err == nil && out != "True" {
			err = fmt.Errorf("GitDestination Ready=%q", out)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := env.kh.WaitForRules(ctx, framework.Rule{Namespace: "watched", Name: "configmaps-and-secrets"}); err != nil {
		t.Fatal(err)
	}

	cm := func(data string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web, namespace: watched}\ndata: {" + data + "}\n"
	}
	steps := []struct {
		kubeconfig, stdin string
		args              []string
		wantErr           bool
	}{
		{alice, cm("color: blue"), []string{"apply", "-f", "-"}, false},                                                                  // create (apply)
		{alice, "", []string{"-n", "watched", "patch", "configmap", "web", "-p", `{"data":{"color":"green"}}`}, false},                   // patch
		{admin, cm("color: red"), []string{"replace", "-f", "-", "--as", "bob", "--as-group", "ops"}, false},                             // update by bob, impersonated
		{alice, "", []string{"-n", "watched", "get", "configmap", "web"}, false},                                                         // a read: no change
		{alice, cm("color: x"), []string{"create", "-f", "-"}, true},                                                                     // 409 AlreadyExists
		{alice, "", []string{"-n", "watched", "patch", "configmap", "web", "-p", `{"metadata":{"name":"Bad Name"}}`}, true},              // 422/400
		{alice, "", []string{"-n", "watched", "patch", "configmap", "web", "--dry-run=server", "-p", `{"data":{"color":"dry"}}`}, false}, // dry-run
		{admin, "", []string{"-n", "unwatched", "create", "configmap", "other", "--from-literal=a=b"}, false},                            // unwatched namespace
		{admin, "", []string{"-n", "watched", "create", "secret", "generic", "db", "--from-literal=password=e2e-s3cr3t-value"}, false},
		{alice, "", []string{"-n", "watched", "delete", "configmap", "web"}, false}, // delete
		// The sentinel: made after every step, through the same webhook, stream and writer. Once it is
		// recorded, a wrongly accepted dry-run or a duplicate of an earlier step would be too.
		{admin, "", []string{"-n", "watched", "create", "configmap", "sentinel"}, false},
	}
	for i, s := range steps {
		_, err := kubectlAs(s.kubeconfig, s.stdin, s.args...)
		if (err != nil) != s.wantErr {
			t.Fatalf("step %d (%v): err=%v, wantErr=%v", i, s.args, err, s.wantErr)
		}
	}

	type key struct{ verb, name, actor string }
	want := map[key]int{
		{"create", "web", "alice"}:      1,
		{"patch", "web", "alice"}:       1,
		{"update", "web", "bob"}:        1,
		{"create", "db", "admin"}:       1,
		{"delete", "web", "alice"}:      1,
		{"create", "sentinel", "admin"}: 1,
	}
	var items []historyv1alpha1.ResourceChange
	if err := framework.WaitFor(ctx, 90*time.Second, func() error {
		items = listChanges(t, admin, "watched")
		for _, it := range items {
			if it.Object.Name == "sentinel" {
				return nil
			}
		}
		return fmt.Errorf("the sentinel is not recorded yet (%d changes so far)", len(items))
	}); err != nil {
		for _, it := range items {
			t.Logf("got %s %s %s by %s", it.Name, it.Verb, it.Object.Name, it.Actor.Username)
		}
		t.Fatal(err)
	}
	got := map[key]int{}
	for _, it := range items {
		got[key{string(it.Verb), it.Object.Name, it.Actor.Username}]++
		if it.Git.Commit == "" || it.Git.Path == "" || it.AuditID == "" || it.Source != historyv1alpha1.SourceAudit {
			t.Errorf("incomplete record %s: %+v", it.Name, it.Change)
		}
		if it.Actor.Username == "bob" && (it.Actor.Impersonator == nil || it.Actor.Impersonator.Username != "admin") {
			t.Errorf("bob's change does not name admin as impersonator: %+v", it.Actor)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("changes by (verb, object, actor):\n got %v\nwant %v", got, want)
	}
	if other := listChanges(t, admin, "unwatched"); len(other) != 0 {
		t.Errorf("unwatched namespace has %d changes", len(other))
	}
	names := make([]string, len(items))
	for i := range items {
		names[i] = items[i].Name
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("names do not sort by time: %v", names)
	}

	// Git: one commit per actor and window, authored as the actor; the delete removes the file.
	log := git(t, repo, "log", "--format=%an|%cn|%s", "main")
	for _, w := range []string{"alice|kubehistory|", "bob|kubehistory|bob: update configmaps watched/web", "admin|kubehistory|"} {
		if !strings.Contains(log, w) {
			t.Errorf("git log misses %q:\n%s", w, log)
		}
	}
	files := git(t, repo, "ls-tree", "-r", "--name-only", "main")
	if strings.Contains(files, "watched/core/configmaps/web.yaml") || !strings.Contains(files, "watched/core/secrets/db.yaml") {
		t.Errorf("files at main:\n%s", files)
	}
	lastWeb := git(t, repo, "log", "-1", "--format=%an", "main", "--", "watched/core/configmaps/web.yaml")
	if strings.TrimSpace(lastWeb) != "alice" {
		t.Errorf("the delete of web.yaml is authored by %q, want alice", lastWeb)
	}
	// The sanitized file as bob left it: re-appliable, without server-set fields.
	bobsCommit := strings.TrimSpace(git(t, repo, "log", "-1", "--format=%H", "--author=bob", "main"))
	bobs := git(t, repo, "show", bobsCommit+":watched/core/configmaps/web.yaml")
	for _, noise := range []string{"resourceVersion", "uid:", "managedFields", "creationTimestamp", "last-applied-configuration"} {
		if strings.Contains(bobs, noise) {
			t.Errorf("sanitized YAML contains %s:\n%s", noise, bobs)
		}
	}
	// The Secret's value is nowhere in Git.
	for _, args := range [][]string{{"log", "-p", "--all"}, {"grep", "-a", "-e", "e2e-s3cr3t-value", "main"}} {
		out, _ := exec.Command("git", append([]string{"--git-dir", repo}, args...)...).CombinedOutput()
		if strings.Contains(string(out), "e2e-s3cr3t-value") || strings.Contains(string(out), "ZTJlLXMzY3IzdC12YWx1ZQ") {
			t.Errorf("the Secret value appears in git %v", args)
		}
	}

	// History through the aggregator with selectors.
	byAlice := listChanges(t, admin, "watched", "--field-selector", "actor=alice")
	if len(byAlice) != 3 {
		t.Errorf("--field-selector actor=alice: %d items, want 3", len(byAlice))
	}
	patches := listChanges(t, admin, "watched", "-l", "history.kubehistory.io/verb=patch")
	if len(patches) != 1 || patches[0].Object.Name != "web" || !strings.Contains(patches[0].Diff, "+  color: green") {
		t.Errorf("-l verb=patch: %+v", patches)
	}
	if _, err := kubectlAs(admin, "", "get", "resourcechanges", "-n", "watched", "--field-selector", "color=blue"); err == nil || !strings.Contains(err.Error(), "supported") {
		t.Errorf("unknown field selector: want a 400 naming the supported ones, got %v", err)
	}
	head := strings.TrimSpace(git(t, repo, "rev-parse", "main"))
	rs := kubectl(t, "get", "repostatus", "history", "-n", "watched", "-o", "jsonpath={.status.headCommit} {.status.conditions[?(@.type==\"Ready\")].status}")
	if rs != head+" True" {
		t.Errorf("repostatus: %q, git head %s", rs, head)
	}
	// The GitDestination carries the same head once its status caught up (head moves are written at
	// most every few seconds).
	if err := framework.WaitFor(ctx, 30*time.Second, func() error {
		gd := kubectl(t, "get", "gitdestination", "history", "-n", "watched", "-o", "jsonpath={.status.headCommit} {.status.pendingChanges} {.status.conditions[?(@.type==\"Ready\")].reason}")
		if gd != head+" 0 Pushed" {
			return fmt.Errorf("GitDestination status %q, git head %s", gd, head)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
