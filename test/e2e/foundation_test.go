package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/test/framework"
)

type seededEntries struct {
	namespaced, cluster string
}

// seedHistory makes real changes through the whole pipeline before the tests run: a GitDestination
// with a WatchRule on team-a's ConfigMaps and a ClusterWatchRule on Namespaces; alice creates and
// patches a ConfigMap, admin creates namespace team-b impersonating bob.
func seedHistory(ctx context.Context, plane *framework.Plane, dir string) (seededEntries, error) {
	admin := plane.AdminKubeconfig
	repo := filepath.Join(dir, "team-a.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
		return seededEntries{}, fmt.Errorf("git init: %v: %s", err, out)
	}
	setup := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: main, namespace: team-a}
spec:
  url: file://%s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: team-a}
spec:
  destinationRef: {name: main}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
---
apiVersion: config.kubehistory.io/v1alpha1
kind: ClusterWatchRule
metadata: {name: namespaces}
spec:
  destinationRef: {name: main, namespace: team-a}
  rules: [{apiGroups: [""], resources: ["namespaces"], scope: Cluster}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-editor, namespace: team-a}
rules: [{apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "create", "update", "patch", "delete"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-editor}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
`, repo)
	if _, err := framework.KubectlRun(ctx, admin, setup, "apply", "-f", "-"); err != nil {
		return seededEntries{}, err
	}
	alice, err := plane.Kubeconfig("alice", "developers")
	if err != nil {
		return seededEntries{}, err
	}
	if err := framework.WaitFor(ctx, 30*time.Second, func() error {
		out, err := framework.KubectlRun(ctx, admin, "", "get", "gitdestination", "main", "-n", "team-a", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
		if err == nil && out != "True" {
			err = fmt.Errorf("GitDestination Ready=%q", out)
		}
		return err
	}); err != nil {
		return seededEntries{}, err
	}
	if err := env.kh.WaitForRules(ctx, framework.Rule{Namespace: "team-a", Name: "configmaps"}, framework.Rule{Name: "namespaces"}); err != nil {
		return seededEntries{}, err
	}
	for _, args := range [][]string{
		{"--kubeconfig", alice, "-n", "team-a", "create", "configmap", "web", "--from-literal=color=blue"},
		{"--kubeconfig", alice, "-n", "team-a", "patch", "configmap", "web", "-p", `{"data":{"color":"green"}}`},
		{"--kubeconfig", admin, "create", "namespace", "team-b", "--as", "bob", "--as-group", "system:masters"},
	} {
		if out, err := exec.CommandContext(ctx, framework.Kubectl, args...).CombinedOutput(); err != nil {
			return seededEntries{}, fmt.Errorf("kubectl %v: %v: %s", args, err, out)
		}
	}
	var seeded seededEntries
	err = framework.WaitFor(ctx, 90*time.Second, func() error {
		out, err := framework.KubectlRun(ctx, admin, "", "get", "resourcechanges", "-n", "team-a", "--field-selector", "verb=patch", "-o", "name")
		if err != nil || strings.TrimSpace(out) == "" {
			return fmt.Errorf("no patch recorded yet: %v", err)
		}
		seeded.namespaced = strings.TrimPrefix(strings.TrimSpace(out), "resourcechange.history.kubehistory.io/")
		out, err = framework.KubectlRun(ctx, admin, "", "get", "clusterresourcechanges", "--field-selector", "object.name=team-b", "-o", "name")
		if err != nil || strings.TrimSpace(out) == "" {
			return fmt.Errorf("no namespace change recorded yet: %v", err)
		}
		seeded.cluster = strings.TrimPrefix(strings.TrimSpace(out), "clusterresourcechange.history.kubehistory.io/")
		return nil
	})
	return seeded, err
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := framework.KubectlRun(context.Background(), env.plane.AdminKubeconfig, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kubectlAs(kubeconfig, stdin string, args ...string) (string, error) {
	return framework.KubectlRun(context.Background(), kubeconfig, stdin, args...)
}

func TestAPIServiceAvailableWithCABundle(t *testing.T) {
	var svc struct {
		Spec struct {
			CABundle              []byte `json:"caBundle"`
			InsecureSkipTLSVerify bool   `json:"insecureSkipTLSVerify"`
		} `json:"spec"`
		Status struct {
			Conditions []metav1.Condition `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", "apiservice", "v1alpha1.history.kubehistory.io", "-o", "json")), &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.CABundle) == 0 || !strings.Contains(string(svc.Spec.CABundle), "BEGIN CERTIFICATE") {
		t.Errorf("caBundle is not a PEM certificate: %q", svc.Spec.CABundle)
	}
	if svc.Spec.InsecureSkipTLSVerify {
		t.Error("insecureSkipTLSVerify is set")
	}
	available := false
	for _, c := range svc.Status.Conditions {
		if c.Type == "Available" && c.Status == metav1.ConditionTrue {
			available = true
		}
	}
	if !available {
		t.Errorf("APIService not Available: %+v", svc.Status.Conditions)
	}
}

