// Package follow feeds a replica's index from JetStream, through pkg/queue: the committed records of
// KUBEHISTORY_HISTORY (through a durable consumer of this replica, recreated at every start right after
// the index's last sequence) and the writers' RepoStatus bucket. It is the only place where the index
// meets the queue.
package follow

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// Source is what the follower needs of JetStream, in pkg/queue's terms (queue.Conn implements it).
type Source interface {
	Consumer(ctx context.Context, cfg queue.ConsumerConfig) (queue.Consumer, error)
	StreamState(ctx context.Context, stream string) (queue.StreamState, error)
	Status(ctx context.Context) (queue.StatusKV, error)
}

var _ Source = (*queue.Conn)(nil)

// errOutOfOrder: a record arrived before an earlier one; the follower starts again from the index.
var errOutOfOrder = errors.New("records out of order")

// Follower keeps an index up to date.
type Follower struct {
	src     Source
	idx     *index.Index
	replica string
	// caughtUp is set once the index reached the stream's last sequence as it was when the follower
	// started: the index holds everything the stream held then (readiness). Comparing with a moving
	// target ("nothing pending") would keep a replica unready for as long as changes keep flowing.
	caughtUp atomic.Bool
	lastErr  atomic.Value
	// outOfOrder counts the times a record arrived before an earlier one and the follower started again.
	outOfOrder atomic.Int64
}

// New returns a follower for replica (which names its durable consumer).
func New(src Source, idx *index.Index, replica string) *Follower {
	return &Follower{src: src, idx: idx, replica: replica}
}

// CaughtUp reports whether the index has read everything that was in the stream at start.
func (f *Follower) CaughtUp() error {
	if f.caughtUp.Load() {
		return nil
	}
	if err, ok := f.lastErr.Load().(error); ok && err != nil {
		return fmt.Errorf("index not caught up: %w", err)
	}
	return errors.New("index not caught up with KUBEHISTORY_HISTORY yet")
}

