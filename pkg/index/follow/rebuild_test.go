package follow

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// Rebuild reads a real embedded stream into a fresh index under the stream's sequences: more records
// than one batch, an undecodable message skipped, a change ID published twice (past the duplicate
// window) indexed once, exactly as the follower indexes them.
func TestRebuildFromStream(t *testing.T) {
	e, err := queue.StartEmbedded(queue.EmbeddedOptions{DataDir: t.TempDir(), InProcessOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	q, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	if err := queue.EnsureStreams(ctx, q, 1); err != nil {
		t.Fatal(err)
	}
	empty, err := index.Open(filepath.Join(t.TempDir(), "empty.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if st, err := Rebuild(ctx, q, empty); err != nil || st.Added != 0 {
		t.Fatalf("empty stream: %+v, %v", st, err)
	}

	dest := change.DestinationRef{Namespace: "kh", Name: "main"}
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const n = 2500
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("id-%d", i)
		if i == 2000 {
			id = "id-7" // a re-publish of an indexed change
		}
		rec := change.Record{Fields: change.Fields{
			Object:   change.Object{Version: "v1", Resource: "configmaps", Namespace: fmt.Sprint("ns-", i%3), Name: "web"},
			Verb:     change.VerbUpdate,
			ChangeID: id, ChangeTime: metav1.NewMicroTime(t0.Add(time.Duration(i) * time.Second)),
		}}
		data, _ := json.Marshal(rec)
		if i == 1500 {
			data = []byte("{not json")
		}
		// Every message has its own ID: the re-published change is a second message, as past the
		// duplicate window.
		if err := q.Publish(ctx, []queue.Message{{Subject: dest.HistorySubject(), ID: fmt.Sprint("msg-", i), Data: data}}); err != nil {
			t.Fatal(err)
		}
	}
	x, err := index.Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	st, err := Rebuild(ctx, q, x)
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != n || st.Skipped != 1 || st.Added != n-2 || st.LastSeq != n {
		t.Errorf("stats %+v", st)
	}
	if last, _ := x.LastSeq(); last != n {
		t.Errorf("LastSeq = %d", last)
	}
	res, err := x.List(index.ListOptions{Namespace: "ns-1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range res.Items {
		// The stream holds one record per published message in order, so record i is at seq i.
		if want := fmt.Sprintf("id-%d", e.Seq); e.Record.ChangeID != want {
			t.Fatalf("seq %d holds %s, want %s", e.Seq, e.Record.ChangeID, want)
		}
	}
	if len(res.Items) != 834 {
		t.Errorf("ns-1 has %d entries", len(res.Items))
	}
}
