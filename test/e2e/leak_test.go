package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubehistory/kubehistory/test/framework"
)

// secretValue is a fresh value that occurs nowhere by chance.
func secretValue(t *testing.T, what string) string {
	t.Helper()
	b := make([]byte, 9)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "leak-" + what + "-" + hex.EncodeToString(b)
}

// needles are the forms a value must not take anywhere kubehistory stores or serves: as it is, in
// base64 (a Secret's data, a JSON []byte) and as its unkeyed SHA-256 (reversible by dictionary).
func needles(value string) map[string]string {
	sum := sha256.Sum256([]byte(value))
	return map[string]string{
		"plaintext":      value,
		"base64":         base64.StdEncoding.EncodeToString([]byte(value)),
		"unkeyed sha256": hex.EncodeToString(sum[:]),
	}
}

// leakScanner looks for every needle of every value in what it is given.
type leakScanner struct {
	t      *testing.T
	values map[string]string // value -> how it was written
	found  []string
}

func (s *leakScanner) scan(where string, data []byte) {
	for value, how := range s.values {
		for form, n := range needles(value) {
			if bytes.Contains(data, []byte(n)) {
				s.found = append(s.found, fmt.Sprintf("%s: value written by %q found as %s", where, how, form))
			}
		}
	}
}

// scanGit scans every object of a repository, unreachable ones included, decompressed, and returns
// how many bytes it scanned.
func (s *leakScanner) scanGit(gitDir string) int {
	out, err := exec.Command("git", "--git-dir", gitDir, "cat-file", "--batch-all-objects", "--batch", "--unordered").Output()
	if err != nil {
		s.t.Fatalf("git cat-file in %s: %v", gitDir, err)
	}
	s.scan("git objects of "+gitDir, out)
	return len(out)
}

// scanRepo scans a repository that must hold history (a destination of the test).
func (s *leakScanner) scanRepo(gitDir string) {
	if s.scanGit(gitDir) == 0 {
		s.t.Fatalf("no objects in %s: nothing was scanned", gitDir)
	}
}

// scanDir scans every file under dir as bytes, and every Git repository in it as objects (packs and
// loose objects are compressed).
func (s *leakScanner) scanDir(dir string) int {
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if _, err := os.Stat(filepath.Join(path, "objects")); err == nil {
				if _, err := os.Stat(filepath.Join(path, "HEAD")); err == nil {
					s.scanGit(path)
				}
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		s.scan(path, data)
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return files
}

const leakCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: databases.leak.example.com}
spec:
  group: leak.example.com
  names: {kind: Database, plural: databases, singular: database, listKind: DatabaseList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              password: {type: string}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "kubehistory:server-e2e-leak"}
rules:
- apiGroups: ["leak.example.com"]
  resources: ["databases"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubehistory:server-e2e-leak"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubehistory:server-e2e-leak"}
subjects:
- {kind: ServiceAccount, name: kubehistory-apiserver, namespace: kubehistory-system}
`

// TestSecretValuesNeverStored writes Secret values every way a user does (create, client-side apply
// with its last-applied annotation, stringData patch, replace, delete, a Secret that exists before its
// rule and is seeded, a sensitive field of a custom resource), waits until the history has them all,
// then scans everything kubehistory stores or serves: every file of its data directory (JetStream
// store, KV buckets, bbolt index, Git caches decompressed), every object of the destination repository
// (unreachable ones too), its log, and every ResourceChange, ClusterResourceChange and RepoStatus. No
// value may appear in plaintext, base64 or as its unkeyed SHA-256.
//
// `make test-leak-broken` runs it against a build whose ingest and reconciler publish bodies as
// received; it must fail there.
func TestSecretValuesNeverStored(t *testing.T) {
	ctx := context.Background()
	admin := env.plane.AdminKubeconfig
	ns := "leak"
	repo := bareRepo(t, "leak.git")
	sc := &leakScanner{t: t, values: map[string]string{}}
	value := func(how string) string {
		v := secretValue(t, strings.ReplaceAll(how, " ", "-"))
		sc.values[v] = how
		return v
	}
	kubectl(t, "create", "namespace", ns)
	if _, err := kubectlAs(admin, leakCRD, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/databases.leak.example.com")

	// A Secret that exists before the rule of the destination under test: the reconciler seeds it from
	// a List. A first destination ("pre") tracks the namespace's Secrets already: once its history has
	// the Secret's creation, the audit event has been handled, and the rule applied next cannot match it.
	preRepo := bareRepo(t, "pre.git")
	pre := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: pre, namespace: %[1]s}
spec:
  url: file://%[2]s
  commitWindow: 1s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: pre, namespace: %[1]s}
spec:
  destinationRef: {name: pre}
  rules: [{apiGroups: [""], resources: ["secrets"]}]
`, ns, preRepo)
	if _, err := kubectlAs(admin, pre, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=60s", "gitdestination/pre", "watchrule/pre")
	kubectl(t, "-n", ns, "create", "secret", "generic", "early", "--from-literal=password="+value("seeded"))
	waitForEntries(ctx, t, ns, map[string]int{"create/early": 1})

	setup := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: %[1]s}
