package index

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
)

func rec(id, ns, name string, at time.Time) change.Record {
	return change.Record{Cluster: ns == "", Fields: change.Fields{
		Object:     change.Object{Version: "v1", Resource: "configmaps", Namespace: ns, Name: name},
		Verb:       change.VerbUpdate,
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

func TestSecondaryIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	x, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	// 60 changes over three namespaces, three object names and the cluster scope; "web" in "a" is
	// also the prefix of "web2", and namespace "a" the prefix of "ab".
	scopes := []struct{ ns, name string }{{"a", "web"}, {"a", "web2"}, {"ab", "web"}, {"b", "db"}, {"", "a"}}
	want := map[string][]uint64{}
	for seq := uint64(1); seq <= 60; seq++ {
		s := scopes[seq%uint64(len(scopes))]
		if _, err := x.Add(seq, rec(fmt.Sprintf("id-%d", seq), s.ns, s.name, t0.Add(time.Duration(seq)*time.Second))); err != nil {
			t.Fatal(err)
		}
		want[s.ns+"/"+s.name] = append(want[s.ns+"/"+s.name], seq)
		want[s.ns+"/"] = append(want[s.ns+"/"], seq)
	}
	// Readers never decode an entry outside their index: break every entry that is not web in a, and
	// the object list of web in a still works while a full list fails.
	if err := x.db.Update(func(tx *bolt.Tx) error {
		for seq := uint64(1); seq <= 60; seq++ {
			if s := scopes[seq%uint64(len(scopes))]; s.ns != "a" || s.name != "web" {
				if err := tx.Bucket(bucketChanges).Put(seqKey(seq), []byte("{broken")); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	x.recent = &recentCache{} // the entries decoded when added are cached: read them from the file
	seqs := func(items []Entry) []uint64 {
		out := []uint64{}
		for _, e := range items {
			out = append(out, e.Seq)
		}
		return out
	}
	got, err := x.List(ListOptions{Namespace: "a", ObjectName: "web"})
	if err != nil || fmt.Sprint(seqs(got.Items)) != fmt.Sprint(want["a/web"]) {
		t.Errorf("object list of a/web: %v %v, want %v", seqs(got.Items), err, want["a/web"])
	}
	page, err := x.List(ListOptions{Namespace: "a", ObjectName: "web", AfterSeq: want["a/web"][3], Limit: 2})
	if err != nil || fmt.Sprint(seqs(page.Items)) != fmt.Sprint(want["a/web"][4:6]) || !page.More {
		t.Errorf("object page: %v %v", seqs(page.Items), err)
	}
	if _, err := x.List(ListOptions{}); err == nil {
		t.Error("a full list decoded no broken entry: the test does not prove anything")
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}

	// A schema 1 file (no secondary indexes) is upgraded on open.
	x, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = x.Close() }()
	if err := x.db.Update(func(tx *bolt.Tx) error {
		for seq := uint64(1); seq <= 60; seq++ {
			s := scopes[seq%uint64(len(scopes))]
			data, _ := json.Marshal(&Entry{Seq: seq, Name: fmt.Sprintf("n-%d", seq), Record: rec(fmt.Sprintf("id-%d", seq), s.ns, s.name, t0)})
			if err := tx.Bucket(bucketChanges).Put(seqKey(seq), data); err != nil {
				return err
			}
		}
		for _, b := range [][]byte{bucketByScope, bucketByObject} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if x, err = Open(path); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		opts ListOptions
		want []uint64
	}{
		{"namespace a", ListOptions{Namespace: "a"}, want["a/"]},
		{"namespace ab", ListOptions{Namespace: "ab"}, want["ab/"]},
		{"object web in a", ListOptions{Namespace: "a", ObjectName: "web"}, want["a/web"]},
		{"object web2 in a", ListOptions{Namespace: "a", ObjectName: "web2"}, want["a/web2"]},
		{"cluster", ListOptions{Cluster: true}, want["/"]},
		{"cluster object", ListOptions{Cluster: true, ObjectName: "a"}, want["/a"]},
		{"object across namespaces", ListOptions{ObjectName: "db"}, want["b/db"]},
		{"snapshot bound", ListOptions{Namespace: "b", MaxSeq: 20}, want["b/"][:4]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := x.List(tc.opts)
			if err != nil || fmt.Sprint(seqs(got.Items)) != fmt.Sprint(tc.want) {
				t.Errorf("got %v %v, want %v", seqs(got.Items), err, tc.want)
			}
		})
	}
	// Compaction removes the index keys with the entries.
	if _, err := x.Compact(30); err != nil {
		t.Fatal(err)
	}
	if got, _ := x.List(ListOptions{Namespace: "a", ObjectName: "web"}); len(got.Items) != 6 || got.Items[0].Seq <= 30 {
		t.Errorf("after compaction: %v", seqs(got.Items))
	}
	err = x.db.View(func(tx *bolt.Tx) error {
		n := 0
		_ = tx.Bucket(bucketByObject).ForEach(func(k, _ []byte) error { n++; return nil })
		if n != 30 {
			return fmt.Errorf("%d object index keys after compacting 30 of 60 entries", n)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestRecentCache checks that the newest entries are served from memory, equal to what the file holds,
// and that entries older than the window are not cached (they would push out newer ones).
func TestRecentCache(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = x.Close() }()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const n = RecentEntries + 100
	var batch []SeqRecord
	for seq := uint64(1); seq <= n; seq++ {
		batch = append(batch, SeqRecord{Seq: seq, Record: rec(fmt.Sprintf("id-%d", seq), "a", fmt.Sprintf("cm-%d", seq%7), t0.Add(time.Duration(seq)*time.Second))})
	}
	if _, err := x.AddBatch(batch); err != nil {
		t.Fatal(err)
	}
	if x.recent.get(n) == nil || x.recent.get(n-RecentEntries+1) == nil {
		t.Error("the newest entries are not cached after AddBatch")
	}
	if x.recent.get(100) != nil {
		t.Error("an entry older than the window is cached")
	}
	fromCache, err := x.List(ListOptions{Namespace: "a", AfterSeq: n - 50})
	if err != nil {
		t.Fatal(err)
	}
	x.recent = &recentCache{}
	x.recent.advance(n)
	fromFile, err := x.List(ListOptions{Namespace: "a", AfterSeq: n - 50})
	if err != nil {
		t.Fatal(err)
	}
	if len(fromCache.Items) != 50 || !reflect.DeepEqual(fromCache.Items, fromFile.Items) {
		t.Fatalf("cached list (%d items) differs from the file's (%d items)", len(fromCache.Items), len(fromFile.Items))
	}
	if x.recent.get(n) == nil {
		t.Error("an entry read from the file is not cached")
	}
	old, err := x.List(ListOptions{Namespace: "a", Limit: 10})
	if err != nil || len(old.Items) != 10 {
		t.Fatalf("old entries: %d, %v", len(old.Items), err)
	}
	if x.recent.get(1) != nil {
		t.Error("reading an old entry cached it")
	}
}
