package gitwriter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
)

// TestForgedTrailerDoesNotFreeze: a foreign commit pushed to the branch claims an impossible
// resourceVersion for a tracked file. Its trailers count for nothing: a writer that rebuilds its
// journal from Git still applies the next audit change, and a seed makes the file follow the cluster.
func TestForgedTrailerDoesNotFreeze(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	cfg := testConfig(t, "file://"+remote)
	r := startWriter(t, cfg, q, nil)
	web := mkChange("alice", "create", "configmaps", "team-a", "web", "100", data("color", "blue"))
	publish(t, q, "", web)
	waitRecords(t, q, 1)
	waitAcked(t, q)
	r.stop(t)

	path := gitrecord.ObjectPath(cfg.PathPrefix, web.Object)
	co := checkout(t, remote)
	if err := os.WriteFile(filepath.Join(co, path), []byte("forged: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitCLI(t, co, "commit", "-q", "-am", "forged\n\n"+gitrecord.TrailerObjectVersion+": "+path+" 18446744073709551615\n"+gitrecord.TrailerChangeID+": forged-id\n")
	gitCLI(t, co, "push", "-q", "origin", "HEAD:main")

	// A fresh data directory: the journal is rebuilt from the trailers, and must skip the forged commit.
	cfg.DataDir = t.TempDir()
	startWriter(t, cfg, q, nil)
	green := mkChange("alice", "update", "configmaps", "team-a", "web", "101", data("color", "green"))
	publish(t, q, "", green)
	recs := waitRecords(t, q, 2)
	waitAcked(t, q)
	if got := recordByID(recs)[green.ChangeID]; got.Git.Commit == "" {
		t.Fatalf("the audit change after the forged commit was not committed: %+v", got)
	}
	if got := gitCLI(t, checkout(t, remote), "show", "HEAD:"+path); !strings.Contains(got, "green") {
		t.Fatalf("file after the audit change:\n%s", got)
	}
	seed := mkSeed("configmaps", "team-a", "web", "102", data("color", "red"))
	publish(t, q, "", seed)
	recs = waitRecords(t, q, 3)
	waitAcked(t, q)
	if got := recordByID(recs)[seed.ChangeID]; got.Verb != change.VerbSeed {
		t.Fatalf("seed record: %+v", got)
	}
	if got := gitCLI(t, checkout(t, remote), "show", "HEAD:"+path); !strings.Contains(got, "red") {
		t.Fatalf("file after the seed:\n%s", got)
	}
}

// TestSeedBeatsImpossibleSealedVersion: even a version recorded by our own sealed commit (say, before
// an etcd restore without a revision bump, or a bug) cannot freeze a file when it is impossibly far
// ahead of what the reconciler observes.
func TestSeedBeatsImpossibleSealedVersion(t *testing.T) {
	q := startJetStream(t)
	remote := bareRepo(t)
	cfg := testConfig(t, "file://"+remote)
	startWriter(t, cfg, q, nil)
	web := mkChange("alice", "create", "configmaps", "team-a", "web", "18446744073709551615", data("color", "blue"))
	publish(t, q, "", web)
	waitRecords(t, q, 1)
	waitAcked(t, q)
	seed := mkSeed("configmaps", "team-a", "web", "200", data("color", "red"))
	publish(t, q, "", seed)
	waitRecords(t, q, 2)
	waitAcked(t, q)
	path := gitrecord.ObjectPath(cfg.PathPrefix, web.Object)
	if got := gitCLI(t, checkout(t, remote), "show", "HEAD:"+path); !strings.Contains(got, "red") {
		t.Fatalf("file after the seed:\n%s", got)
	}
}