spec:
  url: file://%[2]s
  commitWindow: 1s
  sensitivePaths: ["databases.leak.example.com:spec.password"]
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: secrets, namespace: %[1]s}
spec:
  destinationRef: {name: history}
  rules:
  - apiGroups: [""]
    resources: ["secrets"]
  - apiGroups: ["leak.example.com"]
    resources: ["databases"]
`, ns, repo)
	if _, err := kubectlAs(admin, setup, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=60s", "gitdestination/history")
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=60s", "watchrule/secrets")
	// The seed of the Secret that existed before the rule is the signal that the rule is in effect.
	waitForEntries(ctx, t, ns, map[string]int{"seed/early": 1})

	applied := func(stringData string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: applied, namespace: %s}\ntype: Opaque\nstringData: {token: %q}\n", ns, stringData)
	}
	steps := []struct {
		stdin string
		args  []string
	}{
		{"", []string{"-n", ns, "create", "secret", "generic", "created", "--from-literal=password=" + value("create")}},
		{applied(value("apply")), []string{"apply", "-f", "-"}},
		{applied(value("apply again")), []string{"apply", "-f", "-"}},
		{"", []string{"-n", ns, "patch", "secret", "created", "-p", fmt.Sprintf(`{"stringData":{"password":%q}}`, value("stringData patch"))}},
		{fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: created, namespace: %s}\ndata: {password: %s}\n", ns,
			base64.StdEncoding.EncodeToString([]byte(value("replace")))), []string{"replace", "-f", "-"}},
		{"", []string{"-n", ns, "delete", "secret", "created"}},
		{fmt.Sprintf("apiVersion: leak.example.com/v1\nkind: Database\nmetadata: {name: db, namespace: %s}\nspec: {size: 1, password: %q}\n", ns, value("custom resource create")),
			[]string{"apply", "-f", "-"}},
		{"", []string{"-n", ns, "patch", "databases.leak.example.com", "db", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"password":%q}}`, value("custom resource patch"))}},
	}
	for i, s := range steps {
		if out, err := kubectlAs(admin, s.stdin, s.args...); err != nil {
			t.Fatalf("step %d (%v): %v: %s", i, s.args, err, out)
		}
	}
	waitForEntries(ctx, t, ns, map[string]int{"create/created": 1, "create/applied": 1, "update/created": 1, "delete/created": 1, "create/db": 1, "patch/db": 1})

	// Everything kubehistory stores.
	files := 0
	for _, r := range env.kh.Replicas {
		files += sc.scanDir(r.DataDir)
	}
	if files == 0 {
		t.Fatal("no file in the data directories: nothing was scanned")
	}
	sc.scanRepo(repo)
	sc.scanRepo(preRepo)
	// Its log, at the verbosity the suite runs it with.
	logData, err := os.ReadFile(filepath.Join(env.plane.Dir, "kubehistory-apiserver.log"))
	if err != nil {
		t.Fatal(err)
	}
	sc.scan("kubehistory-apiserver log", logData)
	// Everything it serves.
	for _, args := range [][]string{
		{"get", "resourcechanges", "-A", "-o", "json"},
		{"get", "clusterresourcechanges", "-o", "json"},
		{"get", "repostatuses", "-A", "-o", "json"},
		{"get", "gitdestinations,watchrules", "-A", "-o", "json"},
	} {
		sc.scan("kubectl "+strings.Join(args, " "), []byte(kubectl(t, args...)))
	}
	for _, f := range sc.found {
		t.Error(f)
	}
	// The scan found the values where they must be: in the cluster itself (the check is not blind).
	live := kubectl(t, "-n", ns, "get", "secret", "applied", "-o", "yaml")
	var seen bool
	for v, how := range sc.values {
		if how == "apply again" && strings.Contains(live, needles(v)["base64"]) {
			seen = true
		}
	}
	if !seen {
		t.Fatal("the live Secret does not hold the applied value: the needles are wrong")
	}
	// What Git shows instead: keyed fingerprints naming the installation key.
	tree := git(t, repo, "show", "main:"+ns+"/core/secrets/applied.yaml")
	if !strings.Contains(tree, "token: hmac-sha256:") {
		t.Errorf("applied Secret in Git has no keyed fingerprint:\n%s", tree)
	}
	db := git(t, repo, "show", "main:"+ns+"/leak.example.com/databases/db.yaml")
	if !strings.Contains(db, "password: hmac-sha256:") || !strings.Contains(db, "size: 1") {
		t.Errorf("Database in Git: password not fingerprinted or other fields lost:\n%s", db)
	}
}

