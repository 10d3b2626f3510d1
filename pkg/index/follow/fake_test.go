package follow

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// fakeSource is an in-memory Source: a stream of records delivered once each, and a status watch fed
// by the test. Every settlement closes changed (and makes a new one), so the test waits on what the
// follower did.
type fakeSource struct {
	mu      sync.Mutex
	msgs    []*queue.Msg
	next    int
	fetches int
	cfgs    []queue.ConsumerConfig
	settled map[uint64]string
	// lost are sequences whose next delivery is lost in transit (skipped once, as a pull request that
	// expired while they were on their way).
	lost    map[uint64]bool
	changed chan struct{}
	events  chan queue.StatusEvent
}

var _ Source = (*fakeSource)(nil)

func (f *fakeSource) signal() { close(f.changed); f.changed = make(chan struct{}) }

func (f *fakeSource) Consumer(_ context.Context, cfg queue.ConsumerConfig) (queue.Consumer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfgs = append(f.cfgs, cfg)
	// Like the recreated durable consumer, deliver from the configured sequence.
	f.next = 0
	for f.next < len(f.msgs) && f.msgs[f.next].Seq < cfg.StartSeq {
		f.next++
	}
	return f, nil
}

func (f *fakeSource) Fetch(ctx context.Context, n int, wait time.Duration) ([]*queue.Msg, error) {
	f.mu.Lock()
	f.fetches++
	f.signal()
	if f.next < len(f.msgs) {
		k := min(n, len(f.msgs)-f.next)
		var out []*queue.Msg
		for _, m := range f.msgs[f.next : f.next+k] {
			if f.lost[m.Seq] {
				delete(f.lost, m.Seq)
				continue
			}
			out = append(out, m)
		}
		f.next += k
		f.mu.Unlock()
		return out, nil
	}
	f.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
	return nil, nil
}

func (f *fakeSource) Backlog(context.Context) (queue.Backlog, error) { return queue.Backlog{}, nil }

func (f *fakeSource) StreamState(context.Context, string) (queue.StreamState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return queue.StreamState{Msgs: uint64(len(f.msgs)), FirstSeq: 1, LastSeq: uint64(len(f.msgs))}, nil
}

func (f *fakeSource) Status(context.Context) (queue.StatusKV, error) { return f, nil }

func (f *fakeSource) Get(context.Context, change.DestinationRef) (change.RepoState, error) {
	return change.RepoState{}, queue.ErrStatusNotFound
}
func (f *fakeSource) Put(context.Context, change.DestinationRef, *change.RepoState) error {
	return errors.New("read only")
}
func (f *fakeSource) Delete(context.Context, change.DestinationRef) error {
	return errors.New("read only")
}
func (f *fakeSource) List(context.Context) ([]change.DestinationRef, error) { return nil, nil }

// Watch hands the follower the test's own channel: a send returns once the follower took the event.
func (f *fakeSource) Watch(context.Context) (<-chan queue.StatusEvent, error) { return f.events, nil }

type fakeAck struct {
	f   *fakeSource
	seq uint64
}

func (a fakeAck) settle(how string) error {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	a.f.settled[a.seq] = how
	a.f.signal()
	return nil
}
func (a fakeAck) Ack() error                       { return a.settle("ack") }
func (a fakeAck) Term() error                      { return a.settle("term") }
func (a fakeAck) Nak() error                       { return a.settle("nak") }
func (a fakeAck) NakWithDelay(time.Duration) error { return a.settle("nak") }
func (a fakeAck) InProgress() error                { return nil }

