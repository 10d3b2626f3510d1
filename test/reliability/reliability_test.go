// Package reliability drives changes through a real kube-apiserver into three kubehistory replicas on a
// three-node NATS JetStream cluster while killing replicas and a NATS node, then checks that every change
// kube-apiserver answered 200 for is in Git exactly once and in every replica's index exactly once, and
// that Git equals the cluster.
package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/destinations"
	"github.com/kubehistory/kubehistory/test/framework"
)

const (
	namespace = "reliability"
	objects   = 40
)

// seedEnv reruns the chaos schedule of an earlier run: the seed it logged.
const seedEnv = "KUBEHISTORY_RELIABILITY_SEED"

// Figures of a run, printed at the end and kept in docs/reliability.md.
type figures struct {
	changes, replicaKills, natsKills int
	lost, duplicated, gitDiffers     int
	falseGaps                        int
}

func TestReliability(t *testing.T) {
	ops := 1200
	if v := os.Getenv("KUBEHISTORY_RELIABILITY_CHANGES"); v != "" {
		if _, err := fmt.Sscan(v, &ops); err != nil {
			t.Fatal(err)
		}
	}
	// The seed draws the chaos schedule: after how many changes each kill comes, which replica or NATS
	// node dies and for how many changes it stays down. The same seed replays the same schedule.
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(seedEnv); v != "" {
		if _, err := fmt.Sscan(v, &seed); err != nil {
			t.Fatalf("%s=%q: %v", seedEnv, v, err)
		}
	}
	t.Logf("chaos schedule seed %d (rerun it with %s=%d)", seed, seedEnv, seed)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := t.TempDir()

	nats, err := framework.StartNATSCluster(ctx, filepath.Join(mkdir(t, dir, "nats")), 3, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer nats.Stop()
	plane, err := framework.Start(ctx, framework.Config{Dir: filepath.Join(dir, "plane"), Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	defer plane.Stop()
	// The run's directory goes with the test: a failed run shows the replicas' logs first.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(plane.Dir, "kubehistory-apiserver*.log"))
		for _, f := range logs {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			if len(data) > 20000 {
				data = data[len(data)-20000:]
			}
			t.Logf("---- %s (tail) ----\n%s", f, data)
		}
	})
	// kube-apiserver's audit webhook reaches the replicas through a proxy on its configured port, as it
	// would through a Service.
	proxy, err := framework.StartProxy(plane.AuditPort)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	auditPort, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	kh, err := plane.InstallKubehistory(ctx, framework.InstallOptions{AuditPort: auditPort,
		// Reconcile passes run throughout, at the default --reconcile-settle and more often than by
		// default: a seed that overtakes an audit change still in flight (kube-apiserver re-sending a
		// batch, a killed writer's batch waiting for AckWait) must not become a Gap (the writer holds such
		// seeds for its GapGrace). Every change is delivered here, so any Gap is a false one.
		ExtraArgs: []string{"--nats-url=" + nats.URL(), "--stream-replicas=3", "--reconcile-interval=10s"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"replica-1", "replica-2"} {
		if _, err := kh.StartReplica(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	var backends []string
	for _, r := range kh.Replicas {
		backends = append(backends, fmt.Sprintf("127.0.0.1:%d", r.AuditPort))
	}
	proxy.SetBackends(backends...)

	repo := filepath.Join(dir, "history.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	admin := plane.AdminKubeconfig
	if _, err := framework.KubectlRun(ctx, admin, "", "create", "namespace", namespace); err != nil {
		t.Fatal(err)
	}
	if _, err := framework.KubectlRun(ctx, admin, fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: %[1]s}
spec:
  url: file://%[2]s
  commitWindow: 500ms
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: %[1]s}
spec:
  destinationRef: {name: history}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
`, namespace, repo), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if err := framework.WaitFor(ctx, 60*time.Second, func() error {
		out, err := framework.KubectlRun(ctx, admin, "", "get", "gitdestination", "history", "-n", namespace, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && out != "True" {
			err = fmt.Errorf("GitDestination Ready=%q", out)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := kh.WaitForRules(ctx, framework.Rule{Namespace: namespace, Name: "configmaps"}); err != nil {
		t.Fatal(err)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", admin)
	if err != nil {
		t.Fatal(err)
	}
	// About two minutes of changes at this rate: time for several kills while they flow.
	cfg.QPS, cfg.Burst = 10, 10
	kube := kubernetes.NewForConfigOrDie(cfg)

	// The driver: creates and updates; each answered change is remembered by name and resourceVersion.
	var fig figures
	type key struct{ name, rv string }
	var mu sync.Mutex
	expected := map[key]bool{}
	finalData := map[string]string{}
	var driving atomic.Bool
	var made atomic.Int64 // changes answered so far: the chaos schedule's clock
	driving.Store(true)
	driverDone := make(chan error, 1)
	go func() {
		defer driving.Store(false)
		cms := kube.CoreV1().ConfigMaps(namespace)
		for i := 0; i < ops; i++ {
			name := fmt.Sprintf("cm-%02d", i%objects)
			value := fmt.Sprintf("v%d", i)
			var got *corev1.ConfigMap
			var err error
			if i < objects {
				got, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"value": value}}, metav1.CreateOptions{})
			} else {
				got, err = cms.Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"value": value}}, metav1.UpdateOptions{})
			}
			if err != nil {
				driverDone <- fmt.Errorf("change %d: %w", i, err)
				return
			}
			mu.Lock()
			expected[key{name, got.ResourceVersion}] = true
			finalData[name] = value
			mu.Unlock()
			made.Add(1)
		}
		driverDone <- nil
	}()

	// Chaos while the driver runs: kill -9 a replica and start it again (every other kill the one holding
	// the destination's writer lease, so the writer's crash path is always exercised); once, a NATS node.
	// The schedule counts in changes made, not in seconds: the seed decides after how many changes each
	// kill comes and for how many changes the victim stays down, whatever the machine's speed.
	rng := rand.New(rand.NewPCG(seed, 7))
	// The schedule is a position in changes: each kill and each restart is due at a change count drawn
	// from the seed, not counted from when the previous restart finished (whose duration varies). A
	// restart still in progress when the next kill is due delays that kill; the log says so.
	schedule := 0
	// at waits until the driver has made n changes (false once it is done).
	at := func(n int) bool {
		_ = wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
			return made.Load() >= int64(n) || !driving.Load(), nil
		})
		return driving.Load()
	}
	natsKilled := false
	for {
		schedule += 15 + rng.IntN(30)
		if !at(schedule) {
			break
		}
		if !natsKilled {
			natsKilled = true
			node := rng.IntN(3)
			down := 20 + rng.IntN(40)
			t.Logf("kill -9 nats-server n%d at change %d (due at %d), for %d changes", node, made.Load(), schedule, down)
			nats.Kill(node)
			fig.natsKills++
			schedule += down
			at(schedule)
			if err := nats.Start(node); err != nil {
				t.Fatal(err)
			}
			continue
		}
		r := kh.Replicas[rng.IntN(len(kh.Replicas))]
		down := 5 + rng.IntN(25)
		if fig.replicaKills%2 == 0 {
			// The lease holder is the cluster's state, not the seed's: the log names the victim.
			if holder := leaseHolder(ctx, admin); holder != "" {
				for _, c := range kh.Replicas {
					if c.Name == holder {
						r = c
					}
				}
			}
		}
		t.Logf("kill -9 %s at change %d (due at %d), for %d changes", r.Name, made.Load(), schedule, down)
		kh.Kill(r)
		fig.replicaKills++
		schedule += down
		at(schedule)
		if err := kh.Restart(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-driverDone; err != nil {
		t.Fatal(err)
	}
	fig.changes = len(expected)

	// Every change in every replica's index exactly once, and in Git exactly once.
	indexCounts := func(r *framework.Replica) (map[key]int, []historyv1alpha1.ResourceChange, error) {
		out, err := framework.KubectlRun(ctx, admin, "", "get", "resourcechanges", "-n", namespace, "-o", "json",
			"--server", fmt.Sprintf("https://127.0.0.1:%d", r.Port), "--certificate-authority", kh.CA.CertFile)
		if err != nil {
			return nil, nil, err
		}
		var list historyv1alpha1.ResourceChangeList
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return nil, nil, err
		}
		counts := map[key]int{}
		for _, it := range list.Items {
			counts[key{it.Object.Name, it.Object.ResourceVersion}]++
		}
		return counts, list.Items, nil
	}
	var items []historyv1alpha1.ResourceChange
	wait := 5 * time.Minute
	for _, r := range kh.Replicas {
		var counts map[key]int
		err := framework.WaitFor(ctx, wait, func() error {
			var err error
			counts, items, err = indexCounts(r)
			if err != nil {
				return err
			}
			missing := 0
			for k := range expected {
				if counts[k] == 0 {
					missing++
				}
			}
			if missing > 0 {
				return fmt.Errorf("%s: %d of %d changes not in the index yet", r.Name, missing, len(expected))
			}
			return nil
		})
		if err != nil {
			t.Error(err)
			wait = 30 * time.Second // the other replicas have had the same time already
		}
		for k := range expected {
			switch n := counts[k]; {
			case n == 0:
				fig.lost++
			case n > 1:
				fig.duplicated += n - 1
			}
		}
		for _, it := range items {
			for _, m := range it.Markers {
				if m == historyv1alpha1.MarkerGap {
					fig.falseGaps++
					t.Errorf("%s: false Gap for %s@%s (%s)", r.Name, it.Object.Name, it.Object.ResourceVersion, it.ChangeID)
				}
			}
		}
		for k, n := range counts {
			if !expected[k] {
				t.Errorf("%s: %s@%s recorded %d times but not made by the driver", r.Name, k.name, k.rv, n)
			}
		}
	}

	ids := map[string]int{}
	for _, line := range strings.Split(gitOut(t, repo, "log", "--format=%(trailers:key=Kubehistory-Change-Id,valueonly)", "main"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			ids[line]++
		}
	}
	for _, it := range items {
		switch n := ids[it.ChangeID]; {
		case n == 0:
			fig.lost++
			t.Errorf("change %s (%s@%s) is not in Git", it.ChangeID, it.Object.Name, it.Object.ResourceVersion)
		case n > 1:
			fig.duplicated += n - 1
			t.Errorf("change %s committed %d times", it.ChangeID, n)
		}
	}
	if len(ids) != len(expected) {
		t.Errorf("Git holds %d change IDs, the driver made %d changes", len(ids), len(expected))
	}
	for name, value := range finalData {
		var obj struct {
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(gitOut(t, repo, "show", "main:"+namespace+"/core/configmaps/"+name+".yaml")), &obj); err != nil || obj.Data["value"] != value {
			fig.gitDiffers++
			t.Errorf("Git has %s = %v, the cluster %q", name, obj.Data, value)
		}
	}
	if fig.lost > 0 || fig.duplicated > 0 {
		t.Errorf("lost %d, duplicated %d", fig.lost, fig.duplicated)
	}
	fmt.Printf("reliability: %d changes through kube-apiserver, %d replicas x %d indexes checked, %d replica kill -9, %d NATS node kill -9: lost=%d duplicated=%d git-differs=%d false-gaps=%d (%s=%d)\n",
		fig.changes, len(kh.Replicas), len(kh.Replicas), fig.replicaKills, fig.natsKills, fig.lost, fig.duplicated, fig.gitDiffers, fig.falseGaps, seedEnv, seed)
}

// leaseHolder is the replica running the destination's writer.
func leaseHolder(ctx context.Context, kubeconfig string) string {
	out, err := framework.KubectlRun(ctx, kubeconfig, "", "get", "lease", "-n", "kubehistory-system", destinations.LeaseName(change.DestinationRef{Namespace: namespace, Name: "history"}), "-o", "jsonpath={.spec.holderIdentity}")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

func mkdir(t *testing.T, parts ...string) string {
	t.Helper()
	d := filepath.Join(parts...)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func gitOut(t *testing.T, repo string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"--git-dir", repo}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return string(out)
}