func TestAPIResourcesReadOnly(t *testing.T) {
	out := kubectl(t, "api-resources", "--api-group=history.kubehistory.io", "-o", "wide", "--no-headers")
	want := map[string]bool{"resourcechanges": true, "clusterresourcechanges": false, "repostatuses": true}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want) {
		t.Fatalf("want %d resources, got:\n%s", len(want), out)
	}
	for _, line := range lines {
		fields := strings.Fields(line)
		namespaced, ok := want[fields[0]]
		if !ok {
			t.Errorf("unexpected resource line %q", line)
			continue
		}
		// Everything is watchable, nothing else: never a write verb.
		verbs := " get,list,watch "
		if !strings.Contains(line, verbs) {
			t.Errorf("%s: verbs are not exactly%s: %q", fields[0], verbs, line)
		}
		if strings.Contains(line, " true ") != namespaced {
			t.Errorf("%s: namespaced should be %v: %q", fields[0], namespaced, line)
		}
	}
}

func TestListGetAndTable(t *testing.T) {
	out := kubectl(t, "get", "resourcechanges", "-A")
	for _, want := range []string{env.seeded.namespaced, "team-a", "patch", "configmaps/web", "alice", "TIME", "ACTOR", "COMMIT"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get resourcechanges -A: missing %q in:\n%s", want, out)
		}
	}
	wide := kubectl(t, "get", "resourcechanges", "-n", "team-a", "-o", "wide")
	for _, want := range []string{"SOURCE", "DESTINATION", "team-a/core/configmaps/web.yaml", "audit", "main"} {
		if !strings.Contains(wide, want) {
			t.Errorf("-o wide: missing %q in:\n%s", want, wide)
		}
	}
	if out := kubectl(t, "get", "resourcechanges", "-n", "default"); strings.Contains(out, env.seeded.namespaced) {
		t.Errorf("namespace default shows team-a's change:\n%s", out)
	}
	var rc historyv1alpha1.ResourceChange
	if err := json.Unmarshal([]byte(kubectl(t, "get", "resourcechange", env.seeded.namespaced, "-n", "team-a", "-o", "json")), &rc); err != nil {
		t.Fatal(err)
	}
	if rc.Actor.Username != "alice" || rc.Git.Commit == "" || !strings.Contains(rc.Diff, "+  color: green") || rc.ResourceVersion == "" {
		t.Errorf("get returned %+v", rc)
	}
	if _, err := kubectlAs(env.plane.AdminKubeconfig, "", "get", "resourcechange", "does-not-exist", "-n", "team-a"); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("get of a missing change: want NotFound, got %v", err)
	}
	crc := kubectl(t, "get", "clusterresourcechanges")
	if !strings.Contains(crc, env.seeded.cluster) || !strings.Contains(crc, "bob (via admin)") || !strings.Contains(crc, "namespaces/team-b") {
		t.Errorf("clusterresourcechanges:\n%s", crc)
	}
	rs := kubectl(t, "get", "repostatuses", "-n", "team-a")
	if !strings.Contains(rs, "main") || !strings.Contains(rs, "True") {
		t.Errorf("repostatuses:\n%s", rs)
	}
}

