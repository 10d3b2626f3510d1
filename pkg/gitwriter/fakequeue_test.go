package gitwriter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// fakeQueue is an in-memory Queue: one consumer, messages delivered in order and again after a Nak,
// publishes deduplicated by ID as JetStream does (changes published to the destination's subject are
// delivered to the consumer, as the orphan deletes are). Every change of its state closes changed (and
// makes a new one), so that the writer's fetch and the test wait on what happened rather than on time.
type fakeQueue struct {
	mu       sync.Mutex
	seq      uint64
	ready    []*queue.Msg
	unacked  map[uint64]*queue.Msg
	settled  map[uint64]string // seq -> "ack", "term", "nak"
	attempts map[string]int    // publishes by message ID
	records  []queue.Message   // distinct records, in publish order
	cfg      queue.ConsumerConfig
	status   fakeStatus
	changed  chan struct{} // closed and replaced on every change (f.mu held)
}

func newFakeQueue() *fakeQueue {
	return &fakeQueue{unacked: map[uint64]*queue.Msg{}, settled: map[uint64]string{}, attempts: map[string]int{},
		status: fakeStatus{m: map[change.DestinationRef]change.RepoState{}}, changed: make(chan struct{})}
}

var _ Queue = (*fakeQueue)(nil)

// signal wakes every waiter (f.mu held).
func (f *fakeQueue) signal() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// add queues a message as if published to the changes stream and returns its sequence.
func (f *fakeQueue) add(subject, id string, data []byte) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	f.ready = append(f.ready, &queue.Msg{Subject: subject, Data: data, Seq: f.seq, MsgID: id, Time: time.Now()})
	f.signal()
	return f.seq
}

func (f *fakeQueue) addChange(t *testing.T, msgID string, ch change.Change) uint64 {
	t.Helper()
	data, err := json.Marshal(ch)
	if err != nil {
		t.Fatal(err)
	}
	return f.add(ch.Destination.ChangesSubject(), msgID+ch.ChangeID, data)
}

// waitFor waits until cond (called with f.mu held) holds, woken by every settlement and publish.
func (f *fakeQueue) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(60 * time.Second) // only guards against hanging forever
	for {
		f.mu.Lock()
		ok, changed := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (f *fakeQueue) Consumer(_ context.Context, cfg queue.ConsumerConfig) (queue.Consumer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg = cfg
	return f, nil
}

func (f *fakeQueue) Fetch(ctx context.Context, n int, wait time.Duration) ([]*queue.Msg, error) {
	if wait <= 0 {
		wait = queue.DefaultFetchWait
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		if len(f.ready) > 0 {
			k := min(n, len(f.ready))
			out := f.ready[:k:k]
			f.ready = f.ready[k:]
			for _, m := range out {
				m.NumDelivered++
				m.Acker = &fakeAcker{f: f, m: m}
				f.unacked[m.Seq] = m
			}
			f.mu.Unlock()
			return out, nil
		}
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil
		case <-timer.C:
			return nil, nil
		case <-changed:
		}
	}
}

func (f *fakeQueue) Backlog(context.Context) (queue.Backlog, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return queue.Backlog{Pending: uint64(len(f.ready)), AckPending: uint64(len(f.unacked))}, nil
}

func (f *fakeQueue) Publish(_ context.Context, msgs []queue.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range msgs {
		f.attempts[m.ID]++
		if f.attempts[m.ID] > 1 {
			continue // a duplicate: stored already
		}
		switch m.Subject {
		case dest.HistorySubject():
			f.records = append(f.records, m)
		case dest.ChangesSubject():
			f.seq++
			f.ready = append(f.ready, &queue.Msg{Subject: m.Subject, Data: m.Data, Seq: f.seq, MsgID: m.ID, Time: time.Now()})
		default:
			return fmt.Errorf("unexpected subject %s", m.Subject)
		}
	}
	f.signal()
	return nil
}

func (f *fakeQueue) Status(context.Context) (queue.StatusKV, error) { return &f.status, nil }

type fakeAcker struct {
	f *fakeQueue
	m *queue.Msg
}

func (a *fakeAcker) settle(how string, redeliver bool) error {
	a.f.mu.Lock()
	defer a.f.mu.Unlock()
	if _, ok := a.f.unacked[a.m.Seq]; !ok {
		return errors.New("message not pending")
	}
	delete(a.f.unacked, a.m.Seq)
	a.f.settled[a.m.Seq] = how
	if redeliver {
		a.f.ready = append(a.f.ready, a.m)
	}
	a.f.signal()
	return nil
}

func (a *fakeAcker) Ack() error                       { return a.settle("ack", false) }
func (a *fakeAcker) Term() error                      { return a.settle("term", false) }
func (a *fakeAcker) Nak() error                       { return a.settle("nak", true) }
func (a *fakeAcker) NakWithDelay(time.Duration) error { return a.settle("nak", true) }
func (a *fakeAcker) InProgress() error                { return nil }

