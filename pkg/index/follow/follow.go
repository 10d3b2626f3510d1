// Package follow feeds a replica's index from JetStream: the committed records of KUBEHISTORY_HISTORY
// (through a durable consumer of this replica, resuming after the index's last sequence) and the
// writers' RepoStatus bucket. It is the only place where the index meets NATS.
package follow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// Follower keeps an index up to date.
type Follower struct {
	js      jetstream.JetStream
	idx     *index.Index
	replica string
	// caughtUp is set once the index reached the stream's last sequence as it was when the follower
	// started: the index holds everything the stream held then (readiness). Comparing with a moving
	// target ("nothing pending") would keep a replica unready for as long as changes keep flowing.
	caughtUp atomic.Bool
	lastErr  atomic.Value
}

// New returns a follower for replica (which names its durable consumer).
func New(js jetstream.JetStream, idx *index.Index, replica string) *Follower {
	return &Follower{js: js, idx: idx, replica: replica}
}

// ConsumerName is the replica's durable consumer on KUBEHISTORY_HISTORY.
func ConsumerName(replica string) string {
	return "index_" + change.SubjectToken(strings.ReplaceAll(replica, "/", "_"))
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

// Run follows the stream and the status bucket until ctx ends, retrying on errors.
func (f *Follower) Run(ctx context.Context) {
	go f.runStatus(ctx)
	for ctx.Err() == nil {
		if err := f.runRecords(ctx); err != nil && ctx.Err() == nil {
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
	cfg := jetstream.ConsumerConfig{
		Durable:       ConsumerName(f.replica),
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 1000,
		AckWait:       30 * time.Second,
	}
	if last > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = last + 1
	}
	// The index, not the consumer, knows where this replica is: start a fresh consumer right after the
	// index's last sequence. Reusing the old one would deliver new records at once and the unacked ones
	// of a crashed run only after AckWait, and the index skips sequences below its last one.
	if err := f.js.DeleteConsumer(ctx, change.HistoryStream, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("resetting consumer %s: %w", cfg.Durable, err)
	}
	cons, err := f.js.CreateConsumer(ctx, change.HistoryStream, cfg)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	var target uint64
	if !f.caughtUp.Load() {
		stream, err := f.js.Stream(ctx, change.HistoryStream)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", change.HistoryStream, err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", change.HistoryStream, err)
		}
		target = info.State.LastSeq
	}
	f.checkCaughtUp(target)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("fetching records: %w", err)
		}
		for msg := range batch.Messages() {
			if err := f.add(msg); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
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

func (f *Follower) add(msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("record metadata: %w", err)
	}
	var rec change.Record
	err = change.DecodeRecord(msg.Data(), &rec)
	if errors.Is(err, change.ErrUnknownVersion) {
		// Written by a newer build: skipping it would leave a hole in this index, so it waits, with the
		// records after it, until this replica runs that build.
		return fmt.Errorf("record %d: %w", meta.Sequence.Stream, err)
	}
	if err != nil {
		// A record that does not decode is skipped, not retried forever: it would block the index.
		klog.ErrorS(err, "Skipping undecodable record", "seq", meta.Sequence.Stream)
		return msg.Term()
	}
	if _, err := f.idx.Add(meta.Sequence.Stream, rec); err != nil {
		return fmt.Errorf("indexing record %d: %w", meta.Sequence.Stream, err)
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
	store, err := queue.OpenStatusStore(ctx, f.js)
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
