package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// errStopListing ends a List that has its page.
var errStopListing = errors.New("stop")

// Count is the number of entries in the index.
func (x *Index) Count() (int, error) {
	var n uint64
	err := x.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyCount); v != nil {
			n = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return int(n), err
}

// LastSeq is the highest sequence the index has seen; a consumer resumes after it.
func (x *Index) LastSeq() (uint64, error) {
	var seq uint64
	err := x.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyLastSeq); v != nil {
			seq = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return seq, err
}

// Get returns the entry with this name in the scope, or found=false.
func (x *Index) Get(cluster bool, namespace, name string) (Entry, bool, error) {
	var e Entry
	found := false
	err := x.db.View(func(tx *bolt.Tx) error {
		seq := tx.Bucket(bucketNames).Get(nameKey(cluster, namespace, name))
		if seq == nil {
			return nil
		}
		data := tx.Bucket(bucketChanges).Get(seq)
		if data == nil {
			return nil
		}
		found = true
		return x.decode(binary.BigEndian.Uint64(seq), data, &e)
	})
	return e, found, err
}

// ListOptions select entries for List.
type ListOptions struct {
	// Cluster selects cluster changes (true) or namespaced ones.
	Cluster bool
	// Namespace limits namespaced changes to one namespace; empty means all.
	Namespace string
	// ObjectName limits the list to changes of objects with this name. With a namespace (or Cluster) it
	// reads the object index and decodes only that object's entries; across all namespaces it filters.
	ObjectName string
	// AfterSeq starts after this sequence (paging).
	AfterSeq uint64
	// MaxSeq is the snapshot to read: only entries with a sequence at or below it. Records are
	// append-only, so every page read with the same MaxSeq sees the same set. 0 reads the index's
	// last sequence at the time of the call.
	MaxSeq uint64
	// Limit stops after this many matching entries; 0 means no limit.
	Limit int
	// Match, when set, keeps only entries it returns true for; an error ends the list with it.
	Match func(*Entry) (bool, error)
}

// Selects reports whether an entry is in the scope, namespace and object of the options (Match aside).
func (o *ListOptions) Selects(e *Entry) bool {
	if e.Record.Cluster != o.Cluster {
		return false
	}
	if !o.Cluster && o.Namespace != "" && e.Record.Object.Namespace != o.Namespace {
		return false
	}
	return o.ObjectName == "" || e.Record.Object.Name == o.ObjectName
}

// ListResult is a page of entries.
type ListResult struct {
	Items []Entry
	// LastSeq is the snapshot the list was read at (the list's resourceVersion): MaxSeq when it was
	// given and not beyond the index, the index's last sequence otherwise.
	LastSeq uint64
	// Head is the index's last sequence when the list was read.
	Head uint64
	// Compacted is the highest sequence removed by Compact when the list was read: entries at or below
	// it are gone, so a page set resumed after a lower sequence would silently miss some.
	Compacted uint64
	// More is true when matching entries at or below LastSeq remain after the last item.
	More bool
}

// List returns entries in sequence order (which is commit order).
func (x *Index) List(opts ListOptions) (ListResult, error) {
	var res ListResult
	err := x.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyLastSeq); v != nil {
			res.Head = binary.BigEndian.Uint64(v)
		}
		if v := meta.Get(keyCompacted); v != nil {
			res.Compacted = binary.BigEndian.Uint64(v)
		}
		res.LastSeq = res.Head
		if opts.MaxSeq != 0 && opts.MaxSeq < res.Head {
			res.LastSeq = opts.MaxSeq
		}
		next := x.scan(tx, opts, res.LastSeq)
		changes := tx.Bucket(bucketChanges)
		if opts.Limit > 0 {
			res.Items = make([]Entry, 0, min(opts.Limit, 1024)) // a page is usually full
		}
		for {
			seq, v, ok := next()
			if !ok {
				break
			}
			var e Entry
			if p := x.recent.get(seq); p != nil {
				e = *p
			} else {
				if v == nil {
					// Compact removes an entry and its index keys in one transaction: the entry is there.
					if v = changes.Get(seqKey(seq)); v == nil {
						return fmt.Errorf("entry %d is indexed but missing", seq)
					}
				}
				if err := x.decode(seq, v, &e); err != nil {
					return fmt.Errorf("decoding entry %d: %w", seq, err)
				}
			}
			if !opts.Selects(&e) {
				continue
			}
			if opts.Match != nil {
				ok, err := opts.Match(&e)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
			}
			if opts.Limit > 0 && len(res.Items) == opts.Limit {
				res.More = true
				return errStopListing
			}
			res.Items = append(res.Items, e)
		}
		return nil
	})
	if errors.Is(err, errStopListing) {
		err = nil
	}
	return res, err
}

// decode reads the entry of seq, stored as data, from the recent cache or else from data (and caches it
// when recent).
func (x *Index) decode(seq uint64, data []byte, e *Entry) error {
	if p := x.recent.get(seq); p != nil {
		*e = *p
		return nil
	}
	if err := decodeEntry(data, e); err != nil {
		return err
	}
	cached := *e
	x.recent.put(&cached)
	return nil
}

// scan returns an iterator over the entries with a sequence in (opts.AfterSeq, maxSeq], through the
// narrowest index that covers opts: the object index for one object of one scope, the scope index for
// one namespace or the cluster scope, all entries otherwise. It yields each sequence with its encoded
// entry when the walk reads it anyway (all entries); through an index the value is nil, and the caller
// looks the entry up only if the recent cache does not hold it. ok is false at the end.
func (x *Index) scan(tx *bolt.Tx, opts ListOptions, maxSeq uint64) func() (uint64, []byte, bool) {
	changes := tx.Bucket(bucketChanges)
	start := seqKey(opts.AfterSeq + 1)
	var prefix []byte
	var c *bolt.Cursor
	switch {
	case opts.ObjectName != "" && (opts.Cluster || opts.Namespace != ""):
		prefix, c = objectKey(opts.Cluster, opts.Namespace, opts.ObjectName), tx.Bucket(bucketByObject).Cursor()
	case opts.Cluster || opts.Namespace != "":
		prefix, c = scopeKey(opts.Cluster, opts.Namespace), tx.Bucket(bucketByScope).Cursor()
	default:
		c := changes.Cursor()
		k, v := c.Seek(start)
		return func() (uint64, []byte, bool) {
			if k == nil || binary.BigEndian.Uint64(k) > maxSeq {
				k = nil
				return 0, nil, false
			}
			seq, data := binary.BigEndian.Uint64(k), v
			k, v = c.Next()
			return seq, data, true
		}
	}
	k, _ := c.Seek(append(append([]byte(nil), prefix...), start...))
	return func() (uint64, []byte, bool) {
		for k != nil && bytes.HasPrefix(k, prefix) {
			cur := k
			k, _ = c.Next()
			if len(cur) != len(prefix)+8 {
				continue
			}
			seq := binary.BigEndian.Uint64(cur[len(prefix):])
			if seq > maxSeq {
				break
			}
			return seq, nil, true
		}
		k = nil
		return 0, nil, false
	}
}
