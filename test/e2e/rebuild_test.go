package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
)

// listWithVersion lists the changes of a namespace in one request, with the list's resourceVersion.
func listWithVersion(t *testing.T, namespace string) ([]historyv1alpha1.ResourceChange, uint64) {
	t.Helper()
	// The raw list: kubectl get -o json rebuilds a v1 List without the resourceVersion.
	out, err := kubectlAs(env.plane.AdminKubeconfig, "", "get", "--raw", "/apis/history.kubehistory.io/v1alpha1/namespaces/"+namespace+"/resourcechanges")
	if err != nil {
		t.Fatal(err)
	}
	var list historyv1alpha1.ResourceChangeList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	rv, err := strconv.ParseUint(list.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("list resourceVersion %q: %v", list.ResourceVersion, err)
	}
	return list.Items, rv
}

// TestIndexRebuildFromStream deletes a stopped replica's index, rebuilds it from the stream with the
// replica's own command line, and lists the same items in the same order with the same names and
// resourceVersions through the aggregator.
func TestIndexRebuildFromStream(t *testing.T) {
	setupHistory(t)
	ctx := context.Background()
	kh := env.kh
	r := kh.Replicas[0]
	before, beforeRV := listWithVersion(t, historyNS)
	if len(before) < minHistory {
		t.Fatalf("only %d changes in %s before the rebuild", len(before), historyNS)
	}

	kh.Kill(r)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			// The other tests need the replica, whatever happened here.
			if err := kh.Restart(ctx, r); err != nil {
				t.Errorf("restarting %s: %v", r.Name, err)
			}
		}
	})
	indexFile := filepath.Join(r.DataDir, "index.db")
	if err := os.Remove(indexFile); err != nil {
		t.Fatal(err)
	}
	args := r.Args()
	cmd := exec.CommandContext(ctx, args[0], append([]string{"index", "rebuild", "--from=stream"}, args[1:]...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("index rebuild: %v\n%s%s", err, out, stderr.Bytes())
	}
	t.Logf("index rebuild: %s", strings.TrimSpace(string(out)))
	if !strings.Contains(string(out), "records from stream KUBEHISTORY_HISTORY") {
		t.Errorf("index rebuild said %q", out)
	}
	if _, err := os.Stat(indexFile); err != nil {
		t.Fatalf("no index after the rebuild: %v", err)
	}
	if err := kh.Restart(ctx, r); err != nil {
		t.Fatal(err)
	}
	restarted = true

	after, _ := listWithVersion(t, historyNS)
	// Changes indexed after the first list are not in it; everything up to its resourceVersion must be
	// there again, in the same order, under the same names and resourceVersions.
	var kept []historyv1alpha1.ResourceChange
	for _, c := range after {
		if rv, _ := strconv.ParseUint(c.ResourceVersion, 10, 64); rv <= beforeRV {
			kept = append(kept, c)
		}
	}
	if len(kept) != len(before) {
		t.Fatalf("after the rebuild %d changes at or below resourceVersion %d, before %d", len(kept), beforeRV, len(before))
	}
	for i := range before {
		b, a := before[i], kept[i]
		if a.Name != b.Name || a.ResourceVersion != b.ResourceVersion || a.ChangeID != b.ChangeID || a.Git.Commit != b.Git.Commit {
			t.Errorf("item %d: %s rv %s (%s), before %s rv %s (%s)", i, a.Name, a.ResourceVersion, a.ChangeID, b.Name, b.ResourceVersion, b.ChangeID)
		}
	}
}
