package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/test/framework"
)

const matrixNS = "matrix"

// matrixNamespaces records the test's own namespace, cluster-scoped: a destination in a trusted
// namespace and a ClusterWatchRule on Namespaces (scope Cluster) selecting it by label. It is applied
// before the namespace exists, so that its creation is recorded from the audit event.
const matrixNamespaces = `apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: matrix-namespaces, namespace: kubehistory-system}
spec:
  url: file://%s
  commitWindow: 1s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: ClusterWatchRule
metadata: {name: matrix-namespaces}
spec:
  destinationRef: {name: matrix-namespaces, namespace: kubehistory-system}
  objectSelector:
    matchLabels: {kubehistory.io/e2e: write-matrix}
  rules:
  - apiGroups: [""]
    resources: ["namespaces"]
    scope: Cluster
`

const matrixSetup = `apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: matrix}
spec:
  url: file://%s
  commitWindow: 1s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: matrix, namespace: matrix}
spec:
  destinationRef: {name: history}
  rules:
  - apiGroups: [""]
    resources: ["configmaps"]
  - apiGroups: ["apps"]
    resources: ["deployments"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: editor, namespace: matrix}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
- apiGroups: ["apps"]
  resources: ["deployments", "deployments/scale"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: editors, namespace: matrix}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: editor}
subjects:
- {kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}
- {kind: User, name: bob, apiGroup: rbac.authorization.k8s.io}
- {kind: User, name: dave, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: matrix}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list"]
- apiGroups: ["apps"]
  resources: ["deployments", "deployments/scale"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: readers, namespace: matrix}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- {kind: User, name: carol, apiGroup: rbac.authorization.k8s.io}
`

// entry is one expected history entry of an object: what happened and who did it.
type entry struct{ verb, actor string }

func (e entry) String() string { return e.verb + "/" + e.actor }

