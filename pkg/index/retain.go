package index

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
)

// retainChunk bounds the entries one retention transaction removes: a first pass over a large index
// would otherwise hold one write transaction (and its dirty pages in memory) over the whole backlog.
const retainChunk = 10000

// Retention is the index's retention policy: entries older than MaxAge, and the oldest entries beyond
// MaxEntries, are removed. Git keeps everything; a zero field keeps everything on its account.
type Retention struct {
	MaxAge     time.Duration
	MaxEntries int
}

// RunRetention applies the policy at once and then every interval until ctx ends; with no bound it
// returns at once. A failed pass is logged and retried at the next tick: retention is housekeeping, and
// the API serves correctly (if from a larger file) meanwhile.
func (x *Index) RunRetention(ctx context.Context, p Retention, interval time.Duration) {
	if p.MaxAge <= 0 && p.MaxEntries <= 0 {
		return
	}
	klog.InfoS("Index retention on", "maxAge", p.MaxAge, "maxEntries", p.MaxEntries, "interval", interval)
	wait.UntilWithContext(ctx, func(context.Context) {
		start := time.Now()
		removed, err := x.Retain(p, start)
		switch {
		case err != nil:
			klog.ErrorS(err, "Applying index retention", "removed", removed)
		case removed > 0:
			klog.InfoS("Index retention removed entries", "removed", removed, "duration", time.Since(start))
		}
	}, interval)
}

// Retain applies the policy at now through Compact, so that readers resuming below the removed
// sequences get 410 instead of a silent gap. Entries go in sequence order: an entry is removed for its
// age only once every entry before it is removed too, so the index always holds a contiguous tail of the
// stream. It reports how many entries it removed.
func (x *Index) Retain(p Retention, now time.Time) (int, error) {
	if p.MaxAge <= 0 && p.MaxEntries <= 0 {
		return 0, nil
	}
	total := 0
	for {
		mark, err := x.retentionMark(p, now)
		if err != nil || mark == 0 {
			return total, err
		}
		n, err := x.Compact(mark)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// retentionMark is the highest sequence to compact in the next chunk, 0 when nothing is due.
func (x *Index) retentionMark(p Retention, now time.Time) (uint64, error) {
	var mark uint64
	err := x.db.View(func(tx *bolt.Tx) error {
		excess := 0
		if p.MaxEntries > 0 {
			if v := tx.Bucket(bucketMeta).Get(keyCount); v != nil {
				if n := int(binary.BigEndian.Uint64(v)); n > p.MaxEntries {
					excess = n - p.MaxEntries
				}
			}
		}
		cutoff := now.Add(-p.MaxAge)
		c := tx.Bucket(bucketChanges).Cursor()
		i := 0
		for k, v := c.First(); k != nil && i < retainChunk; k, v = c.Next() {
			if i >= excess {
				if p.MaxAge <= 0 {
					break
				}
				var e Entry
				if err := decodeEntryKeys(v, &e); err != nil {
					return fmt.Errorf("decoding entry %d: %w", binary.BigEndian.Uint64(k), err)
				}
				if !e.Record.ChangeTime.Time.Before(cutoff) {
					break
				}
			}
			mark = binary.BigEndian.Uint64(k)
			i++
		}
		return nil
	})
	return mark, err
}

// ErrInUse means another process (a running kubehistory-apiserver) holds the index file.
var ErrInUse = errors.New("the index file is in use by another process")

// Lock takes a shared lock on an existing index file without changing it, so that a server cannot open
// it (and one that has it open makes Lock fail with ErrInUse) while a rebuild replaces it. A missing file
// needs no lock: the returned release does nothing.
func Lock(path string, timeout time.Duration) (release func() error, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return func() error { return nil }, nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w (stop kubehistory-apiserver first)", path, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("locking index %s: %w", path, err)
	}
	return db.Close, nil
}
