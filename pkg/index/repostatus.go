package index

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// keyRepoRev (in bucketMeta) is the newest revision of the writers' status bucket the index applied,
// a put or a delete: the resourceVersion of a RepoStatus list.
var keyRepoRev = []byte("repoStatusRev")

// RepoStatusEntry is a destination's RepoStatus as the index holds it.
type RepoStatusEntry struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Rev is the revision of the writers' status bucket that stored the state: the resourceVersion
	// the API shows, the same on every replica.
	Rev   uint64           `json:"rev"`
	State change.RepoState `json:"state"`
}

func repoKey(namespace, name string) []byte { return []byte(namespace + "/" + name) }

// decodeRepoStatus reads a stored entry. Files written before entries had a revision hold the flat
// status there; it reads with revision 0, to be replaced by the follower's first pass over the bucket.
func decodeRepoStatus(k, v []byte) (RepoStatusEntry, error) {
	var e RepoStatusEntry
	if err := json.Unmarshal(v, &e); err != nil {
		return e, fmt.Errorf("decoding RepoStatus %s: %w", k, err)
	}
	if e.Namespace == "" && e.Name == "" {
		e.Namespace, e.Name, _ = strings.Cut(string(k), "/")
	}
	return e, nil
}

// RepoStatusEvent is a change of a RepoStatus: Entry is the new state, or for a delete the last state
// with the revision of the delete; Prev is the state before (nil when the status is new).
type RepoStatusEvent struct {
	Deleted bool
	Entry   RepoStatusEntry
	Prev    *RepoStatusEntry
}

// ErrRepoStatusRevisionGone: the RepoStatus events after the revision asked for are no longer all
// kept (the index restarted since, or more than repoEventsKept happened): list again.
var ErrRepoStatusRevisionGone = errors.New("RepoStatus events after this revision are no longer kept")

// repoEventsKept is how many recent RepoStatus events a watch can resume from. There is one status
// per destination, written on every commit window at most: a minute of a busy installation.
const repoEventsKept = 1024

// repoFeed hands RepoStatus events to watchers and keeps the recent ones for resuming watches.
type repoFeed struct {
	// mu serializes the writes of statuses with their events, so that events come in revision
	// order and a watcher registered under mu sees every event its snapshot does not.
	mu     sync.Mutex
	recent []RepoStatusEvent
	// floor: every event with a revision above it is in recent.
	floor uint64
	subs  map[*RepoStatusWatch]struct{}
}

func newRepoFeed(rev uint64) *repoFeed {
	return &repoFeed{floor: rev, subs: map[*RepoStatusWatch]struct{}{}}
}

// publish keeps ev and hands it to every watcher without blocking; a full one is ended (f.mu held).
func (f *repoFeed) publish(ev RepoStatusEvent) {
	f.recent = append(f.recent, ev)
	if len(f.recent) > repoEventsKept {
		f.floor = f.recent[0].Entry.Rev
		f.recent = append(f.recent[:0:0], f.recent[1:]...)
	}
	for w := range f.subs {
		select {
		case w.ch <- ev:
		default:
			w.err = fmt.Errorf("%w (%d events) at revision %d", ErrSubscriberTooSlow, cap(w.ch), ev.Entry.Rev)
			delete(f.subs, w)
			close(w.ch)
		}
	}
}

// RepoStatusWatch receives the RepoStatus events that happen after it was made, in revision order.
type RepoStatusWatch struct {
	f   *repoFeed
	ch  chan RepoStatusEvent
	err error
}

// Events is closed when the watch ends; Err then tells why.
func (w *RepoStatusWatch) Events() <-chan RepoStatusEvent { return w.ch }

// Err is nil while the watch runs or after Cancel, ErrSubscriberTooSlow (wrapped) when the index ended
// it.
func (w *RepoStatusWatch) Err() error {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	return w.err
}

// Cancel ends the watch; safe to call more than once.
func (w *RepoStatusWatch) Cancel() {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if _, ok := w.f.subs[w]; ok {
		delete(w.f.subs, w)
		close(w.ch)
	}
}

// WatchRepoStatuses returns a watch of the RepoStatus events from now on, with room for buffer events
// not yet received. A watcher that also wants the current state watches first, then lists, and drops
// the events at or below the list's revision.
func (x *Index) WatchRepoStatuses(buffer int) *RepoStatusWatch {
	w, _, _ := x.watchRepoStatuses(0, false, buffer)
	return w
}

// WatchRepoStatusesAfter returns a watch like WatchRepoStatuses and the kept events after rev, which
// come before the watch's; ErrRepoStatusRevisionGone when some of those are no longer kept.
func (x *Index) WatchRepoStatusesAfter(rev uint64, buffer int) (*RepoStatusWatch, []RepoStatusEvent, error) {
	return x.watchRepoStatuses(rev, true, buffer)
}

func (x *Index) watchRepoStatuses(rev uint64, backlog bool, buffer int) (*RepoStatusWatch, []RepoStatusEvent, error) {
	if buffer < 1 {
		buffer = 1
	}
	f := x.repos
	f.mu.Lock()
	defer f.mu.Unlock()
	var past []RepoStatusEvent
	if backlog {
		if rev < f.floor {
			return nil, nil, fmt.Errorf("%w: %d (kept: after %d)", ErrRepoStatusRevisionGone, rev, f.floor)
		}
		for _, ev := range f.recent {
			if ev.Entry.Rev > rev {
				past = append(past, ev)
			}
		}
	}
	w := &RepoStatusWatch{f: f, ch: make(chan RepoStatusEvent, buffer)}
	f.subs[w] = struct{}{}
	return w, past, nil
}