// TestFollowerAgainstFakeSource: the follower indexes every record under its stream sequence, acks it,
// terminates one that does not decode, becomes ready when it reached the stream's last sequence, and
// mirrors the status watch (the statuses not seen in its first pass are dropped).
func TestFollowerAgainstFakeSource(t *testing.T) {
	f := &fakeSource{settled: map[uint64]string{}, changed: make(chan struct{}), events: make(chan queue.StatusEvent)}
	for i, id := range []string{"a", "", "c"} {
		seq := uint64(i + 1)
		data := []byte("{not json")
		if id != "" {
			data, _ = change.EncodeRecord(&change.Record{Fields: change.Fields{
				Object:   change.Object{Version: "v1", Resource: "configmaps", Namespace: "ns", Name: id},
				Verb:     change.VerbCreate,
				ChangeID: id, ChangeTime: metav1.NowMicro(),
			}})
		}
		f.msgs = append(f.msgs, &queue.Msg{Seq: seq, Data: data, Acker: fakeAck{f: f, seq: seq}})
	}
	idx, err := index.Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	// A status from an earlier run, gone from the bucket meanwhile.
	if err := idx.PutRepoStatus(index.RepoStatusEntry{Namespace: "old", Name: "gone", Rev: 1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fl := New(f, idx, "replica/0")
	go fl.Run(ctx)

	timeout := time.After(60 * time.Second) // only guards against hanging forever
	for {
		f.mu.Lock()
		// The second fetch comes after the follower handled the first batch (and checked whether it
		// caught up).
		done, changed := len(f.settled) == 3 && f.fetches >= 2, f.changed
		f.mu.Unlock()
		if done {
			break
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatal("records not settled")
		}
	}
	if f.settled[1] != "ack" || f.settled[2] != "term" || f.settled[3] != "ack" {
		t.Errorf("settled %v", f.settled)
	}
	if last, err := idx.LastSeq(); err != nil || last != 3 {
		t.Errorf("index last seq %d, %v", last, err)
	}
	if err := fl.CaughtUp(); err != nil {
		t.Errorf("not caught up after the stream's last sequence: %v", err)
	}
	f.mu.Lock()
	cfg := f.cfgs[0]
	f.mu.Unlock()
	if want := (queue.ConsumerConfig{Stream: change.HistoryStream, Durable: queue.HistoryConsumerName("replica/0"), MaxAckPending: 1000, Recreate: true}); cfg != want {
		t.Errorf("consumer %+v, want %+v", cfg, want)
	}

	// The status watch: one status in the first pass, then the end of it, then a delete.
	send := func(e queue.StatusEvent) {
		t.Helper()
		select {
		case f.events <- e:
		case <-timeout:
			t.Fatal("the follower does not watch the statuses")
		}
	}
	ref := change.DestinationRef{Namespace: "team-a", Name: "repo"}
	send(queue.StatusEvent{Type: queue.StatusPut, Ref: ref, Rev: 5, State: change.RepoState{Branch: "main"}})
	send(queue.StatusEvent{Type: queue.StatusSynced})
	send(queue.StatusEvent{Type: queue.StatusDeleted, Ref: ref, Rev: 6})
	// The watch is unbuffered and the follower handles one event at a time: this send returns once it
	// handled the delete.
	send(queue.StatusEvent{Type: queue.StatusPut, Ref: change.DestinationRef{Namespace: "team-b", Name: "r"}, Rev: 7})
	sts, _, err := idx.ListRepoStatuses("")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Namespace != "team-b" { // team-a is deleted, old/gone was not in the first pass
			t.Errorf("status %s/%s left in the index", st.Namespace, st.Name)
		}
	}
}

// A record whose delivery is lost and that the stream redelivers after later ones is still indexed:
// the follower sees the gap, starts again from the index's last sequence, and the index ends up with
// every record, in order. A hole in the stream itself (a deleted message) is crossed, not waited on.
func TestFollowerRecordsOutOfOrder(t *testing.T) {
	f := &fakeSource{settled: map[uint64]string{}, changed: make(chan struct{}), events: make(chan queue.StatusEvent),
		lost: map[uint64]bool{3: true}}
	for _, seq := range []uint64{1, 2, 3, 4, 5, 7, 8} { // 6 was deleted from the stream
		id := fmt.Sprint("c", seq)
		data, _ := change.EncodeRecord(&change.Record{Fields: change.Fields{
			Object: change.Object{Version: "v1", Resource: "configmaps", Namespace: "ns", Name: id},
			Verb:   change.VerbCreate, ChangeID: id, ChangeTime: metav1.NowMicro(),
		}})
		f.msgs = append(f.msgs, &queue.Msg{Seq: seq, Data: data, Acker: fakeAck{f: f, seq: seq}})
	}
	idx, err := index.Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	fl := New(f, idx, "replica/0")
	go func() { fl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	timeout := time.After(60 * time.Second) // only guards against hanging forever
	for {
		f.mu.Lock()
		changed := f.changed
		f.mu.Unlock()
		if n, _ := idx.Count(); n == 7 {
			break
		}
		select {
		case <-changed:
		case <-timeout:
			n, _ := idx.Count()
			t.Fatalf("index holds %d of 7 records", n)
		}
	}
	list, err := idx.List(index.ListOptions{Namespace: "ns"})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range list.Items {
		seqs = append(seqs, e.Seq)
	}
	if fmt.Sprint(seqs) != "[1 2 3 4 5 7 8]" {
		t.Errorf("indexed sequences %v, want [1 2 3 4 5 7 8]", seqs)
	}
	// Started again twice: for the lost record 3, and once at the hole (a fresh consumer from 6
	// delivering 7 first shows that 6 is not in the stream).
	if fl.outOfOrder.Load() != 2 {
		t.Errorf("started again %d times, want 2", fl.outOfOrder.Load())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.cfgs) != 3 || f.cfgs[1].StartSeq != 3 || f.cfgs[2].StartSeq != 6 {
		t.Errorf("consumers %+v, want a second one from sequence 3 and a third from 6", f.cfgs)
	}
}
