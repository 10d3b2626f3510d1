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

// A replica that starts behind becomes ready once it has what the stream held at its start, even while
// new records keep arriving; and it then holds every record exactly once.
func TestCaughtUpWhileRecordsKeepFlowing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
	if err := queue.EnsureStreams(ctx, q, 1); err != nil {
		t.Fatal(err)
	}
	dest := change.DestinationRef{Namespace: "a", Name: "main"}
	publish := func(i int) {
		rec := change.Record{Fields: change.Fields{
			Object:   change.Object{Version: "v1", Resource: "configmaps", Namespace: "a", Name: fmt.Sprint("cm-", i)},
			Verb:     change.VerbCreate,
			ChangeID: fmt.Sprintf("id-%d", i), ChangeTime: metav1.NowMicro(),
		}}
		data, _ := json.Marshal(&rec)
		if err := q.Publish(ctx, []queue.Message{{Subject: dest.HistorySubject(), ID: rec.ChangeID, Data: data}}); err != nil {
			t.Error(err)
		}
	}
	for i := 0; i < 500; i++ {
		publish(i)
	}
	idx, err := index.Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	f := New(q, idx, "replica-test")
	if f.CaughtUp() == nil {
		t.Fatal("caught up before reading anything")
	}
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	go f.Run(fctx)
	// Records keep arriving, faster than "nothing pending" would ever be observed.
	flowing := make(chan struct{})
	go func() {
		defer close(flowing)
		for i := 500; i < 1500 && ctx.Err() == nil; i++ {
			publish(i)
			time.Sleep(time.Millisecond)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for f.CaughtUp() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not caught up: %v", f.CaughtUp())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if last, _ := idx.LastSeq(); last < 500 {
		t.Errorf("caught up at seq %d, before the 500 records the stream held at start", last)
	}
	<-flowing
	deadline = time.Now().Add(30 * time.Second)
	for {
		res, err := idx.List(index.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Items) == 1500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("index holds %d of 1500 records", len(res.Items))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