func (x *Index) repoStatusRev() (uint64, error) {
	var rev uint64
	err := x.db.View(func(tx *bolt.Tx) error {
		rev = readRepoRev(tx)
		return nil
	})
	return rev, err
}

func readRepoRev(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyRepoRev); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func bumpRepoRev(tx *bolt.Tx, rev uint64) error {
	if rev <= readRepoRev(tx) {
		return nil
	}
	return tx.Bucket(bucketMeta).Put(keyRepoRev, seqKey(rev))
}

// PutRepoStatus stores the state of a destination at revision e.Rev. A revision at or below the stored
// one changes nothing (the follower reads the whole bucket again whenever it reconnects).
func (x *Index) PutRepoStatus(e RepoStatusEntry) error {
	f := x.repos
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := json.Marshal(&e)
	if err != nil {
		return err
	}
	var prev *RepoStatusEntry
	changed := false
	err = x.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRepos)
		k := repoKey(e.Namespace, e.Name)
		if v := b.Get(k); v != nil {
			old, err := decodeRepoStatus(k, v)
			if err == nil && old.Rev >= e.Rev {
				return nil
			}
			if err == nil {
				prev = &old
			}
		}
		changed = true
		if err := b.Put(k, data); err != nil {
			return err
		}
		return bumpRepoRev(tx, e.Rev)
	})
	if err != nil || !changed {
		return err
	}
	f.publish(RepoStatusEvent{Entry: e, Prev: prev})
	return nil
}

// DeleteRepoStatus removes the status of a destination, deleted at revision rev.
func (x *Index) DeleteRepoStatus(namespace, name string, rev uint64) error {
	f := x.repos
	f.mu.Lock()
	defer f.mu.Unlock()
	var last *RepoStatusEntry
	err := x.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRepos)
		k := repoKey(namespace, name)
		v := b.Get(k)
		if v == nil {
			return bumpRepoRev(tx, rev)
		}
		old, err := decodeRepoStatus(k, v)
		if err != nil {
			old = RepoStatusEntry{Namespace: namespace, Name: name}
		}
		if old.Rev > rev {
			return nil // a newer put already replaced what this delete removed
		}
		last = &old
		if err := b.Delete(k); err != nil {
			return err
		}
		return bumpRepoRev(tx, rev)
	})
	if err != nil || last == nil {
		return err
	}
	ev := RepoStatusEvent{Deleted: true, Entry: *last, Prev: last}
	ev.Entry.Rev = rev
	f.publish(ev)
	return nil
}

// RetainRepoStatuses removes the statuses of destinations not in keep ("namespace/name"): those the
// bucket no longer holds at all, after the follower read it whole. Their removal has no revision of
// its own, so watches cannot resume from before it.
func (x *Index) RetainRepoStatuses(keep map[string]bool) error {
	f := x.repos
	f.mu.Lock()
	defer f.mu.Unlock()
	var gone []RepoStatusEntry
	var rev uint64
	err := x.db.Update(func(tx *bolt.Tx) error {
		rev = readRepoRev(tx)
		b := tx.Bucket(bucketRepos)
		var drop [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if keep[string(k)] {
				continue
			}
			e, err := decodeRepoStatus(k, v)
			if err != nil {
				e = RepoStatusEntry{}
				e.Namespace, e.Name, _ = strings.Cut(string(k), "/")
			}
			gone = append(gone, e)
			drop = append(drop, append([]byte(nil), k...))
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(gone) == 0 {
		return err
	}
	for i := range gone {
		ev := RepoStatusEvent{Deleted: true, Entry: gone[i], Prev: &gone[i]}
		ev.Entry.Rev = rev
		f.publish(ev)
	}
	f.recent, f.floor = nil, rev
	return nil
}

// GetRepoStatus returns the status of a destination, or found=false.
func (x *Index) GetRepoStatus(namespace, name string) (*RepoStatusEntry, bool, error) {
	var out *RepoStatusEntry
	err := x.db.View(func(tx *bolt.Tx) error {
		k := repoKey(namespace, name)
		v := tx.Bucket(bucketRepos).Get(k)
		if v == nil {
			return nil
		}
		e, err := decodeRepoStatus(k, v)
		if err != nil {
			return err
		}
		out = &e
		return nil
	})
	return out, out != nil, err
}

// ListRepoStatuses returns the statuses of a namespace (all namespaces when empty), by name, and the
// revision they are current at.
func (x *Index) ListRepoStatuses(namespace string) ([]RepoStatusEntry, uint64, error) {
	var out []RepoStatusEntry
	var rev uint64
	err := x.db.View(func(tx *bolt.Tx) error {
		rev = readRepoRev(tx)
		c := tx.Bucket(bucketRepos).Cursor()
		prefix := []byte(namespace + "/")
		var k, v []byte
		if namespace == "" {
			k, v = c.First()
		} else {
			k, v = c.Seek(prefix)
		}
		for ; k != nil; k, v = c.Next() {
			if namespace != "" && !strings.HasPrefix(string(k), string(prefix)) {
				break
			}
			e, err := decodeRepoStatus(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, rev, err
}
