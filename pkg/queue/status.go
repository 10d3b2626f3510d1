package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// StatusBucket is the JetStream KV bucket holding one RepoState per destination (key
// DestinationRef.RepoStateKey), so that every replica's history API serves the status of writers that
// run elsewhere.
const StatusBucket = change.RepoStatusBucket

const statusDescription = "kubehistory Git writer status, one key per GitDestination (<namespace>.<name>)"

// ErrStatusNotFound is wrapped by StatusKV.Get when a destination has no status: no writer has run
// for it yet, or it was deleted.
var ErrStatusNotFound = errors.New("no status stored")

// StatusKV holds the destinations' RepoStates: the writer of a destination puts it, the destinations
// manager deletes the status of a deleted destination, and every replica's index watches it.
type StatusKV interface {
	// Get returns the state of a destination as its writer last stored it; the error wraps
	// ErrStatusNotFound when there is none.
	Get(ctx context.Context, ref change.DestinationRef) (change.RepoState, error)
	// Put stores the state of a destination.
	Put(ctx context.Context, ref change.DestinationRef, st *change.RepoState) error
	// Delete removes a destination's status; deleting a missing one is no error.
	Delete(ctx context.Context, ref change.DestinationRef) error
	// List lists the destinations that have a status.
	List(ctx context.Context) ([]change.DestinationRef, error)
	// Watch delivers the current status of every destination (a StatusDeleted for one deleted and not
	// yet compacted away), then one StatusSynced, then every change as it happens. The channel is
	// closed when ctx ends or the watch breaks (the caller watches again). A value that does not decode
	// is logged and skipped.
	Watch(ctx context.Context) (<-chan StatusEvent, error)
}

// kvStatus is StatusKV on the JetStream KV bucket StatusBucket.
type kvStatus struct {
	kv jetstream.KeyValue
}

var _ StatusKV = (*kvStatus)(nil)

// Status opens StatusBucket, creating it when missing.
func (c *Conn) Status(ctx context.Context) (StatusKV, error) {
	kv, err := c.js.KeyValue(ctx, StatusBucket)
	if err == nil {
		return &kvStatus{kv: kv}, nil
	}
	kv, err = c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: StatusBucket, History: 1, Description: statusDescription})
	if err != nil {
		return nil, fmt.Errorf("opening KV bucket %s: %w", StatusBucket, err)
	}
	return &kvStatus{kv: kv}, nil
}

func (s *kvStatus) Get(ctx context.Context, ref change.DestinationRef) (change.RepoState, error) {
	var st change.RepoState
	e, err := s.kv.Get(ctx, ref.RepoStateKey())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return st, fmt.Errorf("reading status of %s: %w", ref, ErrStatusNotFound)
	}
	if err != nil {
		return st, fmt.Errorf("reading status of %s: %w", ref, err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, fmt.Errorf("decoding status of %s: %w", ref, err)
	}
	return st, nil
}

func (s *kvStatus) Put(ctx context.Context, ref change.DestinationRef, st *change.RepoState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, ref.RepoStateKey(), b); err != nil {
		return fmt.Errorf("storing status of %s: %w", ref, err)
	}
	return nil
}

func (s *kvStatus) Delete(ctx context.Context, ref change.DestinationRef) error {
	if err := s.kv.Delete(ctx, ref.RepoStateKey()); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("deleting status of %s: %w", ref, err)
	}
	return nil
}

func (s *kvStatus) List(ctx context.Context) ([]change.DestinationRef, error) {
	lister, err := s.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", StatusBucket, err)
	}
	defer func() { _ = lister.Stop() }()
	var out []change.DestinationRef
	for k := range lister.Keys() {
		if ref, ok := refFromKey(k); ok {
			out = append(out, ref)
		}
	}
	return out, nil
}

// refFromKey is the inverse of DestinationRef.RepoStateKey: a namespace has no dot, so the first dot
// ends it.
func refFromKey(k string) (change.DestinationRef, bool) {
	ns, name, ok := strings.Cut(k, ".")
	return change.DestinationRef{Namespace: ns, Name: name}, ok
}

// StatusEventType says what a StatusEvent reports.
type StatusEventType int

const (
	// StatusPut: the destination's state is State (at revision Rev).
	StatusPut StatusEventType = iota
	// StatusDeleted: the destination's status was deleted (at revision Rev).
	StatusDeleted
	// StatusSynced: every status present when the watch began has been delivered; the events after it
	// are live updates.
	StatusSynced
)

// StatusEvent is one event of StatusKV.Watch.
type StatusEvent struct {
	Type  StatusEventType
	Ref   change.DestinationRef
	Rev   uint64
	State change.RepoState
}

func (s *kvStatus) Watch(ctx context.Context) (<-chan StatusEvent, error) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", StatusBucket, err)
	}
	out := make(chan StatusEvent)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		send := func(e StatusEvent) bool {
			select {
			case out <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			var e jetstream.KeyValueEntry
			var ok bool
			select {
			case <-ctx.Done():
				return
			case e, ok = <-w.Updates():
				if !ok {
					return
				}
			}
			if e == nil { // the end of the initial values
				if !send(StatusEvent{Type: StatusSynced}) {
					return
				}
				continue
			}
			ref, ok := refFromKey(e.Key())
			if !ok {
				continue
			}
			ev := StatusEvent{Ref: ref, Rev: e.Revision()}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				if err := json.Unmarshal(e.Value(), &ev.State); err != nil {
					klog.ErrorS(err, "Skipping undecodable RepoStatus", "key", e.Key())
					continue
				}
			case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
				ev.Type = StatusDeleted
			default:
				continue
			}
			if !send(ev) {
				return
			}
		}
	}()
	return out, nil
}
