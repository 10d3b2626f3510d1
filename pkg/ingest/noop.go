package ingest

import (
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"sync"
	"time"

	"k8s.io/utils/lru"
)

// A write that persisted nothing (a no-op apply, patch or update, a repeated delete of an object held
// by finalizers) is answered 2xx with the object as it was: kube-apiserver's storage compares the
// encoded result with what is stored and skips the write, so the resourceVersion does not move. Its
// audit event alone does not say so: only the response's resourceVersion is known, not the one
// before. Two proofs are used, each of which can only ever recognize a write that changed nothing
// (docs/decisions.md, "No-op writes"):
//
//   - the request named the resourceVersion it started from (an update or a scale with
//     metadata.resourceVersion, copied into objectRef.resourceVersion by kube-apiserver; a successful
//     write with it as precondition always moves it) and the response has the same one;
//   - a request that answered the same resourceVersion for the same object had already completed
//     when this request was received: whichever request wrote that version did so before that
//     completion, so not this one (lastVersions).

// DefaultLastVersions is how many objects' last published resourceVersions ingest remembers: about
// 10 MiB when full. An object evicted is only a no-op that may be recorded, never a change lost.
const DefaultLastVersions = 1 << 16

// lastVersions remembers, per object UID, the last resourceVersion ingest published for the object and
// the earliest time a request answering with that version completed. It is per process and starts
// empty: after a restart, or on another replica, a no-op is recorded rather than a change dropped. A
// nil *lastVersions remembers nothing.
type lastVersions struct {
	mu    sync.Mutex
	cache *lru.Cache
}

type seenVersion struct {
	rv        string
	completed time.Time
}

func newLastVersions(size int) *lastVersions {
	return &lastVersions{cache: lru.New(size)}
}

// unchanged reports whether a request received at received that answered resourceVersion rv for the
// object uid provably wrote nothing: a request answering rv had completed before it was received.
// Timestamps come from kube-apiserver's clock (microseconds), so the comparison assumes the clocks of
// the kube-apiserver replicas agree to better than the duration of a write.
func (l *lastVersions) unchanged(uid, rv string, received time.Time) bool {
	if l == nil || uid == "" || rv == "" || received.IsZero() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.cache.Get(uid)
	if !ok {
		return false
	}
	seen := v.(seenVersion)
	return seen.rv == rv && received.After(seen.completed)
}

// observe records that a request completed at completed answered rv for the object uid. An older
// version than the one remembered (a batch kube-apiserver re-sent late) changes nothing; for the
// same version the earliest completion is kept.
func (l *lastVersions) observe(uid, rv string, completed time.Time) {
	if l == nil || uid == "" || rv == "" || completed.IsZero() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if v, ok := l.cache.Get(uid); ok {
		seen := v.(seenVersion)
		switch {
		case seen.rv == rv:
			if !completed.Before(seen.completed) {
				return
			}
		case olderVersion(rv, seen.rv):
			return
		}
	}
	// The strings point into the batch body: copies keep it from being retained.
	l.cache.Add(string([]byte(uid)), seenVersion{rv: string([]byte(rv)), completed: completed})
}

// forget drops what is remembered of an object that was deleted.
func (l *lastVersions) forget(uid string) {
	if l == nil || uid == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cache.Remove(uid)
}

// olderVersion reports whether resourceVersion a is provably older than b. kube-apiserver's are etcd
// revisions (integers); other stores' are opaque, and then the later arrival wins.
func olderVersion(a, b string) bool {
	c, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && c < 0
}
