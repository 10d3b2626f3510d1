package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logsapi "k8s.io/component-base/logs/api/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// runRebuild runs `index rebuild` with args through the real command tree.
func runRebuild(t *testing.T, args ...string) (string, error) {
	t.Helper()
	// Each run applies the logging flags, which a process may do once.
	if err := logsapi.ResetForTest(nil); err != nil {
		t.Fatal(err)
	}
	cmd := NewCommand(context.Background())
	var out bytes.Buffer
	cmd.SetArgs(append([]string{"index", "rebuild"}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	rebuild, _, err := cmd.Find([]string{"index", "rebuild"})
	if err != nil {
		t.Fatal(err)
	}
	rebuild.SetOut(&out)
	err = cmd.Execute()
	return out.String(), err
}

// The embedded store of a stopped replica rebuilds into index.db with the stream's sequences, with the
// replica's own flags (server flags included), replacing the old file; a second run while a server
// holds the file is refused.
func TestIndexRebuildFromEmbeddedStream(t *testing.T) {
	dataDir := t.TempDir()
	replica := "replica-0"
	e, err := queue.StartEmbedded(queue.EmbeddedOptions{DataDir: filepath.Join(dataDir, "nats"), InProcessOnly: true, ServerName: "kubehistory-" + change.SubjectToken(replica)})
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := queue.EnsureStreams(ctx, q, 1); err != nil {
		t.Fatal(err)
	}
	dest := change.DestinationRef{Namespace: "kh", Name: "main"}
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for i := 1; i <= 30; i++ {
		rec := change.Record{Fields: change.Fields{
			Object:   change.Object{Version: "v1", Resource: "configmaps", Namespace: "team-a", Name: fmt.Sprint("cm-", i%4)},
			Verb:     change.VerbUpdate,
			ChangeID: fmt.Sprint("id-", i), ChangeTime: metav1.NewMicroTime(t0.Add(time.Duration(i) * time.Second)),
		}}
		data, _ := json.Marshal(rec)
		if err := q.Publish(ctx, []queue.Message{{Subject: dest.HistorySubject(), ID: rec.ChangeID, Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	e.Shutdown()
	// A stale index that the rebuild replaces.
	old, err := index.Open(filepath.Join(dataDir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Add(1, change.Record{Fields: change.Fields{ChangeID: "stale", Object: change.Object{Namespace: "other", Name: "x"}}}); err != nil {
		t.Fatal(err)
	}
	// Refused while "the server" holds it.
	if _, err := runRebuild(t, "--data-dir="+dataDir, "--replica-id="+replica); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("rebuild of an index in use: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := runRebuild(t, "--data-dir="+dataDir, "--replica-id="+replica, "--from=stream",
		"--secure-port=9443", "--tls-cert-file=/nonexistent", "--audit-port=9444", "--index-max-entries=20")
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	if !strings.Contains(out, "30 records") || !strings.Contains(out, "retention removed 10") {
		t.Errorf("output %q", out)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "index.db.rebuild")); !os.IsNotExist(err) {
		t.Errorf("the temporary file is left: %v", err)
	}
	x, err := index.Open(filepath.Join(dataDir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	res, err := x.List(index.ListOptions{Namespace: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != 20 || res.Items[0].Seq != 11 || res.Items[0].Record.ChangeID != "id-11" || res.LastSeq != 30 {
		t.Errorf("rebuilt index: %d items from %+v, last %d", len(res.Items), res.Items[0], res.LastSeq)
	}
	if stale, _ := x.List(index.ListOptions{Namespace: "other"}); len(stale.Items) != 0 {
		t.Error("the old index's entries survived the rebuild")
	}
}

func TestIndexRebuildValidation(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from=etcd"}, `--from "etcd" must be stream or git`},
		{[]string{"--from=git", "--destination=main"}, "--repository is required"},
		{[]string{"--from=git", "--repository=/tmp/x", "--destination=main"}, "must be <namespace>/<name>"},
		{[]string{"--index-max-entries=-1"}, "must not be negative"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			_, err := runRebuild(t, append(tc.args, "--data-dir="+t.TempDir())...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
			}
		})
	}
}
