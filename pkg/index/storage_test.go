package index

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// The entries in testdata were written by main at dd32f05, before records had a storage version: their
// record has no "v" and is version 1. This build reads them in place, and writes the same bytes with
// "v":1 at the head of the record.
var entryFixtures = []struct {
	file    string
	seq     uint64
	cluster bool
	ns      string
}{
	{"entry-v1-main.json", 41, false, "team-a"},
	{"entry-v1-cluster-main.json", 42, true, ""},
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// versioned is an entry of main as this build writes it: "v":1 first in the record.
func versioned(old []byte) []byte {
	return bytes.Replace(old, []byte(`"record":{`), []byte(`"record":{"v":1,`), 1)
}

func TestEntryVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	x, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var want []Entry
	for _, f := range entryFixtures {
		var e Entry
		if err := decodeEntry(fixture(t, f.file), &e); err != nil {
			t.Fatalf("%s: %v", f.file, err)
		}
		if e.Seq != f.seq || e.Record.Cluster != f.cluster || e.Record.V != change.Version || e.Record.ChangeID == "" || e.Record.Git.CommittedAt == nil {
			t.Fatalf("%s decoded as %+v", f.file, e)
		}
		if _, err := x.Add(e.Seq, e.Record); err != nil {
			t.Fatal(err)
		}
		want = append(want, e)
	}
	// Written now: main's bytes with the version.
	err = x.db.Update(func(tx *bolt.Tx) error {
		for _, f := range entryFixtures {
			got := tx.Bucket(bucketChanges).Get(seqKey(f.seq))
			if want := versioned(fixture(t, f.file)); !bytes.Equal(got, want) {
				t.Errorf("%s written as\n%s\nwant\n%s", f.file, got, want)
			}
			// And from now on, main's own bytes, as an index file main wrote holds them.
			if err := tx.Bucket(bucketChanges).Put(seqKey(f.seq), fixture(t, f.file)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened (no cached entries): main's entries read through Get and List.
	if x, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	for i, f := range entryFixtures {
		got, found, err := x.Get(f.cluster, f.ns, want[i].Name)
		if err != nil || !found {
			t.Fatalf("Get %s: found=%v, %v", want[i].Name, found, err)
		}
		if !entriesEqual(got, want[i]) {
			t.Errorf("Get %s = %+v, want %+v", want[i].Name, got, want[i])
		}
		res, err := x.List(ListOptions{Cluster: f.cluster, Namespace: f.ns})
		if err != nil || len(res.Items) != 1 || !entriesEqual(res.Items[0], want[i]) {
			t.Errorf("List of %s: %+v, %v", f.file, res.Items, err)
		}
	}
}

func entriesEqual(a, b Entry) bool {
	x, err1 := encodeForCompare(a)
	y, err2 := encodeForCompare(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// An entry whose record has a version this build does not know fails the list that reads it instead of
// being served as something it is not.
func TestEntryUnknownVersion(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	var e Entry
	if err := decodeEntry(fixture(t, "entry-v1-main.json"), &e); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Add(e.Seq, e.Record); err != nil {
		t.Fatal(err)
	}
	err = x.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChanges).Put(seqKey(e.Seq), bytes.Replace(fixture(t, "entry-v1-main.json"), []byte(`"record":{`), []byte(`"record":{"v":2,`), 1))
	})
	if err != nil {
		t.Fatal(err)
	}
	x.recent = &recentCache{}
	x.recent.advance(e.Seq)
	if _, err := x.List(ListOptions{}); !errors.Is(err, change.ErrUnknownVersion) {
		t.Errorf("List: %v, want ErrUnknownVersion", err)
	}
	if _, _, err := x.Get(false, "team-a", e.Name); !errors.Is(err, change.ErrUnknownVersion) {
		t.Errorf("Get: %v, want ErrUnknownVersion", err)
	}
}

func encodeForCompare(e Entry) ([]byte, error) { return json.Marshal(&e) }

// BenchmarkDecodeEntry is what a list pays per entry it reads from the file (not from the recent cache):
// an entry of main with a Git link and a small diff.
func BenchmarkDecodeEntry(b *testing.B) {
	data := versioned(fixture(b, "entry-v1-main.json"))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		var e Entry
		if err := decodeEntry(data, &e); err != nil {
			b.Fatal(err)
		}
	}
}