type fakeStatus struct {
	mu sync.Mutex
	m  map[change.DestinationRef]change.RepoState
}

func (s *fakeStatus) Get(_ context.Context, ref change.DestinationRef) (change.RepoState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.m[ref]
	if !ok {
		return st, queue.ErrStatusNotFound
	}
	return CloneRepoState(st), nil
}

func (s *fakeStatus) Put(_ context.Context, ref change.DestinationRef, st *change.RepoState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[ref] = CloneRepoState(*st)
	return nil
}

func (s *fakeStatus) Delete(_ context.Context, ref change.DestinationRef) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, ref)
	return nil
}

func (s *fakeStatus) List(context.Context) ([]change.DestinationRef, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []change.DestinationRef
	for ref := range s.m {
		out = append(out, ref)
	}
	return out, nil
}

func (s *fakeStatus) Watch(context.Context) (<-chan queue.StatusEvent, error) {
	return nil, errors.New("the writer does not watch")
}

// TestWriterAgainstFakeQueue runs a writer against the in-memory queue: what it consumes, settles and
// publishes is exactly what the queue contract asks (real JetStream is in the other tests).
func TestWriterAgainstFakeQueue(t *testing.T) {
	fq := newFakeQueue()
	remote := bareRepo(t)
	cfg := testConfig(t, "file://"+remote)
	web := mkChange("alice", "create", "configmaps", "team-a", "web", "1", map[string]interface{}{"data": map[string]interface{}{"a": "1"}})
	db := mkChange("bob", "update", "configmaps", "team-a", "db", "2", map[string]interface{}{"data": map[string]interface{}{"b": "2"}})
	sWeb := fq.addChange(t, "", web)
	sBad := fq.add(dest.ChangesSubject(), "bad", []byte("not a change"))
	sDup := fq.addChange(t, "resent-", web) // the same change again, in the same batch
	sDB := fq.addChange(t, "", db)

	r := startWriter(t, cfg, fq, nil)
	fq.waitFor(t, "the batch settled and its records published", func() bool {
		return len(fq.settled) == 4 && len(fq.records) == 2
	})
	for seq, want := range map[uint64]string{sWeb: "ack", sBad: "term", sDup: "ack", sDB: "ack"} {
		if got := fq.settled[seq]; got != want {
			t.Errorf("message %d settled %q, want %q", seq, got, want)
		}
	}
	if want := (queue.ConsumerConfig{Stream: change.ChangesStream, Durable: queue.ChangesConsumerName(dest), Description: "kubehistory Git writer of " + dest.String(),
		FilterSubject: dest.ChangesSubject(), AckWait: DefaultAckWait, MaxAckPending: DefaultMaxAckPending}); fq.cfg != want {
		t.Errorf("consumer %+v, want %+v", fq.cfg, want)
	}
	for i, want := range []change.Change{web, db} {
		var rec change.Record
		if err := json.Unmarshal(fq.records[i].Data, &rec); err != nil {
			t.Fatal(err)
		}
		if fq.records[i].ID != want.ChangeID || rec.ChangeID != want.ChangeID || rec.Git.Commit == "" {
			t.Errorf("record %d: id %s, change %s, commit %q; want %s", i, fq.records[i].ID, rec.ChangeID, rec.Git.Commit, want.ChangeID)
		}
	}
	co := checkout(t, remote)
	if n := gitCLI(t, co, "rev-list", "--count", "HEAD"); n != "2" {
		t.Fatalf("%s commits, want one per actor", n)
	}
	head := gitCLI(t, co, "rev-parse", "HEAD")
	fq.waitFor(t, "the status after the push", func() bool {
		st, err := fq.status.Get(context.Background(), dest)
		return err == nil && st.HeadCommit == head && st.CommittedChanges == 2 && st.LastPushTime != nil
	})

	// Sent again past the duplicate window: no commit, the record published again under the same ID
	// (which JetStream deduplicates), the message acked.
	sAgain := fq.addChange(t, "later-", web)
	fq.waitFor(t, "the resent change settled", func() bool { return fq.settled[sAgain] != "" })
	if fq.settled[sAgain] != "ack" || fq.attempts[web.ChangeID] != 2 || len(fq.records) != 2 {
		t.Fatalf("resent: settled %q, %d publishes of its record, %d records", fq.settled[sAgain], fq.attempts[web.ChangeID], len(fq.records))
	}
	r.stop(t)
	if n := gitCLI(t, checkout(t, remote), "rev-list", "--count", "HEAD"); n != "2" {
		t.Fatalf("%s commits after the resent change, want 2", n)
	}
}
