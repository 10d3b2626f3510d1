package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubehistory/kubehistory/pkg/queue"
	"github.com/kubehistory/kubehistory/test/framework"
)

// TestJetStreamOutageIsRetried runs kubehistory against an external JetStream that this test owns,
// stops JetStream while kubectl changes tracked objects, and checks that the audit webhook answered 503,
// that kube-apiserver re-sent the batches, and that once JetStream is back every change is recorded
// exactly once. It has its own control plane, so the outage touches no other test.
func TestJetStreamOutageIsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := t.TempDir()
	natsDir := filepath.Join(dir, "nats")
	port, err := framework.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	startNATS := func() *queue.Embedded {
		t.Helper()
		js, err := queue.StartEmbedded(queue.EmbeddedOptions{DataDir: natsDir, Port: port, ServerName: "outage-test"})
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	js := startNATS()
	defer func() { js.Shutdown() }()

	plane, err := framework.Start(ctx, framework.Config{Dir: filepath.Join(dir, "plane"), Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	defer plane.Stop()
	kh, err := plane.InstallKubehistory(ctx, framework.InstallOptions{ExtraArgs: []string{fmt.Sprintf("--nats-url=nats://127.0.0.1:%d", port)}})
	if err != nil {
		t.Fatal(err)
	}
	admin := plane.AdminKubeconfig
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, err := framework.KubectlRun(ctx, admin, stdin, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	repo := filepath.Join(dir, "history.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	run("", "create", "namespace", "outage")
	run(fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: history, namespace: outage}
spec:
  url: file://%s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps, namespace: outage}
spec:
  destinationRef: {name: history}
  rules: [{apiGroups: [""], resources: ["configmaps"]}]
`, repo), "apply", "-f", "-")
	recorded := func() map[string]int {
		out, err := framework.KubectlRun(ctx, admin, "", "get", "resourcechanges", "-n", "outage", "-o",
			`jsonpath={range .items[*]}{.object.name}{"\n"}{end}`)
		if err != nil {
			return nil
		}
		got := map[string]int{}
		for _, n := range strings.Fields(out) {
			got[n]++
		}
		return got
	}
	// One change before the outage proves the path works.
	if err := framework.WaitFor(ctx, 60*time.Second, func() error {
		if _, err := framework.KubectlRun(ctx, admin, "", "-n", "outage", "create", "configmap", "before", "--from-literal=a=b"); err != nil && !strings.Contains(err.Error(), "already exists") {
			return err
		}
		if recorded()["before"] != 1 {
			return fmt.Errorf("the first change is not recorded yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	js.Shutdown()
	const n = 5
	for i := 0; i < n; i++ {
		// Batch mode: kube-apiserver answers these at once, whatever its audit webhook meets.
		run("", "-n", "outage", "create", "configmap", fmt.Sprintf("during-%d", i), "--from-literal=i="+strconv.Itoa(i))
	}
	// The webhook refuses the batch while JetStream is down.
	if err := framework.WaitFor(ctx, 30*time.Second, func() error {
		if c := metric(ctx, t, kh, "kubehistory_ingest_requests_total", map[string]string{"code": "503"}); c < 1 {
			return fmt.Errorf("no 503 answered yet (%v)", c)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := recorded(); got["during-0"] != 0 {
		t.Fatalf("a change was recorded while JetStream was down: %v", got)
	}
	// JetStream back on the same store, within kube-apiserver's retry span.
	js = startNATS()
	var got map[string]int
	if err := framework.WaitFor(ctx, 120*time.Second, func() error {
		got = recorded()
		for i := 0; i < n; i++ {
			if got[fmt.Sprintf("during-%d", i)] == 0 {
				return fmt.Errorf("during-%d not recorded yet: %v", i, got)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A sentinel made now follows the re-sent batches through the webhook, the stream and the writer:
	// once it is recorded, a duplicate of an earlier change would be too.
	run("", "-n", "outage", "create", "configmap", "sentinel")
	if err := framework.WaitFor(ctx, 60*time.Second, func() error {
		if got = recorded(); got["sentinel"] == 0 {
			return fmt.Errorf("the sentinel is not recorded yet: %v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for name, c := range got {
		if c != 1 {
			t.Errorf("%s recorded %d times", name, c)
		}
	}
	if len(got) != n+2 {
		t.Errorf("recorded %v, want before, during-0..%d and sentinel once each", got, n-1)
	}
	if ok := metric(ctx, t, kh, "kubehistory_ingest_requests_total", map[string]string{"code": "200"}); ok < 2 {
		t.Errorf("kube-apiserver's re-sent batches were not accepted: %v answers 200", ok)
	}
}

// metric reads one sample of the first replica's /metrics (0 when absent).
func metric(ctx context.Context, t *testing.T, kh *framework.Kubehistory, name string, labels map[string]string) float64 {
	t.Helper()
	text, err := kh.Metrics(ctx, kh.Replicas[0])
	if err != nil {
		t.Fatal(err)
	}
	v, _ := framework.MetricValue(text, name, labels)
	return v
}
