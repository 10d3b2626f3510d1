package index

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/kubehistory/kubehistory/pkg/change"
)

func repoEntry(ns, name string, rev uint64, branch string) RepoStatusEntry {
	return RepoStatusEntry{Namespace: ns, Name: name, Rev: rev, State: change.RepoState{Branch: branch}}
}

func TestRepoStatuses(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for i, ns := range []string{"a", "ab", "b"} {
		if err := x.PutRepoStatus(repoEntry(ns, "main", uint64(i+1), ns)); err != nil {
			t.Fatal(err)
		}
	}
	got, rev, err := x.ListRepoStatuses("a")
	if err != nil || len(got) != 1 || got[0].State.Branch != "a" || got[0].Rev != 1 || rev != 3 {
		t.Errorf("ListRepoStatuses(a) = %+v, %d, %v", got, rev, err)
	}
	if all, _, _ := x.ListRepoStatuses(""); len(all) != 3 {
		t.Errorf("ListRepoStatuses() = %d items", len(all))
	}
	// An older or equal revision (the follower reading the bucket again) changes nothing.
	if err := x.PutRepoStatus(repoEntry("a", "main", 1, "stale")); err != nil {
		t.Fatal(err)
	}
	if e, ok, _ := x.GetRepoStatus("a", "main"); !ok || e.State.Branch != "a" {
		t.Errorf("an old revision replaced the status: %+v", e)
	}
	if err := x.DeleteRepoStatus("a", "main", 4); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := x.GetRepoStatus("a", "main"); ok {
		t.Error("deleted status still there")
	}
	if _, rev, _ := x.ListRepoStatuses(""); rev != 4 {
		t.Errorf("list revision %d after the delete at 4", rev)
	}
	if err := x.RetainRepoStatuses(map[string]bool{"b/main": true}); err != nil {
		t.Fatal(err)
	}
	if all, _, _ := x.ListRepoStatuses(""); len(all) != 1 || all[0].Namespace != "b" {
		t.Errorf("after retain: %+v", all)
	}
}

// TestRepoStatusEvents: a watch gets every put and delete after it started, in revision order, with
// the previous state; a watch resuming after a kept revision gets the events it missed first; the
// revision survives a reopen, the events do not, so a watch resuming from before it is refused.
func TestRepoStatusEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	x, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.PutRepoStatus(repoEntry("a", "main", 5, "v1")); err != nil {
		t.Fatal(err)
	}
	w := x.WatchRepoStatuses(10)
	for _, e := range []RepoStatusEntry{repoEntry("a", "main", 6, "v2"), repoEntry("a", "main", 6, "dup"), repoEntry("b", "x", 7, "new")} {
		if err := x.PutRepoStatus(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.DeleteRepoStatus("a", "main", 8); err != nil {
		t.Fatal(err)
	}
	type ev struct {
		deleted bool
		name    string
		rev     uint64
		prev    string
	}
	var got []ev
	for i := 0; i < 3; i++ {
		e := <-w.Events()
		p := ""
		if e.Prev != nil {
			p = e.Prev.State.Branch
		}
		got = append(got, ev{e.Deleted, e.Entry.Namespace + "/" + e.Entry.Name, e.Entry.Rev, p})
	}
	want := []ev{{false, "a/main", 6, "v1"}, {false, "b/x", 7, ""}, {true, "a/main", 8, "v2"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("events %+v, want %+v", got, want)
	}
	w.Cancel()
	w.Cancel()

	w2, past, err := x.WatchRepoStatusesAfter(6, 10)
	if err != nil || len(past) != 2 || past[0].Entry.Rev != 7 || past[1].Entry.Rev != 8 {
		t.Errorf("resume after 6: %+v, %v", past, err)
	}
	w2.Cancel()
	// Everything since the index opened is kept.
	if w3, past, err := x.WatchRepoStatusesAfter(4, 10); err != nil || len(past) != 4 || past[0].Entry.Rev != 5 {
		t.Errorf("resume after 4: %+v, %v", past, err)
	} else {
		w3.Cancel()
	}

	// A slow watcher is ended, not waited for.
	slow := x.WatchRepoStatuses(1)
	for rev := uint64(9); rev <= 11; rev++ {
		if err := x.PutRepoStatus(repoEntry("b", "x", rev, "busy")); err != nil {
			t.Fatal(err)
		}
	}
	for range slow.Events() {
	}
	if !errors.Is(slow.Err(), ErrSubscriberTooSlow) {
		t.Errorf("slow watcher: %v", slow.Err())
	}

	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if x, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, rev, _ := x.ListRepoStatuses(""); rev != 11 {
		t.Errorf("revision after reopen %d, want 11", rev)
	}
	if _, _, err := x.WatchRepoStatusesAfter(10, 1); !errors.Is(err, ErrRepoStatusRevisionGone) {
		t.Errorf("resume after a reopen: %v", err)
	}
	if w, past, err := x.WatchRepoStatusesAfter(11, 1); err != nil || len(past) != 0 {
		t.Errorf("resume at the current revision after a reopen: %v %v", past, err)
	} else {
		w.Cancel()
	}
}

// TestRepoStatusLegacyValue: a status stored flat by an earlier version reads with its name and
// revision 0, and the first put replaces it.
func TestRepoStatusLegacyValue(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if err := x.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRepos).Put([]byte("team-a/main"), []byte(`{"metadata":{"name":"main","namespace":"team-a","resourceVersion":"9"},"branch":"main","headCommit":"abc"}`))
	}); err != nil {
		t.Fatal(err)
	}
	e, ok, err := x.GetRepoStatus("team-a", "main")
	if err != nil || !ok || e.Namespace != "team-a" || e.Name != "main" || e.Rev != 0 {
		t.Fatalf("legacy entry %+v %v %v", e, ok, err)
	}
	if err := x.PutRepoStatus(repoEntry("team-a", "main", 3, "main")); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := x.GetRepoStatus("team-a", "main"); e.Rev != 3 {
		t.Errorf("legacy entry not replaced: %+v", e)
	}
}
