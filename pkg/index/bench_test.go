package index

import (
	"crypto/sha1"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// Shape of the benchmark index: benchNamespaces namespaces with benchObjects ConfigMaps each, changed in
// turn, so that at 1,000,000 changes each object has 500 (a list of 500 by object name is one full
// object); the actor is one of benchActors users, so a list by actor across the index decodes about
// benchActors entries per match, in one namespace as across all.
const (
	benchNamespaces = 100
	benchObjects    = 20
	benchActors     = 100
)

const benchShape = "v3"

var benchStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// BenchRecord is change number i (from 1) of the benchmark index: a realistic record with a ~400-byte diff.
func benchRecord(i uint64) change.Record {
	ns := "ns-" + strconv.FormatUint(i%benchNamespaces, 10)
	name := "cm-" + strconv.FormatUint((i/benchNamespaces)%benchObjects, 10)
	sum := sha1.Sum([]byte(strconv.FormatUint(i, 10)))
	sha := hex.EncodeToString(sum[:])
	at := benchStart.Add(time.Duration(i) * 100 * time.Millisecond)
	committed := metav1.NewTime(at.Add(time.Second))
	return change.Record{Fields: change.Fields{
		Object: change.Object{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: ns, Name: name,
			UID: "3b1e0c2a-" + sha[:4] + "-4f4e-9c1d-" + sha[4:16], ResourceVersion: strconv.FormatUint(1000+i, 10)},
		Verb:       change.VerbUpdate,
		Actor:      change.Actor{Username: "user-" + strconv.FormatUint((i/(benchNamespaces*3))%benchActors, 10), Groups: []string{"system:authenticated", "team"}},
		Source:     change.SourceAudit,
		AuditID:    "a1b2c3d4-" + sha[:12],
		ChangeID:   sha[:32],
		RequestURI: "/api/v1/namespaces/" + ns + "/configmaps/" + name,
		ChangeTime: metav1.NewMicroTime(at),
		Git: change.GitLink{Destination: "main", DestinationNamespace: "kubehistory-system", Repository: "https://git.example.com/platform/history.git",
			Branch: "main", Commit: sha, Path: "namespaces/" + ns + "/configmaps/" + name + ".yaml", CommittedAt: &committed},
		Diff: "--- a/namespaces/" + ns + "/configmaps/" + name + ".yaml\n+++ b/namespaces/" + ns + "/configmaps/" + name + ".yaml\n" +
			"@@ -1,9 +1,9 @@\n apiVersion: v1\n data:\n-  replicas: \"" + strconv.FormatUint(i-1, 10) + "\"\n+  replicas: \"" + strconv.FormatUint(i, 10) + "\"\n" +
			"   log-level: info\n   feature-flags: alpha,beta,gamma\n kind: ConfigMap\n metadata:\n   labels:\n     app: web\n   name: " + name + "\n   namespace: " + ns + "\n",
	}}
}

// benchIndexPath is an index of size benchmark changes, built once under the OS temp dir and reused by
// every later run (building 1,000,000 takes minutes). A half-built file is never reused: the build
// writes to a temporary name and renames it when complete.
func benchIndexPath(b *testing.B, size uint64) string {
	// The folder names the data's shape (bump benchShape when benchRecord or the file layout changes) and size.
	dir := filepath.Join(os.TempDir(), "kubehistory-index-bench", benchShape+"-"+strconv.FormatUint(size, 10))
	path := filepath.Join(dir, "index.db")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	tmp := path + ".building"
	_ = os.Remove(tmp)
	x, err := Open(tmp)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	const batch = 10000
	recs := make([]SeqRecord, 0, batch)
	for i := uint64(1); i <= size; i++ {
		recs = append(recs, SeqRecord{Seq: i, Record: benchRecord(i)})
		if len(recs) == batch || i == size {
			if _, err := x.AddBatch(recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	if err := x.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(path)
	b.Logf("built %d-change index %s (%d MiB) in %s", size, path, st.Size()>>20, time.Since(start).Round(time.Second))
	return path
}

func benchSize(b *testing.B) uint64 {
	if s := os.Getenv("KUBEHISTORY_BENCH_INDEX_SIZE"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	return 1000000
}

// insertTarget is one writable copy of the cached index per process, shared by the insert benchmarks
// (the testing package calls each benchmark several times while it sizes b.N).
var insertTarget struct {
	once sync.Once
	x    *Index
	dir  string
	next uint64
	err  error
}

func insertIndex(b *testing.B) *Index {
	size := benchSize(b)
	src := benchIndexPath(b, size)
	insertTarget.once.Do(func() {
		insertTarget.dir, insertTarget.err = os.MkdirTemp("", "kubehistory-index-insert-")
		if insertTarget.err != nil {
			return
		}
		dst := filepath.Join(insertTarget.dir, "index.db")
		if insertTarget.err = copyFile(src, dst); insertTarget.err != nil {
			return
		}
		insertTarget.x, insertTarget.err = Open(dst)
		insertTarget.next = size + 1
	})
	if insertTarget.err != nil {
		b.Fatal(insertTarget.err)
	}
	return insertTarget.x
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func TestMain(m *testing.M) {
	code := m.Run()
	if insertTarget.x != nil {
		_ = insertTarget.x.Close()
	}
	if insertTarget.dir != "" {
		_ = os.RemoveAll(insertTarget.dir)
	}
	os.Exit(code)
}

// BenchmarkAdd is the follower's path: one record per transaction (one fsync each), into an index that
// already holds the benchmark size.
func BenchmarkAdd(b *testing.B) {
	x := insertIndex(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		seq := insertTarget.next
		insertTarget.next++
		if ok, err := x.Add(seq, benchRecord(seq)); err != nil || !ok {
			b.Fatalf("Add(%d) = %v, %v", seq, ok, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
}

// BenchmarkAddBatch100 is the rebuild's path: 100 records per transaction. One op is one record.
func BenchmarkAddBatch100(b *testing.B) {
	x := insertIndex(b)
	b.ResetTimer()
	recs := make([]SeqRecord, 0, 100)
	for done := 0; done < b.N; {
		recs = recs[:0]
		for len(recs) < 100 && done+len(recs) < b.N {
			seq := insertTarget.next
			insertTarget.next++
			recs = append(recs, SeqRecord{Seq: seq, Record: benchRecord(seq)})
		}
		n, err := x.AddBatch(recs)
		if err != nil || n != len(recs) {
			b.Fatalf("AddBatch = %d, %v", n, err)
		}
		done += n
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "changes/s")
}

// BenchmarkList500 lists 500 changes at the benchmark size the ways the API does: by object name in
// a namespace (the object index), by namespace (the scope index), and by actor (no index: entries are
// decoded and matched until 500 match), in one namespace and across all.
func BenchmarkList500(b *testing.B) {
	x, err := Open(benchIndexPath(b, benchSize(b)))
	if err != nil {
		b.Fatal(err)
	}
	defer x.Close()
	byActor := func(actor string) func(*Entry) (bool, error) {
		return func(e *Entry) (bool, error) { return e.Record.Actor.Username == actor, nil }
	}
	for _, tc := range []struct {
		name string
		opts ListOptions
	}{
		{"objectName", ListOptions{Namespace: "ns-7", ObjectName: "cm-3"}},
		{"namespace", ListOptions{Namespace: "ns-7"}},
		{"actorInNamespace", ListOptions{Namespace: "ns-7", Match: byActor("user-42")}},
		{"actorAllNamespaces", ListOptions{Match: byActor("user-42")}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			opts := tc.opts
			opts.Limit = 500
			for i := 0; i < b.N; i++ {
				res, err := x.List(opts)
				if err != nil {
					b.Fatal(err)
				}
				if len(res.Items) == 0 {
					b.Fatalf("listed %d items", len(res.Items))
				}
				if i == 0 {
					b.ReportMetric(float64(len(res.Items)), "items")
				}
			}
		})
	}
}

// TestBenchRecordShape keeps the benchmark's promises about its data: 500 changes per object at 1M.
func TestBenchRecordShape(t *testing.T) {
	seen := map[string]int{}
	for i := uint64(1); i <= 20000; i++ {
		r := benchRecord(i)
		seen[r.Object.Namespace+"/"+r.Object.Name]++
	}
	if len(seen) != benchNamespaces*benchObjects || seen["ns-7/cm-3"] != 10 {
		t.Errorf("%d objects, ns-7/cm-3 has %d changes", len(seen), seen["ns-7/cm-3"])
	}
	// A list by actor must find matches in one namespace too: every actor acts in every namespace.
	actors := map[string]int{}
	for i := uint64(7); i <= 300000; i += benchNamespaces {
		actors[benchRecord(i).Actor.Username]++
	}
	if len(actors) != benchActors {
		t.Errorf("namespace ns-7 sees %d actors, want %d", len(actors), benchActors)
	}
}
