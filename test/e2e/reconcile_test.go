package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/test/framework"
)

// TestReconcile runs the reconciler on a control plane of its own (it restarts kubehistory and starves
// the audit webhook, which must touch no other test): objects older than kubehistory and than their rule
// are seeded, a restart changes nothing, a new rule seeds its namespace, a narrowed rule reports orphans
// and a deleted one prunes them, a CRD created after start comes into scope, rules naming a missing
// resource or destination say so until fixed, and changes the audit webhook never delivered are recorded
// as a gap with Git equal to the cluster again.
func TestReconcile(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	plane, err := framework.Start(ctx, framework.Config{Dir: filepath.Join(dir, "plane"), Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	defer plane.Stop()
	t.Cleanup(func() {
		if t.Failed() {
			dumpLog(filepath.Join(plane.Dir, "kubehistory-apiserver.log"))
		}
	})
	admin := plane.AdminKubeconfig
	run := func(t *testing.T, stdin string, args ...string) string {
		t.Helper()
		out, err := framework.KubectlRun(ctx, admin, stdin, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	wait := func(t *testing.T, what string, timeout time.Duration, f func() error) {
		t.Helper()
		if err := framework.WaitFor(ctx, timeout, f); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Objects that exist before kubehistory starts, and so before any rule. (kube-apiserver re-sends
	// their audit batch for ~30 s; by the time recon-b has a rule it has long given up.)
	run(t, "", "create", "namespace", "recon-a")
	run(t, "", "create", "namespace", "recon-b")
	run(t, "", "create", "namespace", "recon-s")
	run(t, "", "-n", "recon-b", "create", "configmap", "keep", "--from-literal=k=keep")
	run(t, "", "-n", "recon-b", "label", "configmap", "keep", "app=keep")
	run(t, "", "-n", "recon-b", "create", "configmap", "drop", "--from-literal=k=drop")

	kh, err := plane.InstallKubehistory(ctx, framework.InstallOptions{ExtraArgs: []string{"--reconcile-interval=3s", "--reconcile-settle=2s", "--gap-grace=10s"}})
	if err != nil {
		t.Fatal(err)
	}
	repo := func(name string) string {
		p := filepath.Join(dir, name+".git")
		if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", p).CombinedOutput(); err != nil {
			t.Fatalf("git init: %v: %s", err, out)
		}
		return p
	}
	repoA, repoB, repoC := repo("a"), repo("b"), repo("c")
	files := func(gitDir string) (map[string]bool, error) {
		out, err := exec.Command("git", "--git-dir", gitDir, "ls-tree", "-r", "--name-only", "main").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("git ls-tree: %v: %s", err, out)
		}
		m := map[string]bool{}
		for _, f := range strings.Fields(string(out)) {
			m[f] = true
		}
		return m, nil
	}
	hasFiles := func(gitDir string, want ...string) func() error {
		return func() error {
			got, err := files(gitDir)
			if err != nil {
				return err
			}
			for _, f := range want {
				if !got[f] {
					return fmt.Errorf("%s not in Git yet (have %v)", f, got)
				}
			}
			return nil
		}
	}
	changes := func(ns string) ([]historyv1alpha1.ResourceChange, error) {
		out, err := framework.KubectlRun(ctx, admin, "", "get", "resourcechanges", "-n", ns, "-o", "json")
		if err != nil {
			return nil, err
		}
		var l historyv1alpha1.ResourceChangeList
		return l.Items, json.Unmarshal([]byte(out), &l)
	}
	ruleStatus := func(ns, name string) (configv1alpha1.RuleStatus, int64, error) {
		out, err := framework.KubectlRun(ctx, admin, "", "get", "watchrule", name, "-n", ns, "-o", "json")
		if err != nil {
			return configv1alpha1.RuleStatus{}, 0, err
		}
		var wr configv1alpha1.WatchRule
		err = json.Unmarshal([]byte(out), &wr)
		return wr.Status, wr.Generation, err
	}
	ready := func(ns, name string, status metav1.ConditionStatus, reason, msg string) func() error {
		return func() error {
			st, gen, err := ruleStatus(ns, name)
			if err != nil {
				return err
			}
			c := meta.FindStatusCondition(st.Conditions, configv1alpha1.ConditionReady)
			if c == nil || c.Status != status || c.Reason != reason || !strings.Contains(c.Message, msg) || st.ObservedGeneration != gen {
				return fmt.Errorf("WatchRule %s/%s status %+v (generation %d), want Ready=%s %s %q", ns, name, st, gen, status, reason, msg)
			}
			return nil
		}
	}
	head := func(t *testing.T, gitDir string) string {
		return strings.TrimSpace(git(t, gitDir, "rev-parse", "main"))
	}

	// Objects that exist before their rule: their audit events reach kubehistory while no rule tracks
	// them. They share a request stream with a sentinel in a tracked namespace: once the sentinel is
	// recorded, their events were delivered (and dropped) too.
	run(t, fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: recon-s}
spec: {url: "file://%s"}
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: recon-s}
spec:
  destinationRef: {name: history}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
`, repo("s")), "apply", "-f", "-")
	wait(t, "sentinel rule ready", 60*time.Second, ready("recon-s", "configmaps", metav1.ConditionTrue, configv1alpha1.ReasonReady, ""))
	run(t, "", "-n", "recon-a", "create", "configmap", "pre-1", "--from-literal=k=one")
	run(t, "", "-n", "recon-a", "create", "configmap", "pre-2", "--from-literal=k=two")
	wait(t, "sentinel recorded", 60*time.Second, func() error {
		if _, err := framework.KubectlRun(ctx, admin, "", "-n", "recon-s", "create", "configmap", "sentinel"); err != nil && !strings.Contains(err.Error(), "already exists") {
			return err
		}
		l, err := changes("recon-s")
		if err != nil || len(l) == 0 {
			return fmt.Errorf("sentinel not recorded yet (%v)", err)
		}
		return nil
	})
	run(t, fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: recon-a}
spec: {url: "file://%s", orphanPolicy: Prune}
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: recon-a}
spec:
  destinationRef: {name: history}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
`, repoA), "apply", "-f", "-")

	t.Run("objects older than kubehistory and the rule are seeded", func(t *testing.T) {
		wait(t, "seed files", 90*time.Second, hasFiles(repoA, "recon-a/core/configmaps/pre-1.yaml", "recon-a/core/configmaps/pre-2.yaml"))
		wait(t, "seed records", 60*time.Second, func() error {
			l, err := changes("recon-a")
			if err != nil {
				return err
			}
			seeds := map[string]bool{}
			for _, c := range l {
				if c.Verb != historyv1alpha1.VerbSeed || c.Source != historyv1alpha1.SourceReconcile ||
					c.Actor.Username != framework.ServiceAccountUser || len(c.Markers) != 0 || c.Git.Commit == "" {
					return fmt.Errorf("unexpected record %+v", c.Change)
				}
				seeds[c.Object.Name] = true
			}
			if len(l) != 2 || !seeds["pre-1"] || !seeds["pre-2"] {
				return fmt.Errorf("records %d %v, want one seed each of pre-1 and pre-2", len(l), seeds)
			}
			return nil
		})
		wait(t, "rule ready", 30*time.Second, ready("recon-a", "configmaps", metav1.ConditionTrue, configv1alpha1.ReasonReady, "tracking 1 resources"))
		st, _, _ := ruleStatus("recon-a", "configmaps")
		if strings.Join(st.TrackedResources, ",") != "configmaps" {
			t.Errorf("trackedResources %v", st.TrackedResources)
		}
		if out := git(t, repoA, "show", "main:recon-a/core/configmaps/pre-1.yaml"); !strings.Contains(out, "k: one") || strings.Contains(out, "resourceVersion") {
			t.Errorf("seeded file:\n%s", out)
		}
	})

	t.Run("a restart changes nothing and a new rule seeds its namespace", func(t *testing.T) {
		before := head(t, repoA)
		recs, err := changes("recon-a")
		if err != nil {
			t.Fatal(err)
		}
		kh.Kill(kh.Replicas[0])
		if err := kh.Restart(ctx, kh.Replicas[0]); err != nil {
			t.Fatal(err)
		}
		run(t, fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: recon-b}
spec: {url: "file://%s"}
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: recon-b}
spec:
  destinationRef: {name: history}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
`, repoB), "apply", "-f", "-")
		wait(t, "recon-b seeded", 90*time.Second, hasFiles(repoB, "recon-b/core/configmaps/keep.yaml", "recon-b/core/configmaps/drop.yaml"))
		// Two passes of the restarted reconciler over recon-a (the first of a leadership term republishes
		// every seed), then its writer has taken in all they published: Git must not have moved.
		wait(t, "two passes over recon-a since the restart", 60*time.Second, func() error {
			text, err := kh.Metrics(ctx, kh.Replicas[0])
			if err != nil {
				return err
			}
			if n, _ := framework.MetricValue(text, "kubehistory_reconcile_syncs_total", map[string]string{"destination": "recon-a/history", "result": "success"}); n < 2 {
				return fmt.Errorf("%v passes over recon-a/history since the restart", n)
			}
			return nil
		})
		wait(t, "recon-a's writer caught up", 60*time.Second, func() error {
			out, err := framework.KubectlRun(ctx, admin, "", "get", "repostatus", "history", "-n", "recon-a", "-o", "jsonpath={.status.pendingChanges}")
			if err == nil && strings.TrimSpace(out) != "0" {
				err = fmt.Errorf("%s changes pending", out)
			}
			return err
		})
		if after := head(t, repoA); after != before {
			t.Errorf("the restart moved recon-a's Git head:\n%s", git(t, repoA, "log", "--format=%an %s", before+"..main"))
		}
		if again, err := changes("recon-a"); err != nil || len(again) != len(recs) {
			t.Errorf("records in recon-a: %d before the restart, %d after (%v)", len(recs), len(again), err)
		}
	})

	t.Run("a narrowed rule reports orphans under orphanPolicy Report", func(t *testing.T) {
		before := head(t, repoB)
		run(t, "", "-n", "recon-b", "patch", "watchrule", "configmaps", "--type=merge", "-p", `{"spec":{"objectSelector":{"matchLabels":{"app":"keep"}}}}`)
		wait(t, "orphans reported", 60*time.Second, func() error {
			out, err := framework.KubectlRun(ctx, admin, "", "get", "repostatus", "history", "-n", "recon-b", "-o", "json")
			if err != nil {
				return err
			}
			var rs historyv1alpha1.RepoStatus
			if err := json.Unmarshal([]byte(out), &rs); err != nil {
				return err
			}
			c := meta.FindStatusCondition(rs.Status.Conditions, "Synced")
			if o := rs.Status.Orphans; len(o) != 1 || o[0].Path != "recon-b/core/configmaps/drop.yaml" || o[0].Reason != historyv1alpha1.OrphanOutOfScope ||
				rs.Status.OrphanCount != 1 || c == nil || c.Status != metav1.ConditionFalse || c.Reason != "OrphansFound" {
				return fmt.Errorf("RepoStatus orphans %+v (count %d), Synced %+v", o, rs.Status.OrphanCount, c)
			}
			return nil
		})
		if after := head(t, repoB); after != before {
			t.Errorf("Report changed Git:\n%s", git(t, repoB, "log", "--format=%an %s", before+"..main"))
		}
	})

	t.Run("a deleted rule's files are pruned under orphanPolicy Prune", func(t *testing.T) {
		before := head(t, repoA)
		run(t, "", "-n", "recon-a", "delete", "watchrule", "configmaps")
		wait(t, "files pruned", 60*time.Second, func() error {
			got, err := files(repoA)
			if err != nil {
				return err
			}
			if len(got) != 0 {
				return fmt.Errorf("files left: %v", got)
			}
			return nil
		})
		log := strings.TrimSpace(git(t, repoA, "log", "--format=%an|%s", before+"..main"))
		if strings.Count(log, "\n") != 0 || !strings.HasPrefix(log, framework.ServiceAccountUser+"|") || !strings.Contains(log, "orphan-delete") {
			t.Errorf("prune commits:\n%s", log)
		}
		wait(t, "orphan-delete records", 60*time.Second, func() error {
			l, err := changes("recon-a")
			if err != nil {
				return err
			}
			var names []string
			for _, c := range l {
				if c.Verb == historyv1alpha1.VerbOrphanDelete && c.Source == historyv1alpha1.SourceReconcile && c.Actor.Username == framework.ServiceAccountUser {
					names = append(names, c.Object.Name)
				}
			}
			sort.Strings(names)
			if strings.Join(names, ",") != "pre-1,pre-2" {
				return fmt.Errorf("orphan-delete records for %v", names)
			}
			return nil
		})
	})

	t.Run("a CRD created after start is tracked; an unknown resource shows until then", func(t *testing.T) {
		run(t, `apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: widgets, namespace: recon-b}
spec:
  destinationRef: {name: history}
  rules: [{apiGroups: ["example.com"], resources: ["widgets"]}]
`, "apply", "-f", "-")
		wait(t, "UnknownResource", 60*time.Second, ready("recon-b", "widgets", metav1.ConditionFalse, configv1alpha1.ReasonUnknownResource,
			`resource "widgets" in group "example.com" is not served by the API server`))
		run(t, `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`, "apply", "-f", "-")
		run(t, "", "wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.example.com")
		run(t, "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: recon-b}\nspec: {size: 3}\n", "apply", "-f", "-")
		wait(t, "widgets tracked", 60*time.Second, ready("recon-b", "widgets", metav1.ConditionTrue, configv1alpha1.ReasonReady, "tracking 1 resources"))
		if st, _, _ := ruleStatus("recon-b", "widgets"); strings.Join(st.TrackedResources, ",") != "widgets.example.com" {
			t.Errorf("trackedResources %v", st.TrackedResources)
		}
		wait(t, "widget in Git", 60*time.Second, hasFiles(repoB, "recon-b/example.com/widgets/w1.yaml"))
	})

	t.Run("a missing destination shows until it exists", func(t *testing.T) {
		run(t, `apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: lost, namespace: recon-b}
spec:
  destinationRef: {name: nowhere}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
`, "apply", "-f", "-")
		wait(t, "DestinationMissing", 60*time.Second, ready("recon-b", "lost", metav1.ConditionFalse, configv1alpha1.ReasonDestinationMissing, "GitDestination recon-b/nowhere not found"))
		run(t, fmt.Sprintf("apiVersion: config.kubehistory.io/v1alpha1\nkind: GitDestination\nmetadata: {name: nowhere, namespace: recon-b}\nspec: {url: \"file://%s\"}\n", repoC), "apply", "-f", "-")
		wait(t, "fixed", 60*time.Second, ready("recon-b", "lost", metav1.ConditionTrue, configv1alpha1.ReasonReady, "recon-b/nowhere"))
		wait(t, "its destination seeded", 60*time.Second, hasFiles(repoC, "recon-b/core/configmaps/keep.yaml", "recon-b/core/configmaps/drop.yaml"))
	})

	t.Run("changes the audit webhook never delivered are recorded as a gap", func(t *testing.T) {
		kh.Kill(kh.Replicas[0])
		run(t, "", "-n", "recon-b", "patch", "configmap", "keep", "-p", `{"data":{"k":"changed-while-down"}}`)
		// kube-apiserver retries a batch for about 30 s (2 s initial backoff here), then drops it and
		// logs the events it dropped: kubehistory must not come back before, or the change arrives.
		id, err := plane.LastAuditID(ctx, func(ev *auditv1.Event) bool {
			return ev.Verb == "patch" && ev.ObjectRef != nil && ev.ObjectRef.Resource == "configmaps" &&
				ev.ObjectRef.Namespace == "recon-b" && ev.ObjectRef.Name == "keep" &&
				ev.RequestObject != nil && strings.Contains(string(ev.RequestObject.Raw), "changed-while-down")
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := plane.WaitAuditDropped(ctx, 2*time.Minute, id); err != nil {
			t.Fatal(err)
		}
		if err := kh.Restart(ctx, kh.Replicas[0]); err != nil {
			t.Fatal(err)
		}
		for _, gitDir := range []string{repoB, repoC} {
			wait(t, "Git equal to the cluster", 60*time.Second, func() error {
				out, err := exec.Command("git", "--git-dir", gitDir, "show", "main:recon-b/core/configmaps/keep.yaml").CombinedOutput()
				if err != nil || !strings.Contains(string(out), "k: changed-while-down") {
					return fmt.Errorf("keep.yaml in %s: %v\n%s", gitDir, err, out)
				}
				return nil
			})
		}
		wait(t, "gap records", 60*time.Second, func() error {
			l, err := changes("recon-b")
			if err != nil {
				return err
			}
			dests := map[string]bool{}
			for _, c := range l {
				if c.Object.Name != "keep" || !strings.Contains(c.Diff, "+  k: changed-while-down") {
					continue
				}
				if c.Verb != historyv1alpha1.VerbSeed || c.Source != historyv1alpha1.SourceReconcile || c.Actor.Username != "" ||
					len(c.Markers) != 1 || c.Markers[0] != historyv1alpha1.MarkerGap {
					return fmt.Errorf("the missed change is recorded as %+v", c.Change)
				}
				dests[c.Git.Destination] = true
			}
			if !dests["history"] || !dests["nowhere"] || len(dests) != 2 {
				return fmt.Errorf("gap records in destinations %v, want history and nowhere", dests)
			}
			return nil
		})
	})
}
