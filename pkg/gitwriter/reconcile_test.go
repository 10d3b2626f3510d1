package gitwriter

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
)

const reconcilerUser = "system:serviceaccount:kubehistory-system:kubehistory-apiserver"

// mkSeed builds a seed as the reconciler publishes it.
func mkSeed(resource, ns, name, rv string, body map[string]interface{}) change.Change {
	c := mkChange(reconcilerUser, "seed", resource, ns, name, rv, body)
	c.Source = change.SourceReconcile
	c.AuditID = ""
	c.Actor = change.Actor{Username: reconcilerUser}
	c.Object.UID = "uid-" + name
	c.ChangeID = change.ID(dest, "seed/uid-"+name+"/"+rv, c.Object)
	return c
}

// mkCheck builds the chunks of one orphan check.
func mkCheck(pass string, grace int64, resources, namespaces, excluded []string, chunks ...[]string) []change.Change {
	var out []change.Change
	for i, paths := range chunks {
		c := change.Change{
			Fields: change.Fields{
				Source: change.SourceReconcile, Actor: change.Actor{Username: reconcilerUser},
				ChangeID:   fmt.Sprintf("check-%s-%d", pass, i),
				ChangeTime: metav1.NewMicroTime(time.Now()),
			},
			Destination: dest,
			OrphanCheck: &change.OrphanCheck{Pass: pass, Chunk: i, Chunks: len(chunks), Expected: paths, GraceSeconds: grace},
		}
		if i == 0 {
			c.OrphanCheck.Resources, c.OrphanCheck.Namespaces, c.OrphanCheck.Excluded = resources, namespaces, excluded
		}
		out = append(out, c)
	}
	return out
}

func data(kv ...string) map[string]interface{} {
	d := map[string]interface{}{}
	for i := 0; i+1 < len(kv); i += 2 {
		d[kv[i]] = kv[i+1]
	}
	return map[string]interface{}{"data": d}
}

