package index

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

func TestRetain(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		policy    Retention
		now       time.Time
		wantFirst uint64 // lowest sequence left; 0 when every entry is gone
		wantCount int
	}{
		{"keep everything", Retention{}, t0.Add(time.Hour), 1, 30},
		{"max entries", Retention{MaxEntries: 10}, t0, 21, 10},
		{"max entries above count", Retention{MaxEntries: 100}, t0, 1, 30},
		{"max age", Retention{MaxAge: 10 * time.Minute}, t0.Add(25 * time.Minute), 15, 16},
		{"max age removes all", Retention{MaxAge: time.Minute}, t0.Add(time.Hour), 0, 0},
		{"both, entries stricter", Retention{MaxAge: time.Hour, MaxEntries: 5}, t0.Add(30 * time.Minute), 26, 5},
		{"both, age stricter", Retention{MaxAge: 5 * time.Minute, MaxEntries: 25}, t0.Add(30 * time.Minute), 25, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := Open(filepath.Join(t.TempDir(), "index.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer x.Close()
			// Entry i changed at t0 + i minutes.
			var recs []SeqRecord
			for i := 1; i <= 30; i++ {
				recs = append(recs, SeqRecord{Seq: uint64(i), Record: rec(fmt.Sprint("id-", i), "a", fmt.Sprint("obj-", i%3), t0.Add(time.Duration(i)*time.Minute))})
			}
			if n, err := x.AddBatch(recs); err != nil || n != 30 {
				t.Fatalf("AddBatch = %d, %v", n, err)
			}
			removed, err := x.Retain(tc.policy, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			if removed != 30-tc.wantCount {
				t.Errorf("removed %d, want %d", removed, 30-tc.wantCount)
			}
			if n, _ := x.Count(); n != tc.wantCount {
				t.Errorf("Count = %d, want %d", n, tc.wantCount)
			}
			all, err := x.List(ListOptions{Namespace: "a"})
			if err != nil {
				t.Fatal(err)
			}
			if len(all.Items) != tc.wantCount || (tc.wantCount > 0 && all.Items[0].Seq != tc.wantFirst) {
				t.Errorf("left %d entries from %+v, want %d from seq %d", len(all.Items), all.Items[:min(1, len(all.Items))], tc.wantCount, tc.wantFirst)
			}
			if tc.wantFirst > 1 || tc.wantCount == 0 {
				if all.Compacted == 0 {
					t.Error("the list does not report the compacted mark")
				}
			}
			// The object index forgets compacted entries too.
			obj, _ := x.List(ListOptions{Namespace: "a", ObjectName: "obj-1"})
			for _, e := range obj.Items {
				if tc.wantCount == 0 || e.Seq < tc.wantFirst {
					t.Errorf("object index still lists seq %d", e.Seq)
				}
			}
			// Applying the policy again removes nothing more.
			if again, err := x.Retain(tc.policy, tc.now); err != nil || again != 0 {
				t.Errorf("second Retain = %d, %v", again, err)
			}
		})
	}
}

// Retention over more entries than one chunk removes them all, in several transactions.
func TestRetainInChunks(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	total := retainChunk*2 + 500
	var recs []SeqRecord
	for i := 1; i <= total; i++ {
		recs = append(recs, SeqRecord{Seq: uint64(i), Record: rec(fmt.Sprint("id-", i), "a", "web", t0.Add(time.Duration(i)*time.Second))})
	}
	if _, err := x.AddBatch(recs); err != nil {
		t.Fatal(err)
	}
	removed, err := x.Retain(Retention{MaxEntries: 100}, t0)
	if err != nil || removed != total-100 {
		t.Fatalf("Retain = %d, %v; want %d", removed, err, total-100)
	}
	if n, _ := x.Count(); n != 100 {
		t.Errorf("Count = %d", n)
	}
}

// AddBatch applies Add's rules to each record: sequences at or below the last are skipped, and so are
// change IDs already indexed; the count follows.
func TestAddBatch(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	n, err := x.AddBatch([]SeqRecord{
		{1, rec("id-1", "a", "web", t0)},
		{2, rec("id-2", "a", "web", t0)},
		{2, rec("id-3", "a", "web", t0)}, // same sequence again
		{4, rec("id-1", "a", "web", t0)}, // change ID already indexed
		{5, rec("id-5", "a", "web", t0)},
	})
	if err != nil || n != 3 {
		t.Fatalf("AddBatch = %d, %v", n, err)
	}
	if last, _ := x.LastSeq(); last != 5 {
		t.Errorf("LastSeq = %d", last)
	}
	if c, _ := x.Count(); c != 3 {
		t.Errorf("Count = %d", c)
	}
	if _, err := x.AddBatch([]SeqRecord{{6, rec("", "a", "web", t0)}}); err == nil {
		t.Error("a record without change ID was accepted")
	}
}

// Lock fails with ErrInUse while a server has the file open, and a server cannot open it while a
// rebuild holds the lock.
func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	release, err := Lock(path, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	_ = release()
	x, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(path, 100*time.Millisecond); !errors.Is(err, ErrInUse) {
		t.Errorf("Lock of an open index = %v, want ErrInUse", err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	release, err = Lock(path, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openWithTimeout(path, 100*time.Millisecond); !errors.Is(err, ErrInUse) {
		t.Errorf("Open under a rebuild's lock = %v, want ErrInUse", err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
}

// RunRetention applies the policy at once and again on every tick (entries added after the first pass
// are removed by a later one), and returns when its context ends.
func TestRunRetention(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	t0 := time.Now()
	add := func(from, to int) {
		var recs []SeqRecord
		for i := from; i <= to; i++ {
			recs = append(recs, SeqRecord{Seq: uint64(i), Record: rec(fmt.Sprint("id-", i), "a", "obj", t0)})
		}
		if _, err := x.AddBatch(recs); err != nil {
			t.Fatal(err)
		}
	}
	waitCount := func(want int) {
		t.Helper()
		var n int
		err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true,
			func(context.Context) (bool, error) {
				var err error
				n, err = x.Count()
				return n == want, err
			})
		if err != nil {
			t.Fatalf("Count = %d, want %d: %v", n, want, err)
		}
	}
	add(1, 20)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.RunRetention(ctx, Retention{MaxEntries: 5}, 20*time.Millisecond); close(done) }()
	waitCount(5)
	add(21, 30)
	waitCount(5)
	cancel()
	<-done
	// With no bound it returns at once.
	x.RunRetention(context.Background(), Retention{}, time.Hour)
}
