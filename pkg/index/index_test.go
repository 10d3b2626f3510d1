package index

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
)

func rec(id, ns, name string, at time.Time) change.Record {
	return change.Record{Cluster: ns == "", Change: historyv1alpha1.Change{
		Object:     historyv1alpha1.ChangedObject{Version: "v1", Resource: "configmaps", Namespace: ns, Name: name},
		Verb:       historyv1alpha1.VerbUpdate,
		ChangeID:   id,
		ChangeTime: metav1.NewMicroTime(at),
	}}
}

func TestAddIsIdempotentAndListsInOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	x, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	adds := []struct {
		seq  uint64
		r    change.Record
		want bool
	}{
		{1, rec("id-1", "a", "web", t0), true},
		{2, rec("id-2", "b", "web", t0.Add(time.Second)), true},
		{2, rec("id-2", "b", "web", t0.Add(time.Second)), false}, // redelivered seq
		{3, rec("id-1", "a", "web", t0), false},                  // same change ID under a new seq
		{4, rec("id-4", "a", "db", t0.Add(2*time.Second)), true},
		{5, rec("id-5", "", "team-b", t0.Add(3*time.Second)), true},
	}
	for _, a := range adds {
		got, err := x.Add(a.seq, a.r)
		if err != nil {
			t.Fatal(err)
		}
		if got != a.want {
			t.Errorf("Add(%d, %s) = %v, want %v", a.seq, a.r.ChangeID, got, a.want)
		}
	}
	if _, err := x.Add(6, rec("", "a", "x", t0)); err == nil {
		t.Error("a record without change ID was accepted")
	}
	// Reopen: everything is on disk.
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if x, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if last, _ := x.LastSeq(); last != 5 {
		t.Errorf("LastSeq = %d, want 5", last)
	}
	all, err := x.List(ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Items) != 3 || all.Items[0].Seq != 1 || all.Items[2].Seq != 4 || all.LastSeq != 5 {
		t.Errorf("namespaced list: %+v", all)
	}
	inA, _ := x.List(ListOptions{Namespace: "a", Limit: 1})
	if len(inA.Items) != 1 || inA.Items[0].Record.ChangeID != "id-1" || !inA.More {
		t.Errorf("first page of a: %+v", inA)
	}
	next, _ := x.List(ListOptions{Namespace: "a", AfterSeq: inA.Items[0].Seq, Limit: 1})
	if len(next.Items) != 1 || next.Items[0].Record.ChangeID != "id-4" || next.More {
		t.Errorf("second page of a: %+v", next)
	}
	cl, _ := x.List(ListOptions{Cluster: true})
	if len(cl.Items) != 1 || cl.Items[0].Namespace() != "" {
		t.Errorf("cluster list: %+v", cl)
	}
	e, found, err := x.Get(false, "b", all.Items[1].Name)
	if err != nil || !found || e.Record.ChangeID != "id-2" {
		t.Errorf("Get: %+v %v %v", e, found, err)
	}
	if _, found, _ := x.Get(false, "a", all.Items[1].Name); found {
		t.Error("Get found b's change in namespace a")
	}
	if n1, n2 := all.Items[0].Name, all.Items[1].Name; n1 >= n2 {
		t.Errorf("names do not sort by time: %s >= %s", n1, n2)
	}
}

func TestRepoStatuses(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for _, ns := range []string{"a", "ab", "b"} {
		if err := x.PutRepoStatus(&historyv1alpha1.RepoStatus{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "main"}, Branch: ns}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := x.ListRepoStatuses("a")
	if err != nil || len(got) != 1 || got[0].Branch != "a" {
		t.Errorf("ListRepoStatuses(a) = %+v, %v", got, err)
	}
	if all, _ := x.ListRepoStatuses(""); len(all) != 3 {
		t.Errorf("ListRepoStatuses() = %d items", len(all))
	}
}

func TestSnapshotAndCompact(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for seq := uint64(1); seq <= 10; seq++ {
		if _, err := x.Add(seq, rec(fmt.Sprintf("id-%d", seq), "a", "web", t0.Add(time.Duration(seq)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := x.List(ListOptions{MaxSeq: 6, AfterSeq: 2, Limit: 3})
	if err != nil || len(snap.Items) != 3 || snap.Items[2].Seq != 5 || !snap.More || snap.LastSeq != 6 || snap.Head != 10 {
		t.Errorf("snapshot page: %+v %v", snap, err)
	}
	if last, _ := x.List(ListOptions{MaxSeq: 6, AfterSeq: 5, Limit: 3}); len(last.Items) != 1 || last.More {
		t.Errorf("last snapshot page: %+v", last)
	}
	removed, err := x.Compact(4)
	if err != nil || removed != 4 {
		t.Fatalf("Compact(4) = %d, %v", removed, err)
	}
	all, _ := x.List(ListOptions{})
	if len(all.Items) != 6 || all.Items[0].Seq != 5 || all.Compacted != 4 {
		t.Errorf("after compaction: %+v", all)
	}
	if _, found, _ := x.Get(false, "a", EntryName(&[]change.Record{rec("id-1", "a", "web", t0.Add(time.Second))}[0])); found {
		t.Error("a compacted entry is still found by name")
	}
	if removed, _ := x.Compact(3); removed != 0 {
		t.Errorf("compacting below the mark removed %d", removed)
	}
}