func repoStatus(t *testing.T, w *Writer) change.RepoState {
	t.Helper()
	kv, err := w.q.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Get(context.Background(), dest)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestSeedsCommitOnlyWhereGitDiffers: a seed equal to Git makes nothing; a seed of a file Git lacks is
// a plain seed by the reconciler; a seed that finds Git behind (a lost audit batch) is a Gap with an
// unknown actor; a second pass with the same seeds changes nothing, neither commits nor records.
func TestSeedsCommitOnlyWhereGitDiffers(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	r := startWriter(t, testConfig(t, "file://"+remote), q, nil)

	web := mkChange("alice", "create", "configmaps", "team-a", "web", "100", data("color", "blue"))
	db := mkChange("alice", "create", "configmaps", "team-a", "db", "101", data("size", "1"))
	publish(t, q, "", web, db)
	waitRecords(t, q, 2)
	waitAcked(t, q)

	seeds := []change.Change{
		mkSeed("configmaps", "team-a", "web", "100", data("color", "blue")), // equal to Git
		mkSeed("configmaps", "team-a", "api", "90", data("port", "80")),     // Git lacks it
		mkSeed("configmaps", "team-a", "db", "130", data("size", "2")),      // Git is behind
		mkSeed("configmaps", "team-a", "web", "99", data("color", "old")),   // older than Git
	}
	publish(t, q, "", seeds...)
	recs := waitRecords(t, q, 4)
	waitAcked(t, q)
	time.Sleep(500 * time.Millisecond) // a wrong extra record would show up now
	if recs = records(t, q); len(recs) != 4 {
		t.Fatalf("%d records, want 4 (2 audit, 1 seed, 1 gap)", len(recs))
	}
	byID := recordByID(recs)
	if _, ok := byID[seeds[0].ChangeID]; ok {
		t.Error("a seed equal to Git was recorded")
	}
	if _, ok := byID[seeds[3].ChangeID]; ok {
		t.Error("a seed older than Git was recorded")
	}
	api := byID[seeds[1].ChangeID]
	if api.Verb != change.VerbSeed || api.Source != change.SourceReconcile || api.Actor.Username != reconcilerUser || len(api.Markers) != 0 {
		t.Errorf("new-file seed: verb %s source %s actor %q markers %v", api.Verb, api.Source, api.Actor.Username, api.Markers)
	}
	gap := byID[seeds[2].ChangeID]
	if gap.Verb != change.VerbSeed || gap.Actor.Username != "" || len(gap.Markers) != 1 || gap.Markers[0] != change.MarkerGap {
		t.Errorf("gap seed: verb %s actor %q markers %v", gap.Verb, gap.Actor.Username, gap.Markers)
	}
	if !strings.Contains(gap.Diff, `-  size: "1"`) || !strings.Contains(gap.Diff, `+  size: "2"`) {
		t.Errorf("gap diff:\n%s", gap.Diff)
	}

	co := checkout(t, remote)
	log := gitCLI(t, co, "log", "--reverse", "--format=%an|%s")
	want := "alice|alice: create configmaps team-a/web, create configmaps team-a/db\n" +
		reconcilerUser + "|" + reconcilerUser + ": seed configmaps team-a/api\n" +
		"unknown|unknown: seed configmaps team-a/db"
	if log != want {
		t.Fatalf("log:\n%s\nwant:\n%s", log, want)
	}
	if !strings.Contains(gitCLI(t, co, "log", "-1", "--format=%B"), gitrecord.TrailerMarker+": "+gap.ChangeID+" Gap") {
		t.Error("no Gap marker trailer")
	}
	head := gitCLI(t, co, "rev-parse", "HEAD")

	// The next pass (past JetStream's duplicate window: other message IDs) finds Git equal.
	r.stop(t)
	r = startWriter(t, testConfig(t, "file://"+remote), q, nil)
	again := []change.Change{
		mkSeed("configmaps", "team-a", "web", "100", data("color", "blue")),
		mkSeed("configmaps", "team-a", "api", "90", data("port", "80")),
		mkSeed("configmaps", "team-a", "db", "130", data("size", "2")),
	}
	publish(t, q, "pass-2-", again...)
	waitAcked(t, q)
	r.stop(t)
	gitCLI(t, co, "fetch", "-q")
	if h := gitCLI(t, co, "rev-parse", "origin/main"); h != head {
		t.Fatalf("a second pass moved the head:\n%s", gitCLI(t, co, "log", "--format=%an|%s", head+"..origin/main"))
	}
	// Committed seeds are re-published with their change IDs (the index keeps them once); nothing new.
	if ids := recordByID(records(t, q)); len(ids) != 4 {
		t.Fatalf("%d distinct records after the second pass, want 4", len(ids))
	}
}

// TestOrphanCheck: files whose objects the scope does not cover are reported (Report) or deleted in one
// reconcile commit with an orphan-delete record each (Prune); a check in several chunks counts only
// when complete.
func TestOrphanCheck(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	cfg := testConfig(t, "file://"+remote)
	r := startWriter(t, cfg, q, nil)
	publish(t, q, "",
		mkChange("alice", "create", "configmaps", "team-a", "web", "10", data("a", "1")),
		mkChange("alice", "create", "configmaps", "team-a", "gone", "11", data("a", "2")),
		mkChange("alice", "create", "configmaps", "team-a", "unlabelled", "14", data("a", "5")),
		mkChange("alice", "create", "configmaps", "team-b", "other", "12", data("a", "3")),
		mkChange("alice", "create", "namespaces", "", "team-a", "13", map[string]interface{}{}),
	)
	waitRecords(t, q, 5)
	waitAcked(t, q)
	co := checkout(t, remote)
	head := gitCLI(t, co, "rev-parse", "HEAD")

	resources, namespaces, excluded := []string{"/configmaps"}, []string{"team-a"}, []string{"team-a/core/configmaps/unlabelled.yaml"}
	// An incomplete pass (chunk 1 of 2 never comes) decides nothing.
	publish(t, q, "", mkCheck("p0", 0, resources, namespaces, excluded, []string{"team-a/core/configmaps/web.yaml"}, nil)[0])
	waitAcked(t, q)
	if st := repoStatus(t, r.w); len(st.Orphans) != 0 || meta.FindStatusCondition(st.Conditions, ConditionSynced) != nil {
		t.Fatalf("an incomplete check acted: %+v", st)
	}

	// Report: listed, Git untouched.
	publish(t, q, "", mkCheck("p1", 0, resources, namespaces, excluded, []string{"team-a/core/configmaps/web.yaml"}, []string{"unrelated/x.txt"})...)
	waitAcked(t, q)
	var st change.RepoState
	eventually(t, "orphans reported", func() bool { st = repoStatus(t, r.w); return len(st.Orphans) == 4 })
	if st.OrphanCount != 4 {
		t.Errorf("orphanCount %d, want 4", st.OrphanCount)
	}
	want := map[string]string{
		"clusters/dev/team-a/core/configmaps/gone.yaml":       OrphanReasonObjectGone,
		"clusters/dev/team-a/core/configmaps/unlabelled.yaml": OrphanReasonOutOfScope,
		"clusters/dev/team-b/core/configmaps/other.yaml":      OrphanReasonOutOfScope,
		"clusters/dev/_cluster/core/namespaces/team-a.yaml":   OrphanReasonOutOfScope,
	}
	for _, o := range st.Orphans {
		if want[o.Path] != o.Reason {
			t.Errorf("orphan %s reason %s, want %q", o.Path, o.Reason, want[o.Path])
		}
	}
	if c := meta.FindStatusCondition(st.Conditions, ConditionSynced); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonOrphansFound {
		t.Errorf("Synced condition %+v", c)
	}
	gitCLI(t, co, "fetch", "-q")
	if h := gitCLI(t, co, "rev-parse", "origin/main"); h != head {
		t.Fatal("Report changed Git")
	}
	before := len(records(t, q))

	// Prune: one commit by the reconciler, one record per file.
	r.stop(t)
	cfg.OrphanPolicy = configv1alpha1.OrphanPrune
	r = startWriter(t, cfg, q, nil)
	publish(t, q, "", mkCheck("p2", 0, resources, namespaces, excluded, []string{"team-a/core/configmaps/web.yaml"})...)
	recs := waitRecords(t, q, before+4)
	waitAcked(t, q)
	for _, rec := range recs[before:] {
		if rec.Verb != change.VerbOrphanDelete || rec.Source != change.SourceReconcile || rec.Actor.Username != reconcilerUser {
			t.Errorf("orphan record %+v", rec.Fields)
		}
		if rec.Object.Version != "v1" || rec.Object.Kind == "" || !strings.Contains(rec.Diff, "+++ /dev/null") {
			t.Errorf("orphan record object %+v diff:\n%s", rec.Object, rec.Diff)
		}
	}
	gitCLI(t, co, "fetch", "-q")
	if log := gitCLI(t, co, "log", "--format=%an|%s", head+"..origin/main"); strings.Count(log, "\n") != 0 || !strings.HasPrefix(log, reconcilerUser+"|") {
		t.Fatalf("prune commits:\n%s", log)
	}
	if files := gitCLI(t, co, "ls-tree", "-r", "--name-only", "origin/main"); files != "clusters/dev/team-a/core/configmaps/web.yaml" {
		t.Fatalf("files after prune:\n%s", files)
	}
	eventually(t, "synced after prune", func() bool {
		st = repoStatus(t, r.w)
		c := meta.FindStatusCondition(st.Conditions, ConditionSynced)
		return c != nil && c.Status == metav1.ConditionTrue && len(st.Orphans) == 0
	})

	// A grace period: an orphan is acted upon only when checks that far apart all found it.
	publish(t, q, "", mkChange("alice", "create", "configmaps", "team-a", "late", "20", data("a", "4")))
	waitRecords(t, q, before+5)
	publish(t, q, "", mkCheck("p3", 3600, resources, namespaces, excluded, []string{"team-a/core/configmaps/web.yaml"})...)
	waitAcked(t, q)
	if n := len(records(t, q)); n != before+5 {
		t.Fatalf("an orphan inside its grace period was pruned (%d records)", n)
	}
}

// A seed that finds Git behind the cluster is held for GapGrace instead of being recorded as a Gap at
// once: the audit change that explains it (here published while the seed is held, as a re-sent batch
// or a crashed writer's redelivery would be) lands, and the seed then finds Git equal or newer — no
// Gap. A seed that nothing explains is recorded as a Gap once the grace is over.
func TestGapHeldForAuditChange(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	cfg := testConfig(t, "file://"+remote)
	cfg.GapGrace = 3 * time.Second
	startWriter(t, cfg, q, nil)

	db := mkChange("alice", "create", "configmaps", "team-a", "db", "100", data("size", "1"))
	web := mkChange("alice", "create", "configmaps", "team-a", "web", "101", data("color", "blue"))
	publish(t, q, "", db, web)
	waitRecords(t, q, 2)
	waitAcked(t, q)

	late := mkSeed("configmaps", "team-a", "db", "130", data("size", "2"))     // its audit change comes late
	lost := mkSeed("configmaps", "team-a", "web", "140", data("color", "red")) // its audit change never comes
	publish(t, q, "", late, lost)
	// While the seeds are held, the late audit change arrives.
	update := mkChange("bob", "update", "configmaps", "team-a", "db", "130", data("size", "2"))
	publish(t, q, "", update)
	recs := waitRecords(t, q, 4) // 2 creates, bob's update, the Gap of web after the grace
	waitAcked(t, q)
	byID := recordByID(recs)
	if _, ok := byID[late.ChangeID]; ok {
		t.Errorf("the seed explained by bob's update was recorded: %+v", byID[late.ChangeID])
	}
	if u, ok := byID[update.ChangeID]; !ok || u.Actor.Username != "bob" {
		t.Errorf("bob's update: %+v", u)
	}
	gap, ok := byID[lost.ChangeID]
	if !ok || len(gap.Markers) != 1 || gap.Markers[0] != change.MarkerGap {
		t.Fatalf("the unexplained seed is not a Gap: %+v", gap)
	}
	if len(records(t, q)) != 4 {
		t.Fatalf("records: %d, want 4", len(records(t, q)))
	}
}
