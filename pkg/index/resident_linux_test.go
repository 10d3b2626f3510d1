package index

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// rssFileKiB reads the file-backed part of the process's resident set.
func rssFileKiB(t *testing.T) int {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssFile:" {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseReadPages shows that the pages a scan maps leave the process's resident set when lists
// release them, and that lists running meanwhile still read the same entries.
func TestReleaseReadPages(t *testing.T) {
	x, err := Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const n = 20000
	pad := strings.Repeat("d", 2000)
	for start := 1; start <= n; start += 1000 {
		var batch []SeqRecord
		for seq := start; seq < start+1000; seq++ {
			r := rec(fmt.Sprintf("id-%d", seq), fmt.Sprintf("ns-%d", seq%10), fmt.Sprintf("cm-%d", seq%100), t0.Add(time.Duration(seq)*time.Second))
			r.Diff = pad
			batch = append(batch, SeqRecord{Seq: uint64(seq), Record: r})
		}
		if _, err := x.AddBatch(batch); err != nil {
			t.Fatal(err)
		}
	}

	// Touch every page of the file, as a scan does, without releasing.
	before := rssFileKiB(t)
	var total int
	if err := x.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChanges).ForEach(func(_, v []byte) error { total += len(v); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	mapped := rssFileKiB(t) - before
	if mapped < total/1024/2 {
		t.Fatalf("reading %d KiB of entries mapped only %d KiB: nothing to show", total/1024, mapped)
	}

	// Lists run while the pages are released, and see every entry.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				res, err := x.List(ListOptions{Namespace: "ns-3"})
				if err == nil && len(res.Items) != n/10 {
					err = fmt.Errorf("listed %d entries of ns-3, want %d", len(res.Items), n/10)
				}
				if err == nil {
					for _, e := range res.Items {
						if e.Record.Diff != pad || e.Record.Object.Namespace != "ns-3" {
							err = fmt.Errorf("entry %d read back wrong", e.Seq)
							break
						}
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 10; i++ {
		if err := x.db.View(x.dropMappedPages); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	if err := x.db.View(x.dropMappedPages); err != nil {
		t.Fatal(err)
	}
	if left := rssFileKiB(t) - before; left > mapped/4 {
		t.Errorf("after releasing, %d KiB of the %d KiB the scan mapped are still resident", left, mapped)
	}
	// One list reading every entry releases as it goes: it ends with little of the file mapped.
	base := rssFileKiB(t)
	res, err := x.List(ListOptions{})
	if err != nil || len(res.Items) != n {
		t.Fatalf("listed %d entries (%v), want %d", len(res.Items), err, n)
	}
	if grown := rssFileKiB(t) - base; grown > mapped/4 {
		t.Errorf("a list of all %d entries left %d KiB of the file resident (a scan without release: %d KiB)", n, grown, mapped)
	}
	t.Logf("scan of %d KiB of entries mapped %d KiB; resident after release: %d KiB", total/1024, mapped, rssFileKiB(t)-before)
}
