package queue

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kubehistory/kubehistory/pkg/change"
)

func connected(t *testing.T) *Conn {
	t.Helper()
	e := startEmbedded(t, EmbeddedOptions{DataDir: t.TempDir(), InProcessOnly: true})
	t.Cleanup(e.Shutdown)
	c, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := EnsureStreams(context.Background(), c, 1); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitBacklog polls the consumer's state until cond holds: acknowledgements are asynchronous.
func waitBacklog(t *testing.T, cons Consumer, what string, cond func(Backlog) bool) Backlog {
	t.Helper()
	var b Backlog
	var lastErr error
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			b, lastErr = cons.Backlog(ctx)
			return lastErr == nil && cond(b), nil
		}); err != nil {
		t.Fatalf("timed out waiting for %s: last %+v, %v", what, b, lastErr)
	}
	return b
}

func TestConsumerAckNakInProgress(t *testing.T) {
	c := connected(t)
	ctx := context.Background()
	p, err := NewPublisher(c, PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	changes := testChanges("audit-1", 3)
	if err := p.Publish(ctx, changes); err != nil {
		t.Fatal(err)
	}
	dest := changes[0].Destination
	cfg := ConsumerConfig{Stream: change.ChangesStream, Durable: ChangesConsumerName(dest), FilterSubject: dest.ChangesSubject(), AckWait: time.Hour}
	cons, err := c.Consumer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Fetch(ctx, 10, 2*time.Second)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("fetched %d messages, %v", len(msgs), err)
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+1) || m.NumDelivered != 1 || m.MsgID != changes[i].ChangeID || m.Subject != dest.ChangesSubject() || m.Time.IsZero() {
			t.Errorf("message %d: seq %d delivered %d id %q subject %s time %s", i, m.Seq, m.NumDelivered, m.MsgID, m.Subject, m.Time)
		}
	}
	b := waitBacklog(t, cons, "three unacknowledged", func(b Backlog) bool { return b.AckPending == 3 })
	if b.Pending != 0 || !b.Oldest.Equal(msgs[0].Time) {
		t.Errorf("backlog %+v, want the first message's time %s", b, msgs[0].Time)
	}

	if err := msgs[0].Ack(); err != nil {
		t.Fatal(err)
	}
	if err := msgs[1].Nak(); err != nil {
		t.Fatal(err)
	}
	if err := msgs[2].InProgress(); err != nil {
		t.Fatal(err)
	}
	again, err := cons.Fetch(ctx, 10, 2*time.Second)
	if err != nil || len(again) != 1 || again[0].Seq != 2 || again[0].NumDelivered != 2 {
		t.Fatalf("after a nak: %+v, %v", again, err)
	}
	if err := again[0].Ack(); err != nil {
		t.Fatal(err)
	}
	b = waitBacklog(t, cons, "only the third unacknowledged", func(b Backlog) bool { return b.AckPending == 1 })
	if !b.Oldest.Equal(msgs[2].Time) {
		t.Errorf("oldest %s, want the third message's %s", b.Oldest, msgs[2].Time)
	}
	if got, err := c.ConsumerBacklog(ctx, change.ChangesStream, cfg.Durable); err != nil || got.AckPending != 1 {
		t.Errorf("ConsumerBacklog %+v, %v", got, err)
	}
	if err := msgs[2].Term(); err != nil {
		t.Fatal(err)
	}
	waitBacklog(t, cons, "nothing left", func(b Backlog) bool { return b.AckPending == 0 && b.Oldest.IsZero() })

	// Nothing to fetch: no error, no message.
	if none, err := cons.Fetch(ctx, 10, 50*time.Millisecond); err != nil || len(none) != 0 {
		t.Fatalf("idle fetch: %d messages, %v", len(none), err)
	}

	// The same consumer again keeps its position; recreated at a sequence it starts there.
	if cons, err = c.Consumer(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if none, err := cons.Fetch(ctx, 10, 50*time.Millisecond); err != nil || len(none) != 0 {
		t.Fatalf("reopened consumer: %d messages, %v", len(none), err)
	}
	cfg.Recreate, cfg.StartSeq = true, 2
	if cons, err = c.Consumer(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if from2, err := cons.Fetch(ctx, 10, 2*time.Second); err != nil || len(from2) != 2 || from2[0].Seq != 2 || from2[0].NumDelivered != 1 {
		t.Fatalf("recreated at 2: %+v, %v", from2, err)
	}
}

// countingAcker counts InProgress calls and reports each on calls.
type countingAcker struct {
	Acker
	calls chan struct{}
}

func (a countingAcker) InProgress() error {
	a.calls <- struct{}{}
	return nil
}

func TestKeepInProgress(t *testing.T) {
	calls := make(chan struct{})
	msgs := []*Msg{{Seq: 1, Acker: countingAcker{calls: calls}}, {Seq: 2, Acker: countingAcker{calls: calls}}}
	stop := KeepInProgress(msgs, 30*time.Millisecond)
	for range 3 * len(msgs) { // three rounds: every message, again and again
		select {
		case <-calls:
		case <-time.After(30 * time.Second):
			t.Fatal("messages not kept in progress")
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		stop()
	}()
	for { // a round under way when stop came may still finish
		select {
		case <-done:
			return
		case <-calls:
		}
	}
}

func TestPublishAndReplay(t *testing.T) {
	c := connected(t)
	ctx := context.Background()
	dest := change.DestinationRef{Namespace: "team-a", Name: "repo"}
	var msgs []Message
	for i := range 5 {
		msgs = append(msgs, Message{Subject: dest.HistorySubject(), ID: fmt.Sprintf("id-%d", i), Data: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
	for range 2 { // published twice, stored once
		if err := c.Publish(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Publish(ctx, []Message{{Subject: "elsewhere", ID: "x"}}); err == nil {
		t.Error("a subject of no stream was published")
	}
	st, err := c.StreamState(ctx, change.HistoryStream)
	if err != nil || st.Msgs != 5 || st.FirstSeq != 1 || st.LastSeq != 5 {
		t.Fatalf("stream state %+v, %v", st, err)
	}
	tests := []struct {
		name  string
		last  uint64
		batch int
		want  int
	}{
		{name: "all, small batches", last: 5, batch: 2, want: 5},
		{name: "up to 3", last: 3, batch: 10, want: 3},
		{name: "empty", last: 0, batch: 10, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []*Msg
			err := c.Replay(ctx, change.HistoryStream, tc.last, tc.batch, func(b []*Msg) error {
				if len(b) > tc.batch {
					t.Errorf("batch of %d", len(b))
				}
				got = append(got, b...)
				return nil
			})
			if err != nil || len(got) != tc.want {
				t.Fatalf("replayed %d, %v", len(got), err)
			}
			for i, m := range got {
				if m.Seq != uint64(i+1) || m.MsgID != msgs[i].ID || string(m.Data) != string(msgs[i].Data) {
					t.Errorf("message %d: seq %d id %s data %s", i, m.Seq, m.MsgID, m.Data)
				}
			}
		})
	}
	stop := errors.New("stop")
	if err := c.Replay(ctx, change.HistoryStream, 5, 2, func([]*Msg) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Replay returned %v, want fn's error", err)
	}
}

func TestStatusKV(t *testing.T) {
	c := connected(t)
	ctx := context.Background()
	kv, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := change.DestinationRef{Namespace: "team-a", Name: "repo.main"}
	b := change.DestinationRef{Namespace: "team-b", Name: "r"}
	if _, err := kv.Get(ctx, a); !errors.Is(err, ErrStatusNotFound) {
		t.Fatalf("Get of a missing status: %v", err)
	}
	if err := kv.Put(ctx, a, &change.RepoState{Branch: "main", CommittedChanges: 3}); err != nil {
		t.Fatal(err)
	}
	if st, err := kv.Get(ctx, a); err != nil || st.Branch != "main" || st.CommittedChanges != 3 {
		t.Fatalf("Get %+v, %v", st, err)
	}
	if refs, err := kv.List(ctx); err != nil || len(refs) != 1 || refs[0] != a {
		t.Fatalf("List %v, %v", refs, err)
	}

	wctx, cancel := context.WithCancel(ctx)
	events, err := kv.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func() StatusEvent {
		t.Helper()
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("watch closed")
			}
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("no status event")
		}
		return StatusEvent{}
	}
	if e := next(); e.Type != StatusPut || e.Ref != a || e.State.CommittedChanges != 3 || e.Rev == 0 {
		t.Fatalf("initial event %+v", e)
	}
	if e := next(); e.Type != StatusSynced {
		t.Fatalf("want the end of the initial values, got %+v", e)
	}
	if err := kv.Put(ctx, b, &change.RepoState{Branch: "dev"}); err != nil {
		t.Fatal(err)
	}
	if e := next(); e.Type != StatusPut || e.Ref != b || e.State.Branch != "dev" {
		t.Fatalf("live put %+v", e)
	}
	if err := kv.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, change.DestinationRef{Namespace: "x", Name: "never"}); err != nil {
		t.Fatalf("deleting a missing status: %v", err)
	}
	if e := next(); e.Type != StatusDeleted || e.Ref != a {
		t.Fatalf("live delete %+v", e)
	}
	cancel()
	for range events { // closed once the context ends
	}
}