// Run follows the stream and the status bucket until ctx ends, retrying on errors. It returns only once
// both have stopped, so that the index can be closed after it.
func (f *Follower) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); f.runStatus(ctx) }()
	defer wg.Wait()
	for ctx.Err() == nil {
		err := f.runRecords(ctx)
		if errors.Is(err, errOutOfOrder) {
			// Not a failure: a fresh consumer from the index's last sequence delivers what is missing.
			klog.V(2).InfoS("Following KUBEHISTORY_HISTORY from the index's last sequence again", "replica", f.replica, "reason", err.Error())
			f.outOfOrder.Add(1)
			continue
		}
		if err != nil && ctx.Err() == nil {
			f.lastErr.Store(err)
			klog.ErrorS(err, "Following KUBEHISTORY_HISTORY; retrying", "replica", f.replica)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

func (f *Follower) runRecords(ctx context.Context) error {
	last, err := f.idx.LastSeq()
	if err != nil {
		return err
	}
	// The index, not the consumer, knows where this replica is: a fresh consumer starts right after the
	// index's last sequence. Reusing the old one would deliver new records at once and the unacked ones
	// of a crashed run only after AckWait, and the index skips sequences below its last one.
	cfg := queue.ConsumerConfig{
		Stream:        change.HistoryStream,
		Durable:       queue.HistoryConsumerName(f.replica),
		MaxAckPending: 1000,
		Recreate:      true,
	}
	if last > 0 {
		cfg.StartSeq = last + 1
	}
	cons, err := f.src.Consumer(ctx, cfg)
	if err != nil {
		return err
	}
	var target uint64
	if !f.caughtUp.Load() {
		st, err := f.src.StreamState(ctx, change.HistoryStream)
		if err != nil {
			return err
		}
		target = st.LastSeq
	}
	f.checkCaughtUp(target)
	// The index skips sequences at or below its last one, so records must be added in stream order: a
	// record delivered after a later one (its first delivery lost in transit, e.g. a pull request that
	// expired while the message was on its way, then redelivered after AckWait) would otherwise never be
	// indexed. next is the sequence the index needs; fresh says nothing was delivered by this consumer
	// yet — its first message is the stream's first one at or after next, so a gap before it is a hole
	// in the stream itself (deleted messages), not a delivery out of order.
	next, fresh := last+1, true
	for ctx.Err() == nil {
		msgs, err := cons.Fetch(ctx, 100, time.Second)
		for _, msg := range msgs {
			switch {
			case msg.Seq < next: // a redelivery of what the index has
				if err := msg.Ack(); err != nil {
					return err
				}
				continue
			case msg.Seq > next && !fresh:
				return fmt.Errorf("record %d delivered before %d: %w", msg.Seq, next, errOutOfOrder)
			case msg.Seq > next:
				klog.InfoS("KUBEHISTORY_HISTORY holds no records in this range (deleted from the stream)", "replica", f.replica, "from", next, "to", msg.Seq-1)
			}
			fresh = false
			if err := f.add(msg); err != nil {
				return err
			}
			next = msg.Seq + 1
		}
		if err != nil {
			return fmt.Errorf("fetching records: %w", err)
		}
		f.checkCaughtUp(target)
	}
	return nil
}

// checkCaughtUp marks the follower caught up once the index's last sequence reached target.
func (f *Follower) checkCaughtUp(target uint64) {
	if f.caughtUp.Load() {
		return
	}
	if last, err := f.idx.LastSeq(); err == nil && last >= target {
		f.caughtUp.Store(true)
		klog.InfoS("Index caught up with KUBEHISTORY_HISTORY", "replica", f.replica, "seq", last)
	}
}

func (f *Follower) add(msg *queue.Msg) error {
	var rec change.Record
	err := change.DecodeRecord(msg.Data, &rec)
	if errors.Is(err, change.ErrUnknownVersion) {
		// Written by a newer build: skipping it would leave a hole in this index, so it waits, with the
		// records after it, until this replica runs that build.
		return fmt.Errorf("record %d: %w", msg.Seq, err)
	}
	if err != nil {
		// A record that does not decode is skipped, not retried forever: it would block the index.
		klog.ErrorS(err, "Skipping undecodable record", "seq", msg.Seq)
		return msg.Term()
	}
	if _, err := f.idx.Add(msg.Seq, rec); err != nil {
		return fmt.Errorf("indexing record %d: %w", msg.Seq, err)
	}
	return msg.Ack()
}

// runStatus mirrors the writers' RepoStatus bucket into the index.
func (f *Follower) runStatus(ctx context.Context) {
	for ctx.Err() == nil {
		if err := f.watchStatus(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Watching the RepoStatus bucket; retrying")
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

func (f *Follower) watchStatus(ctx context.Context) error {
	store, err := f.src.Status(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := store.Watch(ctx)
	if err != nil {
		return err
	}
	// The watch first delivers the current status of every destination, then StatusSynced, then live
	// updates. A status the index has and the bucket does not is gone: removed when the first pass ends.
	seen := map[string]bool{}
	initial := true
	for {
		var e queue.StatusEvent
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case e, ok = <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("status watch closed")
			}
		}
		switch e.Type {
		case queue.StatusSynced:
			if initial {
				initial = false
				if err := f.idx.RetainRepoStatuses(seen); err != nil {
					return err
				}
			}
		case queue.StatusPut:
			if initial {
				seen[e.Ref.Namespace+"/"+e.Ref.Name] = true
			}
			if err := f.idx.PutRepoStatus(index.RepoStatusEntry{Namespace: e.Ref.Namespace, Name: e.Ref.Name, Rev: e.Rev, State: e.State}); err != nil {
				return err
			}
		case queue.StatusDeleted:
			if err := f.idx.DeleteRepoStatus(e.Ref.Namespace, e.Ref.Name, e.Rev); err != nil {
				return err
			}
		}
	}
}