// TestWriteMatrix drives every way kubectl writes, as several users, against a namespace whose
// ConfigMaps and Deployments are tracked, then checks the exact history of every object: one entry per
// persisted change, in order, with the right verb and actor, and none for what persisted nothing
// (no-op applies, patches, replaces and scales, a repeated delete, dry-runs, rejected and forbidden
// requests). A last ConfigMap created after every other step is the signal that the history is
// complete.
//
// `make test-matrix-broken` runs it against a build whose ingest keeps no-op writes; it must fail.
func TestWriteMatrix(t *testing.T) {
	ctx := context.Background()
	admin := env.plane.AdminKubeconfig
	repo := bareRepo(t, "matrix.git")
	users := map[string]string{"admin": admin}
	for _, u := range []string{"alice", "bob", "carol"} {
		kc, err := env.plane.Kubeconfig(u, "developers")
		if err != nil {
			t.Fatal(err)
		}
		users[u] = kc
	}
	nsRepo := bareRepo(t, "matrix-namespaces.git")
	if _, err := kubectlAs(admin, fmt.Sprintf(matrixNamespaces, nsRepo), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "wait", "--for=condition=Ready", "--timeout=60s", "clusterwatchrule/matrix-namespaces")
	kubectl(t, "-n", "kubehistory-system", "wait", "--for=condition=Ready", "--timeout=60s", "gitdestination/matrix-namespaces")
	if _, err := kubectlAs(admin, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: "+matrixNS+"\n  labels: {kubehistory.io/e2e: write-matrix}\n", "create", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectlAs(admin, fmt.Sprintf(matrixSetup, repo), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	// Ready is written by the reconciler once the rule is in the informer cache that ingest matches
	// events against (one replica).
	kubectl(t, "-n", matrixNS, "wait", "--for=condition=Ready", "--timeout=60s", "gitdestination/history", "watchrule/matrix")

	cm := func(name string, extra string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s, namespace: %s%s}\n", name, matrixNS, extra)
	}
	withData := func(name, data string) string { return cm(name, "") + "data: {" + data + "}\n" }

	type step struct {
		what  string
		user  string
		stdin string
		args  []string
		// fails is a lower-case substring of the expected error; "" expects success.
		fails string
		// raw: the arguments name no namespace flag (kubectl delete --raw refuses one).
		raw bool
	}
	n := []string{"-n", matrixNS}
	run := func(steps []step) {
		t.Helper()
		for _, s := range steps {
			args := s.args
			if !s.raw {
				args = append(append([]string{}, n...), s.args...)
			}
			out, err := kubectlAs(users[s.user], s.stdin, args...)
			switch {
			case s.fails == "" && err != nil:
				t.Fatalf("%s: %v", s.what, err)
			case s.fails != "" && err == nil:
				t.Fatalf("%s: succeeded, want an error with %q: %s", s.what, s.fails, out)
			case s.fails != "" && !strings.Contains(strings.ToLower(err.Error()), s.fails):
				t.Fatalf("%s: %v, want an error with %q", s.what, err, s.fails)
			}
		}
	}

	// The first change is awaited: it shows the rule in effect before anything else is done.
	run([]step{{what: "create", user: "alice", args: []string{"create", "configmap", "plain", "--from-literal=a=1"}}})
	waitForEntries(ctx, t, matrixNS, map[string]int{"create/plain": 1})

	run([]step{
		{what: "create an existing object (409)", user: "bob", args: []string{"create", "configmap", "plain", "--from-literal=a=1"}, fails: "already exists"},
		{what: "replace", user: "alice", stdin: withData("plain", "a: '2'"), args: []string{"replace", "-f", "-"}},
		{what: "replace with the same content (no-op)", user: "bob", stdin: withData("plain", "a: '2'"), args: []string{"replace", "-f", "-"}},
		{what: "merge patch", user: "alice", args: []string{"patch", "configmap", "plain", "--type=merge", "-p", `{"data":{"b":"1"}}`}},
		{what: "JSON patch", user: "bob", args: []string{"patch", "configmap", "plain", "--type=json", "-p", `[{"op":"replace","path":"/data/b","value":"2"}]`}},
		{what: "strategic merge patch", user: "alice", args: []string{"patch", "configmap", "plain", "-p", `{"data":{"c":"1"}}`}},
		{what: "patch with the same values (no-op)", user: "bob", args: []string{"patch", "configmap", "plain", "--type=merge", "-p", `{"data":{"c":"1"}}`}},
		{what: "label", user: "alice", args: []string{"label", "configmap", "plain", "tier=web"}},
		{what: "annotate", user: "bob", args: []string{"annotate", "configmap", "plain", "note=hello"}},
		{what: "dry-run patch", user: "alice", args: []string{"patch", "configmap", "plain", "--dry-run=server", "-p", `{"data":{"d":"dry"}}`}},
		{what: "invalid patch (422)", user: "alice", args: []string{"patch", "configmap", "plain", "--type=merge", "-p", `{"metadata":{"labels":{"bad key":"x"}}}`}, fails: "invalid"},
		{what: "invalid create (422)", user: "alice", args: []string{"create", "configmap", "Bad_Name", "--from-literal=a=1"}, fails: "invalid"},
		{what: "forbidden patch (403)", user: "carol", args: []string{"patch", "configmap", "plain", "-p", `{"data":{"e":"carol"}}`}, fails: "forbidden"},
		{what: "impersonated patch", user: "admin", args: []string{"patch", "configmap", "plain", "-p", `{"data":{"e":"dave"}}`, "--as", "dave", "--as-group", "matrix-team"}},

		{what: "client-side apply create", user: "alice", stdin: withData("csa", "a: '1'"), args: []string{"apply", "-f", "-"}},
		{what: "client-side apply update", user: "bob", stdin: withData("csa", "a: '2'"), args: []string{"apply", "-f", "-"}},
		{what: "client-side apply unchanged (kubectl sends nothing)", user: "alice", stdin: withData("csa", "a: '2'"), args: []string{"apply", "-f", "-"}},
		{what: "dry-run delete", user: "bob", args: []string{"delete", "configmap", "csa", "--dry-run=server"}},

		{what: "server-side apply create (201)", user: "alice", stdin: withData("ssa", "a: '1'"), args: []string{"apply", "--server-side", "-f", "-"}},
		{what: "server-side apply update", user: "alice", stdin: withData("ssa", "a: '2'"), args: []string{"apply", "--server-side", "-f", "-"}},
		{what: "server-side apply unchanged (no-op)", user: "alice", stdin: withData("ssa", "a: '2'"), args: []string{"apply", "--server-side", "-f", "-"}},
		{what: "server-side apply dry-run", user: "alice", stdin: withData("ssa", "a: '9'"), args: []string{"apply", "--server-side", "--dry-run=server", "-f", "-"}},
		{what: "server-side apply conflict (409)", user: "bob", stdin: withData("ssa", "a: '3'"), args: []string{"apply", "--server-side", "--field-manager=bob-tool", "-f", "-"}, fails: "conflict"},
		{what: "server-side apply forcing the conflict", user: "bob", stdin: withData("ssa", "a: '3'"), args: []string{"apply", "--server-side", "--field-manager=bob-tool", "--force-conflicts", "-f", "-"}},

		{what: "generateName", user: "alice", stdin: "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: gen-, namespace: matrix}\ndata: {a: '1'}\n", args: []string{"create", "-f", "-"}},

		{what: "create with a finalizer", user: "alice", stdin: cm("guarded", ", finalizers: [example.com/hold]"), args: []string{"create", "-f", "-"}},
		{what: "delete held by the finalizer", user: "bob", args: []string{"delete", "configmap", "guarded", "--wait=false"}},
		{what: "delete again (no-op)", user: "bob", args: []string{"delete", "configmap", "guarded", "--wait=false"}},
		{what: "finalizer removal", user: "alice", args: []string{"patch", "configmap", "guarded", "--type=json", "-p", `[{"op":"remove","path":"/metadata/finalizers"}]`}},

		{what: "create sweep-1", user: "alice", args: []string{"create", "configmap", "sweep-1", "--from-literal=a=1"}},
		{what: "create sweep-2", user: "alice", args: []string{"create", "configmap", "sweep-2", "--from-literal=a=1"}},
		{what: "label sweep-1", user: "alice", args: []string{"label", "configmap", "sweep-1", "sweep=yes"}},
		{what: "label sweep-2", user: "alice", args: []string{"label", "configmap", "sweep-2", "sweep=yes"}},
		{what: "deletecollection", user: "bob", args: []string{"delete", "--raw", "/api/v1/namespaces/matrix/configmaps?labelSelector=sweep%3Dyes"}, raw: true},

		{what: "create a Deployment", user: "alice", args: []string{"create", "deployment", "web", "--image=registry.k8s.io/pause:3.10", "--replicas=1"}},
		{what: "scale", user: "bob", args: []string{"scale", "deployment", "web", "--replicas=3"}},
		{what: "scale to the same replicas (no-op)", user: "bob", args: []string{"scale", "deployment", "web", "--replicas=3"}},
		{what: "forbidden scale (403)", user: "carol", args: []string{"scale", "deployment", "web", "--replicas=5"}, fails: "forbidden"},

		{what: "delete --all", user: "bob", args: []string{"delete", "configmaps", "--all", "--wait=false"}},

		// A write of a Namespace is audited with the name as objectRef.namespace too.
		{what: "label the namespace", user: "admin", args: []string{"label", "namespace", matrixNS, "purpose=write-matrix"}, raw: true},
	})
	// The sentinel comes after every other write: once its entry is in the history, so are theirs.
	run([]step{{what: "sentinel", user: "alice", args: []string{"create", "configmap", "sentinel", "--from-literal=a=1"}}})
	waitForEntries(ctx, t, matrixNS, map[string]int{"create/sentinel": 1})

	gen := ""
	items := listChanges(t, admin, matrixNS)
	sort.Slice(items, func(i, j int) bool { return items[i].Name < items[j].Name })
	got := map[string][]entry{}
	for _, it := range items {
		obj := it.Object.Resource + "/" + it.Object.Name
		if strings.HasPrefix(it.Object.Name, "gen-") {
			gen = it.Object.Name
		}
		got[obj] = append(got[obj], entry{string(it.Verb), it.Actor.Username})
		if it.Source != historyv1alpha1.SourceAudit || it.Git.Commit == "" {
			t.Errorf("%s (%s of %s): source %q, commit %q", it.Name, it.Verb, obj, it.Source, it.Git.Commit)
		}
		if it.Diff == "" {
			t.Errorf("%s (%s of %s by %s): empty diff: nothing changed", it.Name, it.Verb, obj, it.Actor.Username)
		}
		if it.Actor.Username == "dave" && (it.Actor.Impersonator == nil || it.Actor.Impersonator.Username != "admin") {
			t.Errorf("dave's change does not name admin as impersonator: %+v", it.Actor)
		}
	}
	if gen == "" {
		t.Error("no entry for the object created with generateName")
	}
	c, u, p, d := "create", "update", "patch", "delete"
	want := map[string][]entry{
		"configmaps/plain":  {{c, "alice"}, {u, "alice"}, {p, "alice"}, {p, "bob"}, {p, "alice"}, {p, "alice"}, {p, "bob"}, {p, "dave"}, {d, "bob"}},
		"configmaps/csa":    {{c, "alice"}, {p, "bob"}, {d, "bob"}},
		"configmaps/ssa":    {{c, "alice"}, {p, "alice"}, {p, "bob"}, {d, "bob"}},
		"configmaps/" + gen: {{c, "alice"}, {d, "bob"}},
		// The delete only marked the object; the finalizer's removal deleted it.
		"configmaps/guarded":  {{c, "alice"}, {u, "bob"}, {d, "alice"}},
		"configmaps/sweep-1":  {{c, "alice"}, {p, "alice"}, {d, "bob"}},
		"configmaps/sweep-2":  {{c, "alice"}, {p, "alice"}, {d, "bob"}},
		"configmaps/sentinel": {{c, "alice"}},
		"deployments/web":     {{c, "alice"}, {p, "bob"}},
	}
	for obj, w := range want {
		if fmt.Sprint(got[obj]) != fmt.Sprint(w) {
			t.Errorf("%s:\n got %v\nwant %v", obj, got[obj], w)
		}
	}
	for obj, g := range got {
		if _, ok := want[obj]; !ok {
			t.Errorf("unexpected entries for %s: %v", obj, g)
		}
	}

	// The namespace itself is cluster-scoped: its ClusterWatchRule (scope Cluster) records its creation
	// and its label from the audit events, as ClusterResourceChanges.
	var nsEntries []string
	if err := framework.WaitFor(ctx, 90*time.Second, func() error {
		out, err := kubectlAs(admin, "", "get", "clusterresourcechanges", "--field-selector", "object.name="+matrixNS+",git.destination=matrix-namespaces",
			"-o", `jsonpath={range .items[*]}{.verb}/{.actor.username}/{.source}/{.object.namespace}{"\n"}{end}`)
		if err != nil {
			return err
		}
		nsEntries = strings.Fields(out)
		if len(nsEntries) < 2 {
			return fmt.Errorf("ClusterResourceChanges of namespace %s so far: %v", matrixNS, nsEntries)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if want := "[create/admin/audit/ patch/admin/audit/]"; fmt.Sprint(nsEntries) != want {
		t.Errorf("ClusterResourceChanges of namespace %s: %v, want %s", matrixNS, nsEntries, want)
	}
}