func TestExplain(t *testing.T) {
	// The aggregator fetches the backend's OpenAPI asynchronously after the APIService turns Available.
	var out string
	if err := framework.WaitFor(context.Background(), 90*time.Second, func() error {
		var err error
		out, err = kubectlAs(env.plane.AdminKubeconfig, "", "explain", "resourcechange")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ResourceChange is one persisted change", "actor", "changeTime", "diff", "git", "markers", "verb"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl explain resourcechange: missing %q in:\n%s", want, out)
		}
	}
	out = kubectl(t, "explain", "resourcechange.actor.impersonator")
	if !strings.Contains(out, "username of the impersonating user") {
		t.Errorf("kubectl explain resourcechange.actor.impersonator:\n%s", out)
	}
	out = kubectl(t, "explain", "repostatus.status.pendingChanges")
	if !strings.Contains(out, "how many accepted changes are not in Git yet") {
		t.Errorf("kubectl explain repostatus.status.pendingChanges:\n%s", out)
	}
}

func TestCreateIsRefused(t *testing.T) {
	obj := `apiVersion: history.kubehistory.io/v1alpha1
kind: ResourceChange
metadata: {name: forged, namespace: team-a}
object: {version: v1, resource: configmaps, name: web}
verb: delete
actor: {username: mallory}
source: audit
changeID: forged
changeTime: "2026-11-26T10:00:00.000000Z"
`
	_, err := kubectlAs(env.plane.AdminKubeconfig, obj, "create", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "MethodNotAllowed") && !strings.Contains(err.Error(), "does not allow this method") {
		t.Fatalf("creating a ResourceChange: want MethodNotAllowed, got %v", err)
	}
	if _, err := kubectlAs(env.plane.AdminKubeconfig, "", "delete", "resourcechange", env.seeded.namespaced, "-n", "team-a"); err == nil {
		t.Fatal("deleting a ResourceChange succeeded")
	}
}

