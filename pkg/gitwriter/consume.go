package gitwriter

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// pending is one change being committed.
type pending struct {
	msg  *queue.Msg
	dups []*queue.Msg // redeliveries of the same change ID in the same batch
	ch   change.Change
	seq  uint64

	resolved bool
	yaml     []byte // sanitized state to write; nil when there is none
	gone     bool
	markers  []change.Marker // added by the writer
	// outOfScope: matched by ingest without the object's labels, and no rule selects the object.
	outOfScope bool
	// plain is the cleaned object of a Secret that an encrypting destination stores SOPS-encrypted; its
	// file content depends on the file's previous content (see content).
	plain map[string]interface{}
}

// control is true for a reconciler's orphan check: it changes no object and makes no record itself.
func (p *pending) control() bool { return p.ch.OrphanCheck != nil }

// collect waits for a first change, then gathers more for the commit window.
func (w *Writer) collect(ctx context.Context) ([]*pending, error) {
	var out []*pending
	byID := map[string]*pending{}
	var deadline time.Time
	for len(out) < w.cfg.MaxBatch {
		var wait time.Duration // idle: the queue's poll, which bounds how long a stop takes
		if !deadline.IsZero() {
			if wait = time.Until(deadline); wait <= 0 {
				break
			}
		}
		msgs, err := w.cons.Fetch(ctx, w.cfg.MaxBatch-len(out), wait)
		for _, msg := range msgs {
			var ch change.Change
			err := change.DecodeChange(msg.Data, &ch)
			if errors.Is(err, change.ErrUnknownVersion) {
				// Written by a newer build (an upgrade under way): a writer of that build reads it.
				klog.ErrorS(err, "Leaving a change of a newer storage version", "destination", w.ref(), "subject", msg.Subject)
				_ = msg.NakWithDelay(time.Minute)
				continue
			}
			if err != nil || ch.ChangeID == "" {
				// A message no writer can ever read: terminate it rather than block the destination.
				klog.ErrorS(err, "Dropping an undecodable change", "destination", w.ref(), "subject", msg.Subject)
				_ = msg.Term()
				continue
			}
			if ch.Sweep {
				// A deletecollection without the list of objects: the reconciler's next pass finds the
				// files of the deleted objects as orphans (pruned or reported per the destination).
				klog.InfoS("Leaving a collection sweep to the reconciler", "destination", w.ref(), "changeID", ch.ChangeID,
					"group", ch.Object.Group, "resource", ch.Object.Resource, "namespace", ch.Object.Namespace)
				_ = msg.Ack()
				continue
			}
			if p, ok := byID[ch.ChangeID]; ok {
				p.dups = append(p.dups, msg)
				continue
			}
			if faultAckOnFetch {
				// Deliberately broken build (tag kubehistory_fault_ack_on_fetch): acks before the push,
				// to show that the reliability suite catches it. Never in a release.
				_ = msg.Ack()
			}
			p := &pending{msg: msg, ch: ch, seq: msg.Seq}
			byID[ch.ChangeID] = p
			out = append(out, p)
			if deadline.IsZero() {
				deadline = time.Now().Add(w.cfg.CommitWindow)
			}
		}
		if err != nil {
			return out, err
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if len(out) == 0 && !w.synced && !time.Now().Before(w.nextCheck) {
			return nil, nil // idle with a remote not read yet: Run checks it again
		}
	}
	return out, nil
}

func nakAll(batch []*pending) {
	for _, p := range batch {
		if p.msg != nil {
			_ = p.msg.Nak()
		}
		for _, d := range p.dups {
			_ = d.Nak()
		}
	}
}

func (w *Writer) processWithRetry(ctx context.Context, batch []*pending) error {
	// Keep the messages ours while we work on them, however long a push or an outage takes: AckWait is
	// short so that after a crash the batch comes back quickly, before later changes overtake it.
	msgs := make([]*queue.Msg, len(batch))
	for i, p := range batch {
		msgs[i] = p.msg
	}
	defer queue.KeepInProgress(msgs, w.cfg.AckWait)()
	backoff := w.cfg.retryBackoff()
	delay := backoff.Step()
	for {
		err := w.process(ctx, batch)
		if err == nil {
			return nil
		}
		var crash *crashError
		if errors.As(err, &crash) {
			return err
		}
		if ctx.Err() != nil {
			nakAll(batch)
			return nil
		}
		klog.ErrorS(err, "Committing changes failed; will retry", "destination", w.ref(), "changes", len(batch), "retryIn", delay)
		w.failed(ctx, err, len(batch))
		select {
		case <-ctx.Done():
			nakAll(batch)
			return nil
		case <-time.After(delay):
		}
		delay = backoff.Step()
	}
}