// waitForEntries waits until the namespace's history holds at least the given number of entries per
// "verb/name".
func waitForEntries(ctx context.Context, t *testing.T, ns string, want map[string]int) {
	t.Helper()
	if err := framework.WaitFor(ctx, 90*time.Second, func() error {
		got := map[string]int{}
		for _, rc := range listChanges(t, env.plane.AdminKubeconfig, ns) {
			got[string(rc.Change.Verb)+"/"+rc.Change.Object.Name]++
		}
		for k, n := range want {
			if got[k] < n {
				return fmt.Errorf("history of %s has %d %s, want %d (all: %v)", ns, got[k], k, n, got)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestObjectSelectorHoldsForSecrets is the README's example rule: Secrets labelled tracked=true. The
// audit policy logs Secrets at Metadata level, so their events carry no labels; the writer fetches
// each object and applies the selector. An unlabelled Secret, created, changed and deleted, leaves no
// trace in Git or the history; a labelled one created after it (the sentinel) is recorded.
func TestObjectSelectorHoldsForSecrets(t *testing.T) {
	ctx := context.Background()
	admin := env.plane.AdminKubeconfig
	ns := "selector"
	repo := bareRepo(t, "selector.git")
	kubectl(t, "create", "namespace", ns)
	setup := fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: %[1]s}
spec:
  url: file://%[2]s
  commitWindow: 1s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: tracked-secrets, namespace: %[1]s}
spec:
  destinationRef: {name: history}
  objectSelector:
    matchLabels: {tracked: "true"}
  rules:
  - apiGroups: [""]
    resources: ["secrets"]
`, ns, repo)
	if _, err := kubectlAs(admin, setup, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=60s", "gitdestination/history", "watchrule/tracked-secrets")

	kubectl(t, "-n", ns, "create", "secret", "generic", "untracked", "--from-literal=k=v1")
	kubectl(t, "-n", ns, "patch", "secret", "untracked", "-p", `{"stringData":{"k":"v2"}}`)
	kubectl(t, "-n", ns, "label", "secret", "untracked", "other=yes")
	kubectl(t, "-n", ns, "delete", "secret", "untracked")
	kubectl(t, "-n", ns, "create", "secret", "generic", "tracked", "--from-literal=k=v1")
	kubectl(t, "-n", ns, "label", "secret", "tracked", "tracked=true")
	// The label makes it tracked: its labelling is the first change in scope (its creation, unlabelled,
	// is not). Both Secrets' events went to the same writer in this order, so once the sentinel is in
	// the history every change of the unlabelled one has been decided.
	waitForEntries(ctx, t, ns, map[string]int{"patch/tracked": 1})
	for _, rc := range listChanges(t, admin, ns) {
		if rc.Change.Object.Name == "untracked" {
			t.Errorf("unlabelled Secret recorded: %s %s", rc.Change.Verb, rc.Name)
		}
	}
	files := git(t, repo, "ls-tree", "-r", "--name-only", "main")
	if strings.Contains(files, "untracked") || !strings.Contains(files, "tracked.yaml") {
		t.Errorf("files in Git: %s", files)
	}
	if log := git(t, repo, "log", "--all", "--format=%B"); strings.Contains(log, "untracked") {
		t.Errorf("commit messages name the unlabelled Secret:\n%s", log)
	}
}
