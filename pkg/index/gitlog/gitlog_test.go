package gitlog_test

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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/gitwriter"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/index/follow"
	"github.com/kubehistory/kubehistory/pkg/index/gitlog"
	"github.com/kubehistory/kubehistory/pkg/installkey"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

var dest = change.DestinationRef{Namespace: "kubehistory", Name: "audit.repo"}

type testEnv struct {
	q    *queue.Conn
	n    int
	t0   time.Time
	bare string
}

func newEnv(t *testing.T) *testEnv {
	e, err := queue.StartEmbedded(queue.EmbeddedOptions{DataDir: t.TempDir(), InProcessOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	q, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	if err := queue.EnsureStreams(context.Background(), q, 1); err != nil {
		t.Fatal(err)
	}
	bare := filepath.Join(t.TempDir(), "remote.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "--initial-branch=main", bare).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, out)
	}
	return &testEnv{q: q, t0: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), bare: bare}
}

// publish sends changes the way ingest (audit) and the reconciler (seed) do.
func (e *testEnv) publish(t *testing.T, user, verb, resource, ns, name, rv string, data map[string]string) {
	t.Helper()
	e.n++
	kind := map[string]string{"configmaps": "ConfigMap", "namespaces": "Namespace"}[resource]
	obj := change.Object{Version: "v1", Resource: resource, Kind: kind, Namespace: ns, Name: name, ResourceVersion: rv, UID: "uid-" + name}
	ch := change.Change{Fields: change.Fields{
		Object: obj, Verb: change.Verb(verb),
		Actor:      change.Actor{Username: user, Groups: []string{"system:authenticated", "team-" + user}},
		Source:     change.SourceAudit,
		ChangeTime: metav1.NewMicroTime(e.t0.Add(time.Duration(e.n) * time.Second)),
	}, Destination: dest}
	if verb == string(change.VerbSeed) {
		ch.Source = change.SourceReconcile
		ch.Actor = change.Actor{}
		ch.ChangeID = change.ID(dest, "seed/"+obj.UID+"/"+rv, obj)
	} else {
		ch.AuditID = fmt.Sprintf("audit-%03d", e.n)
		ch.ChangeID = change.ID(dest, ch.AuditID, obj)
	}
	if data != nil {
		o := map[string]any{"apiVersion": "v1", "kind": kind, "metadata": map[string]any{"name": name, "namespace": ns, "resourceVersion": rv, "uid": obj.UID}}
		if ns == "" {
			delete(o["metadata"].(map[string]any), "namespace")
		} else {
			o["data"] = data
		}
		ch.Body, _ = json.Marshal(o)
	}
	body, err := json.Marshal(ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.q.Publish(context.Background(), []queue.Message{{Subject: dest.ChangesSubject(), ID: ch.ChangeID, Data: body}}); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) waitRecords(t *testing.T, want uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := e.q.StreamState(context.Background(), change.HistoryStream)
		if err != nil {
			t.Fatal(err)
		}
		if st.Msgs >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records on the stream, want %d", st.Msgs, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A history written by the real Git writer rebuilds from Git into the records the writer published:
// same change IDs in the same order, objects (but the uid, and the resourceVersion of a file's earlier
// change in the same commit), verbs, actors, sources, audit IDs, commits, paths,
// markers and (where a commit changed a file once) diffs.
func TestRebuildFromGitMatchesTheStream(t *testing.T) {
	e := newEnv(t)
	w, err := gitwriter.New(gitwriter.Config{
		Destination: dest, URL: e.bare, Branch: "main", PathPrefix: "clusters/dev",
		CommitWindow: 200 * time.Millisecond, DataDir: t.TempDir(), Identity: "test",
		RetryInitial: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, Key: testKey, KeyID: testKey.ID(),
	}, e.q, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// Commit 1: alice creates two ConfigMaps and a namespace (cluster-scoped).
	e.publish(t, "alice", "create", "configmaps", "team-a", "web", "10", map[string]string{"a": "1"})
	e.publish(t, "alice", "create", "configmaps", "team-a", "db", "11", map[string]string{"b": "1"})
	e.publish(t, "alice", "create", "namespaces", "", "team-b", "12", map[string]string{})
	e.waitRecords(t, 3)
	// Commits 2 and 3: in one window, bob updates five objects (the subject lists three, the body all)
	// and alice updates web twice (the commit names web once; both change IDs are in its trailers).
	for i := 0; i < 5; i++ {
		e.publish(t, "bob", "update", "configmaps", "team-b", fmt.Sprintf("cm-%d", i), fmt.Sprint(20+i), map[string]string{"v": fmt.Sprint(i)})
	}
	e.publish(t, "alice", "update", "configmaps", "team-a", "web", "30", map[string]string{"a": "2"})
	e.publish(t, "alice", "patch", "configmaps", "team-a", "web", "31", map[string]string{"a": "3"})
	e.waitRecords(t, 10)
	// A seed by the reconciler and a delete.
	e.publish(t, "", "seed", "configmaps", "team-a", "cache", "40", map[string]string{"c": "1"})
	e.waitRecords(t, 11)
	e.publish(t, "system:serviceaccount:ci:deployer", "delete", "configmaps", "team-a", "db", "41", nil)
	e.waitRecords(t, 12)
	cancel()
	<-done
	done <- nil

	fromStream, err := index.Open(filepath.Join(t.TempDir(), "stream.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fromStream.Close()
	if st, err := follow.Rebuild(context.Background(), e.q, fromStream); err != nil || st.Added != 12 {
		t.Fatalf("stream rebuild: %+v, %v", st, err)
	}
	fromGit, err := index.Open(filepath.Join(t.TempDir(), "git.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fromGit.Close()
	// A foreign pusher forges a change in another team's namespace: no record may come of it.
	pushForged(t, e.bare)
	st, err := gitlog.Rebuild(context.Background(), fromGit, gitlog.Options{Repository: e.bare, Branch: "main", Destination: dest, FirstSeq: 1, Key: testKey})
	if err != nil || st.Records != 12 || st.LastSeq != 12 || st.Foreign != 1 {
		t.Fatalf("git rebuild: %+v, %v", st, err)
	}
	st0 := st

	// Under another installation's key every commit is foreign.
	other, err := index.Open(filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if st, err := gitlog.Rebuild(context.Background(), other, gitlog.Options{Repository: e.bare, Branch: "main", Destination: dest, Key: installkey.ForTest("other")}); err != nil || st.Records != 0 || st.Foreign != st0.Commits+1 {
		t.Fatalf("git rebuild under another key: %+v, %v", st, err)
	}

	want := listAll(t, fromStream)
	got := listAll(t, fromGit)
	if len(got) != len(want) {
		t.Fatalf("git rebuild has %d records, the stream %d", len(got), len(want))
	}
	perCommitPath := map[string]int{}
	for _, e := range want {
		perCommitPath[e.Record.Git.Commit+" "+e.Record.Git.Path]++
	}
	for i := range want {
		w, g := want[i].Record, got[i].Record
		if g.ChangeID != w.ChangeID {
			t.Fatalf("record %d: change ID %s, want %s (order differs)", i, g.ChangeID, w.ChangeID)
		}
		if got[i].Seq != uint64(i+1) {
			t.Errorf("record %d has seq %d: the sequences are not synthetic and increasing", i, got[i].Seq)
		}
		wo := w.Object
		wo.UID = "" // Git does not keep the uid: the sanitizer removes it
		if perCommitPath[w.Git.Commit+" "+w.Git.Path] > 1 {
			// A file written twice by one commit has one Object-Version trailer: the final state's.
			wo.ResourceVersion = "31"
		}
		if g.Object != wo {
			t.Errorf("%s: object %+v, want %+v", w.ChangeID, g.Object, wo)
		}
		if g.Cluster != w.Cluster || g.Verb != w.Verb || g.Source != w.Source || g.AuditID != w.AuditID {
			t.Errorf("%s: cluster/verb/source/audit %v %s %s %s, want %v %s %s %s", w.ChangeID, g.Cluster, g.Verb, g.Source, g.AuditID, w.Cluster, w.Verb, w.Source, w.AuditID)
		}
		if g.Actor.Username != w.Actor.Username || strings.Join(g.Actor.Groups, ",") != strings.Join(w.Actor.Groups, ",") {
			t.Errorf("%s: actor %+v, want %+v", w.ChangeID, g.Actor, w.Actor)
		}
		if g.Git.Commit != w.Git.Commit || g.Git.Path != w.Git.Path || g.Git.Branch != w.Git.Branch || g.Git.Destination != w.Git.Destination ||
			g.Git.DestinationNamespace != w.Git.DestinationNamespace || !g.Git.CommittedAt.Equal(w.Git.CommittedAt) {
			t.Errorf("%s: git %+v, want %+v", w.ChangeID, g.Git, w.Git)
		}
		if fmt.Sprint(g.Markers) != fmt.Sprint(w.Markers) {
			t.Errorf("%s: markers %v, want %v", w.ChangeID, g.Markers, w.Markers)
		}
		if perCommitPath[w.Git.Commit+" "+w.Git.Path] == 1 && g.Diff != w.Diff {
			t.Errorf("%s: diff\n%s\nwant\n%s", w.ChangeID, g.Diff, w.Diff)
		}
		if g.ChangeTime.After(w.Git.CommittedAt.Time) || g.ChangeTime.Before(&w.ChangeTime) {
			t.Errorf("%s: change time %s outside [%s, commit time]", w.ChangeID, g.ChangeTime, w.ChangeTime)
		}
	}
	// The twice-changed file: each record carries the commit's diff of it, which spans both changes.
	for _, e := range got {
		if e.Record.Verb == change.VerbPatch && !strings.Contains(e.Record.Diff, "+  a: \"3\"") {
			t.Errorf("patch of web: diff %q lacks the final state", e.Record.Diff)
		}
	}
}

func listAll(t *testing.T, x *index.Index) []index.Entry {
	t.Helper()
	ns, err := x.List(index.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := x.List(index.ListOptions{Cluster: true})
	if err != nil {
		t.Fatal(err)
	}
	all := append(ns.Items, cl.Items...)
	for i := 1; i < len(all); i++ {
		for j := i; j > 0 && all[j].Seq < all[j-1].Seq; j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
	return all
}

// A repository that is not there, or a branch that is not in it, is a clear error.
func TestRebuildErrors(t *testing.T) {
	e := newEnv(t)
	x, err := index.Open(filepath.Join(t.TempDir(), "git.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, err := gitlog.Rebuild(context.Background(), x, gitlog.Options{Repository: e.bare, Branch: "main", Destination: dest, Key: testKey}); err == nil || !strings.Contains(err.Error(), `branch "main" not found`) {
		t.Errorf("empty repository: %v", err)
	}
	if _, err := gitlog.Rebuild(context.Background(), x, gitlog.Options{Repository: "file:///nonexistent/repo.git", Branch: "main", Destination: dest, Key: testKey}); err == nil || !strings.Contains(err.Error(), "cloning") {
		t.Errorf("missing repository: %v", err)
	}
}

// testKey is the installation key of these tests.
var testKey = installkey.ForTest("gitlog")

// pushForged pushes, with the git CLI, a commit that looks like the writer's (a file of team-z and
// trailers claiming a change) but carries no seal.
func pushForged(t *testing.T, bare string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "forger")
	run := func(args ...string) {
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=mallory", "GIT_AUTHOR_EMAIL=mallory@example.com",
			"GIT_COMMITTER_NAME=kubehistory", "GIT_COMMITTER_EMAIL=kubehistory@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run("clone", "-q", bare, dir)
	path := filepath.Join(dir, "clusters/dev/namespaces/team-z/configmaps/forged.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: forged\n  namespace: team-z\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("-C", dir, "add", ".")
	run("-C", dir, "commit", "-q", "-m", "create configmaps team-z/forged\n\n"+
		gitrecord.TrailerChangeID+": forged-1\n"+gitrecord.TrailerObjectVersion+": clusters/dev/namespaces/team-z/configmaps/forged.yaml 18446744073709551615\n")
	run("-C", dir, "push", "-q", "origin", "HEAD:main")
}
