package gitwriter

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
)

const benchBatch = 100

func benchPath(i int) (ns, name string) {
	return fmt.Sprintf("ns-%03d", i%100), fmt.Sprintf("cm-%06d", i)
}

func benchYAML(ns, name, value string) string {
	return fmt.Sprintf("apiVersion: v1\ndata:\n  value: %q\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\n", value, name, ns)
}

// benchRepo returns a bare repository and a checkout of it holding files ConfigMaps, generated once
// with git fast-import and cached under os.TempDir keyed by size.
func benchRepo(b *testing.B, files int) (bare, work string) {
	root := filepath.Join(os.TempDir(), "kubehistory-gitwriter-bench", fmt.Sprint(files))
	bare, work = filepath.Join(root, "remote.git"), filepath.Join(root, "work")
	if _, err := os.Stat(filepath.Join(root, "ready")); err == nil {
		return bare, work
	}
	_ = os.RemoveAll(root)
	if err := os.MkdirAll(root, 0o755); err != nil {
		b.Fatal(err)
	}
	gitCLI(b, root, "init", "-q", "--bare", "--initial-branch=main", bare)
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = bare
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(in)
	for i := 0; i < files; i++ {
		ns, name := benchPath(i)
		y := benchYAML(ns, name, "base")
		fmt.Fprintf(w, "blob\nmark :%d\ndata %d\n%s\n", i+1, len(y), y)
	}
	fmt.Fprintf(w, "commit refs/heads/main\ncommitter bench <bench@localhost> 1700000000 +0000\ndata 5\nbase\n")
	for i := 0; i < files; i++ {
		ns, name := benchPath(i)
		fmt.Fprintf(w, "M 100644 :%d %s/core/configmaps/%s.yaml\n", i+1, ns, name)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	gitCLI(b, root, "clone", "-q", bare, work)
	gitCLI(b, work, "config", "user.name", "bench")
	gitCLI(b, work, "config", "user.email", "bench@localhost")
	if err := os.WriteFile(filepath.Join(root, "ready"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return bare, work
}

// benchActors are the two actor workloads of BenchmarkCommit. The writer makes one commit per run of
// changes by the same actor (in change time order), so the workload decides how many commits a batch
// becomes: "runs" is what a cluster usually sends (three actors, each making a run of ~33 changes:
// 3 commits), "interleaved" the worst case (three actors taking turns: every change its own commit).
var benchActors = []struct {
	name  string
	actor func(i int) int // the actor of the i-th change of a batch
}{
	{"runs", func(i int) int { return i * 3 / benchBatch }},
	{"interleaved", func(i int) int { return i % 3 }},
}

// benchRuns splits a batch into the runs of one actor the writer turns into commits.
func benchRuns(actor func(int) int) [][2]int {
	var runs [][2]int
	for i := 0; i < benchBatch; i++ {
		if i == 0 || actor(i) != actor(i-1) {
			runs = append(runs, [2]int{i, i})
		}
		runs[len(runs)-1][1] = i + 1
	}
	return runs
}

// BenchmarkCommit commits a batch of 100 changed ConfigMaps into repositories of 10,000 and 100,000
// files: the writer's commit path (sanitize, blobs, changed subtrees, commits; no push) against the git
// CLI making the same commits in a checkout of the same repository (`git add` of each run's files and
// `git commit --author`), given the already-sanitized files. Both make one commit per run of an actor.
func BenchmarkCommit(b *testing.B) {
	for _, files := range []int{10000, 100000} {
		bare, work := benchRepo(b, files)
		step := files / benchBatch
		for _, actors := range benchActors {
			runs := benchRuns(actors.actor)
			b.Run(fmt.Sprintf("files=%d/actors=%s/writer", files, actors.name), func(b *testing.B) {
				repo, err := git.PlainOpen(bare)
				if err != nil {
					b.Fatal(err)
				}
				ref, err := repo.Reference(plumbing.NewBranchReferenceName("main"), true)
				if err != nil {
					b.Fatal(err)
				}
				w := &Writer{cfg: Config{Destination: dest, URL: "file://" + bare, Branch: "main", Key: testKey}, storer: repo.Storer,
					state: &state{ids: map[string]idState{}, paths: map[string]gitrecord.ObjectVersion{}}}
				w.cfg.setDefaults()
				head := ref.Hash()
				commits := 0
				b.ResetTimer()
				for n := 0; n < b.N; n++ {
					b.StopTimer()
					batch := make([]*pending, 0, benchBatch)
					stamp := time.Now().UnixNano()
					at := time.Now()
					for i := 0; i < benchBatch; i++ {
						ns, name := benchPath(i * step)
						body, _ := json.Marshal(map[string]interface{}{"apiVersion": "v1", "kind": "ConfigMap",
							"metadata": map[string]interface{}{"name": name, "namespace": ns, "resourceVersion": fmt.Sprint(stamp + int64(i))},
							"data":     map[string]interface{}{"value": fmt.Sprintf("v%d-%d", n, stamp)}})
						obj := change.Object{Version: "v1", Resource: "configmaps", Namespace: ns, Name: name}
						batch = append(batch, &pending{seq: uint64(i), ch: change.Change{Body: body, Fields: change.Fields{
							Object: obj, Verb: change.VerbUpdate, Actor: change.Actor{Username: fmt.Sprintf("user%d", actors.actor(i))},
							ChangeID: fmt.Sprintf("%d-%d", stamp, i), ChangeTime: metav1.NewMicroTime(at.Add(time.Duration(i) * time.Microsecond))}}})
					}
					b.StartTimer()
					if err := w.resolve(nil, batch); err != nil {
						b.Fatal(err)
					}
					res, err := w.build(head, batch, time.Now())
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					commits += commitsBetween(b, repo, head, res.head)
					b.StartTimer()
					head = res.head
				}
				b.StopTimer()
				if want := len(runs) * b.N; commits != want {
					b.Fatalf("the writer made %d commits, want %d (one per run of an actor)", commits, want)
				}
				b.ReportMetric(float64(benchBatch*b.N)/b.Elapsed().Seconds(), "changes/s")
				b.ReportMetric(float64(commits)/float64(b.N), "commits/op")
				if err := repo.Storer.SetReference(plumbing.NewHashReference("refs/heads/bench-writer", head)); err != nil {
					b.Fatal(err)
				}
			})
			b.Run(fmt.Sprintf("files=%d/actors=%s/git-cli", files, actors.name), func(b *testing.B) {
				for n := 0; n < b.N; n++ {
					for _, run := range runs {
						args := []string{"add", "--"}
						for i := run[0]; i < run[1]; i++ {
							ns, name := benchPath(i * step)
							p := filepath.Join(ns, "core", "configmaps", name+".yaml")
							if err := os.WriteFile(filepath.Join(work, p), []byte(benchYAML(ns, name, fmt.Sprintf("v%d-%d", n, time.Now().UnixNano()))), 0o644); err != nil {
								b.Fatal(err)
							}
							args = append(args, p)
						}
						u := fmt.Sprintf("user%d", actors.actor(run[0]))
						gitCLI(b, work, args...)
						gitCLI(b, work, "commit", "-q", "--author="+u+" <"+u+"@localhost>", "-m", "update configmaps\n\nKubehistory-Change-Id: "+strings.Repeat("x", 40))
					}
				}
				b.ReportMetric(float64(benchBatch*b.N)/b.Elapsed().Seconds(), "changes/s")
				b.ReportMetric(float64(len(runs)), "commits/op")
			})
		}
	}
}

// commitsBetween counts the first-parent commits from to (exclusive) to to (inclusive).
func commitsBetween(b *testing.B, repo *git.Repository, from, to plumbing.Hash) int {
	n := 0
	for h := to; h != from; n++ {
		c, err := repo.CommitObject(h)
		if err != nil {
			b.Fatal(err)
		}
		if len(c.ParentHashes) == 0 {
			b.Fatalf("commit %s does not descend from %s", to, from)
		}
		h = c.ParentHashes[0]
	}
	return n
}

// BenchmarkWriterThroughput is the whole path into one destination: changes published on JetStream,
// committed, pushed over file://, records published and messages acked.
func BenchmarkWriterThroughput(b *testing.B) {
	q := startJetStream(b)
	remote := bareRepo(b)
	cfg := testConfig(b, "file://"+remote)
	cfg.CommitWindow = 200 * time.Millisecond
	total := 2000 * b.N
	chs := make([]change.Change, 0, total)
	for i := 0; i < total; i++ {
		ns, name := benchPath(i % 20000)
		chs = append(chs, mkChange(fmt.Sprintf("user%d", i%5), "update", "configmaps", ns, name, fmt.Sprint(1000+i),
			map[string]interface{}{"data": map[string]interface{}{"value": fmt.Sprint(i)}}))
	}
	publish(b, q, "", chs...)
	b.ResetTimer()
	startWriter(b, cfg, q, nil)
	eventually(b, "all records", func() bool { return historyCount(b, q) >= uint64(total) })
	b.StopTimer()
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "changes/s")
}