func TestWatchRuleValidation(t *testing.T) {
	kubectl(t, "create", "namespace", "rules-test")
	valid := `apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: rules-test}
spec:
  destinationRef: {name: main}
  rules:
  - apiGroups: [""]
    resources: ["configmaps"]
  objectSelector:
    matchExpressions:
    - {key: tier, operator: In, values: [web]}
  ignoreUsers: ["system:serviceaccount:kube-system:some-controller"]
`
	if _, err := kubectlAs(env.plane.AdminKubeconfig, valid, "apply", "-f", "-"); err != nil {
		t.Fatalf("valid WatchRule refused: %v", err)
	}
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown field", strings.Replace(valid, "ignoreUsers:", "ignoredUsers:", 1), `unknown field "spec.ignoredUsers"`},
		{"bad selector operator", strings.Replace(valid, "operator: In", "operator: Equals", 1), "matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"},
		{"In without values", strings.Replace(valid, "operator: In, values: [web]", "operator: In", 1), "values must be non-empty for In and NotIn"},
		{"bad resource name", strings.Replace(valid, `resources: ["configmaps"]`, `resources: ["Config Maps"]`, 1), "spec.rules[0].resources[0]"},
		{"no rules", strings.Replace(valid, "  rules:\n  - apiGroups: [\"\"]\n    resources: [\"configmaps\"]\n", "  rules: []\n", 1), "spec.rules"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			yaml := strings.Replace(tc.yaml, "name: configmaps,", "name: invalid,", 1)
			_, err := kubectlAs(env.plane.AdminKubeconfig, yaml, "apply", "-f", "-")
			if err == nil {
				t.Fatal("invalid WatchRule accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want message containing %q, got %v", tc.want, err)
			}
		})
	}
	if out, _ := kubectlAs(env.plane.AdminKubeconfig, "", "get", "watchrule", "invalid", "-n", "rules-test", "--ignore-not-found"); strings.TrimSpace(out) != "" {
		t.Errorf("an invalid WatchRule was stored: %s", out)
	}

	dest := `apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: main, namespace: rules-test}
spec:
  url: file:///srv/git/history.git
`
	if _, err := kubectlAs(env.plane.AdminKubeconfig, dest, "apply", "-f", "-"); err != nil {
		t.Fatalf("valid GitDestination refused: %v", err)
	}
	var gd struct {
		Spec struct {
			Branch       string `json:"branch"`
			CommitWindow string `json:"commitWindow"`
			OrphanPolicy string `json:"orphanPolicy"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "get", "gitdestination", "main", "-n", "rules-test", "-o", "json")), &gd); err != nil {
		t.Fatal(err)
	}
	if gd.Spec.Branch != "main" || gd.Spec.CommitWindow != "1s" || gd.Spec.OrphanPolicy != "Report" {
		t.Errorf("GitDestination defaults not applied: %+v", gd.Spec)
	}
	if _, err := kubectlAs(env.plane.AdminKubeconfig, strings.Replace(dest, "file:///srv/git/history.git", "ftp://example/x", 1), "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), "url must be") {
		t.Errorf("GitDestination with an ftp URL: want a url error, got %v", err)
	}
	// A ClusterWatchRule of its own: the suite's "namespaces" rule sends Namespace history to team-a for
	// the other tests, and rules-test/main has no repository behind it.
	cwr := `apiVersion: config.kubehistory.io/v1alpha1
kind: ClusterWatchRule
metadata: {name: rules-test-namespaces}
spec:
  destinationRef: {name: main, namespace: rules-test}
  rules:
  - apiGroups: [""]
    resources: ["namespaces"]
    scope: Cluster
`
	t.Cleanup(func() {
		if _, err := kubectlAs(env.plane.AdminKubeconfig, "", "delete", "clusterwatchrule", "rules-test-namespaces", "--ignore-not-found"); err != nil {
			t.Error(err)
		}
	})
	if _, err := kubectlAs(env.plane.AdminKubeconfig, cwr, "apply", "-f", "-"); err != nil {
		t.Fatalf("valid ClusterWatchRule refused: %v", err)
	}
	if _, err := kubectlAs(env.plane.AdminKubeconfig, strings.Replace(cwr, "scope: Cluster", "scope: Everywhere", 1), "apply", "-f", "-"); err == nil || !strings.Contains(err.Error(), "Unsupported value") {
		t.Errorf("ClusterWatchRule with a bad scope: want Unsupported value, got %v", err)
	}
}

func TestRBAC(t *testing.T) {
	ctx := context.Background()
	nobody, err := env.plane.Kubeconfig("nobody")
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := env.plane.Kubeconfig("viewer")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, "create", "rolebinding", "viewer-history", "-n", "team-a", "--clusterrole=kubehistory:history-viewer", "--user=viewer")
	// The RBAC mirror shows a change only to who may read the changed object. (Not the view role: no
	// kube-controller-manager aggregates its rules on the local plane.)
	kubectl(t, "create", "rolebinding", "viewer-configmaps", "-n", "team-a", "--role=configmap-editor", "--user=viewer")
	if _, err := kubectlAs(nobody, "", "get", "resourcechanges", "-n", "team-a"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("user without RBAC: want Forbidden, got %v", err)
	}
	// New bindings reach kube-apiserver's RBAC cache within moments, and a denial cached before (by the
	// delegated authorizer and the RBAC mirror, 10 s each) some seconds later.
	if err := framework.WaitFor(ctx, 45*time.Second, func() error {
		out, err := kubectlAs(viewer, "", "get", "resourcechanges", "-n", "team-a")
		if err == nil && !strings.Contains(out, env.seeded.namespaced) {
			err = fmt.Errorf("viewer lists team-a but misses %s:\n%s", env.seeded.namespaced, out)
		}
		return err
	}); err != nil {
		t.Errorf("user bound to kubehistory:history-viewer cannot list: %v", err)
	}
	if _, err := kubectlAs(viewer, "", "get", "resourcechanges", "-n", "default"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("viewer of team-a listing default: want Forbidden, got %v", err)
	}
}
