// Package index is each replica's local materialized view of the history: a bbolt file fed with the
// committed records of stream KUBEHISTORY_HISTORY (or rebuilt from Git trailers). The history API reads
// only from here, so it never blocks on NATS or Git. The stream sequence of a record is its index
// sequence and the resourceVersion the API shows, so every replica agrees on resourceVersions.
package index

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
)

var (
	bucketChanges = []byte("changes")   // seq -> Entry JSON
	bucketNames   = []byte("names")     // scope key + name -> seq
	bucketIDs     = []byte("changeids") // changeID -> seq
	// Secondary indexes, so that a list of one namespace or one object reads only its own entries
	// instead of decoding every entry: keys end in the 8-byte sequence, so a prefix scan is in
	// sequence order and seeks straight to a page's start; values are empty.
	bucketByScope  = []byte("byscope")  // scope ("c/" or "n/<namespace>/") + seq
	bucketByObject = []byte("byobject") // scope + object name + "/" + seq
	bucketRepos    = []byte("repostatus")
	bucketMeta     = []byte("meta")
	keyLastSeq     = []byte("lastSeq")
	keyCompacted   = []byte("compacted") // highest sequence removed by Compact
	keySchema      = []byte("schema")
	// keyCount is the number of entries; files written before it existed get it counted once at Open.
	keyCount = []byte("count")
	// schemaVersion 2 added the secondary indexes; Open builds them for a version 1 file.
	schemaVersion  = []byte("2")
	errStopListing = errors.New("stop")
)

// Entry is one indexed change: the record with the name and sequence the API serves it under.
type Entry struct {
	// Seq is the index sequence (the KUBEHISTORY_HISTORY stream sequence).
	Seq uint64 `json:"seq"`
	// Name is the API object name; names sort by change time.
	Name string `json:"name"`
	// Record is the committed change.
	Record change.Record `json:"record"`
}

// Namespace is the namespace the entry is served in: the object's namespace, empty for cluster changes.
func (e *Entry) Namespace() string {
	if e.Record.Cluster {
		return ""
	}
	return e.Record.Object.Namespace
}

// Index is a bbolt-backed history index. Safe for concurrent use.
type Index struct {
	db *bolt.DB

	// mu guards subs, the watchers' subscriptions that Add notifies.
	mu   sync.Mutex
	subs map[*Subscription]struct{}

	// recent keeps the newest entries decoded (recent.go).
	recent *recentCache

	// repos feeds RepoStatus watchers (repostatus.go).
	repos *repoFeed

	// read counts the entries lists have read since their pages were last dropped from the process
	// (releaseReadPages).
	read atomic.Int64
}

// ReleaseEvery is how many entries lists read before the index file's pages are unmapped from the
// process again. bbolt maps the whole file; every page a list touches stays mapped, with its neighbours
// (the kernel maps up to 64 KiB of cached pages around each fault), and counts in the process's RSS
// although the kernel could drop it. At 1,000,000 changes that grew the RSS past 800 MiB after scans
// (docs/benchmarks.md). Unmapping costs a few milliseconds and the next reads a minor fault per page,
// served from the page cache.
const ReleaseEvery = 1024

// releaseReadPages counts an entry read in tx and unmaps the file's pages once ReleaseEvery were, so
// that even one long scan keeps only so many mapped.
func (x *Index) releaseReadPages(tx *bolt.Tx) {
	if x.read.Add(1) < ReleaseEvery {
		return
	}
	x.read.Store(0)
	if err := x.dropMappedPages(tx); err != nil {
		klog.V(2).InfoS("Could not unmap the index file's pages", "err", err)
	}
}

// Open opens (creating when missing) the index file at path.
func Open(path string) (*Index, error) {
	return openWithTimeout(path, 5*time.Second)
}

func openWithTimeout(path string, timeout time.Duration) (*Index, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolt.ErrTimeout) {
		// Another server, or an index rebuild, holds the file.
		return nil, fmt.Errorf("opening index %s: %w", path, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("opening index %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketChanges, bucketNames, bucketIDs, bucketRepos, bucketMeta, bucketByScope, bucketByObject} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keySchema); {
		case v == nil, string(v) == string(schemaVersion):
		case string(v) == "1":
			if err := addSecondaryIndexes(tx); err != nil {
				return fmt.Errorf("upgrading index schema 1 to %s: %w", schemaVersion, err)
			}
		default:
			return fmt.Errorf("index schema %q is not %q: rebuild the index", v, schemaVersion)
		}
		if meta.Get(keyCount) == nil {
			if err := meta.Put(keyCount, seqKey(uint64(tx.Bucket(bucketChanges).Stats().KeyN))); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, schemaVersion)
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initializing index %s: %w", path, err)
	}
	x := &Index{db: db, subs: map[*Subscription]struct{}{}, recent: &recentCache{}}
	last, err := x.LastSeq()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("reading index %s: %w", path, err)
	}
	repoRev, err := x.repoStatusRev()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("reading index %s: %w", path, err)
	}
	x.repos = newRepoFeed(repoRev)
	x.recent.advance(last)
	return x, nil
}

// Close closes the file.
func (x *Index) Close() error { return x.db.Close() }

// EntryName is the API name of a record: its change time, then a prefix of its change ID, so names sort
// by time and are the same on every replica and after a rebuild.
func EntryName(rec *change.Record) string {
	id := rec.ChangeID
	if len(id) > 10 {
		id = id[:10]
	}
	return rec.ChangeTime.UTC().Format("20060102-150405.000000") + "-" + id
}

func seqKey(seq uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	return k
}

// scopeKey is the prefix of a scope in the secondary indexes. Namespace and object names cannot hold
// "/", so one scope's prefix is never the prefix of another's.
func scopeKey(cluster bool, namespace string) []byte {
	if cluster {
		return []byte("c/")
	}
	return []byte("n/" + namespace + "/")
}

func objectKey(cluster bool, namespace, objectName string) []byte {
	return append(scopeKey(cluster, namespace), objectName+"/"...)
}

// addSecondaryIndexes indexes the entries of a schema 1 file.
func addSecondaryIndexes(tx *bolt.Tx) error {
	return tx.Bucket(bucketChanges).ForEach(func(k, v []byte) error {
		var e Entry
		if err := decodeEntry(v, &e); err != nil {
			return fmt.Errorf("decoding entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		return putSecondary(tx, &e)
	})
}

func putSecondary(tx *bolt.Tx, e *Entry) error {
	seq := seqKey(e.Seq)
	if err := tx.Bucket(bucketByScope).Put(append(scopeKey(e.Record.Cluster, e.Namespace()), seq...), nil); err != nil {
		return err
	}
	return tx.Bucket(bucketByObject).Put(append(objectKey(e.Record.Cluster, e.Namespace(), e.Record.Object.Name), seq...), nil)
}

func nameKey(cluster bool, namespace, name string) []byte {
	scope := "n/" + namespace
	if cluster {
		scope = "c/"
	}
	return []byte(scope + "/" + name)
}

// Add indexes a record under seq. A record whose change ID is already indexed is skipped (the stream may
// redeliver), and so is a seq at or below the last one seen. It reports whether the record was added.
func (x *Index) Add(seq uint64, rec change.Record) (bool, error) {
	n, err := x.AddBatch([]SeqRecord{{Seq: seq, Record: rec}})
	return n == 1, err
}

// SeqRecord is a record with the sequence it is indexed under.
type SeqRecord struct {
	Seq    uint64
	Record change.Record
}

// AddBatch indexes records (in increasing sequence order) in one transaction, with the rules of Add for
// each, and reports how many it added. A rebuild uses it: one fsync per batch instead of per record.
func (x *Index) AddBatch(recs []SeqRecord) (int, error) {
	for _, r := range recs {
		if r.Record.ChangeID == "" {
			return 0, fmt.Errorf("record at seq %d has no change ID", r.Seq)
		}
	}
	var added []Entry
	var decoded []*Entry
	err := x.db.Update(func(tx *bolt.Tx) error {
		added, decoded = added[:0], decoded[:0]
		meta := tx.Bucket(bucketMeta)
		var last uint64
		if v := meta.Get(keyLastSeq); v != nil {
			last = binary.BigEndian.Uint64(v)
		}
		ids := tx.Bucket(bucketIDs)
		changes := tx.Bucket(bucketChanges)
		// Sequences only grow, so entries are appended at the end of the bucket: pages split full
		// instead of half full (bbolt's default, for random inserts), which makes the file, and the
		// pages a list maps, ~40 % smaller.
		changes.FillPercent = 1.0
		for i := range recs {
			seq, rec := recs[i].Seq, &recs[i].Record
			if seq <= last {
				continue
			}
			last = seq
			if ids.Get([]byte(rec.ChangeID)) != nil {
				continue
			}
			e := Entry{Seq: seq, Name: EntryName(rec), Record: *rec}
			e.Record.V = change.Version
			data, err := json.Marshal(&e)
			if err != nil {
				return err
			}
			if err := changes.Put(seqKey(seq), data); err != nil {
				return err
			}
			if err := tx.Bucket(bucketNames).Put(nameKey(rec.Cluster, e.Namespace(), e.Name), seqKey(seq)); err != nil {
				return err
			}
			if err := putSecondary(tx, &e); err != nil {
				return err
			}
			if err := ids.Put([]byte(rec.ChangeID), seqKey(seq)); err != nil {
				return err
			}
			added = append(added, e)
			// Cached as a reader decodes it from the file, so that the cache serves exactly that; a
			// rebuild's large batches decode only their newest entries.
			var stored *Entry
			if newest := recs[len(recs)-1].Seq; seq+RecentEntries > newest {
				stored = &Entry{}
				if err := decodeEntry(data, stored); err != nil {
					return fmt.Errorf("decoding entry %d: %w", seq, err)
				}
			}
			decoded = append(decoded, stored)
		}
		if err := meta.Put(keyLastSeq, seqKey(last)); err != nil {
			return err
		}
		return addCount(meta, int64(len(added)))
	})
	if err != nil {
		return 0, err
	}
	// After the commit: a subscriber that reads the index after subscribing sees every entry either
	// in what it reads or here, and drops the ones it read by sequence.
	for i := range added {
		if decoded[i] != nil {
			x.recent.put(decoded[i])
		}
		x.notify(added[i])
	}
	return len(added), nil
}

// addCount keeps the number of entries, so that retention by count needs no scan of the file.
func addCount(meta *bolt.Bucket, delta int64) error {
	var n uint64
	if v := meta.Get(keyCount); v != nil {
		n = binary.BigEndian.Uint64(v)
	}
	return meta.Put(keyCount, seqKey(uint64(int64(n)+delta)))
}

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
			x.releaseReadPages(tx) // the cursor maps the entry's page even when it is cached
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

// Compact removes the entries with a sequence at or below throughSeq (the index retention; Git keeps
// everything) and remembers the mark, so that readers resuming below it learn that entries are gone
// instead of silently missing them. It reports how many entries it removed.
func (x *Index) Compact(throughSeq uint64) (int, error) {
	removed := 0
	err := x.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyCompacted); v != nil && binary.BigEndian.Uint64(v) >= throughSeq {
			return nil
		}
		changes := tx.Bucket(bucketChanges)
		c := changes.Cursor()
		for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= throughSeq; k, v = c.First() {
			var e Entry
			if err := decodeEntry(v, &e); err != nil {
				return fmt.Errorf("decoding entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if err := x.unindex(tx, &e); err != nil {
				return err
			}
			if err := changes.Delete(k); err != nil {
				return err
			}
			removed++
		}
		if err := addCount(meta, -int64(removed)); err != nil {
			return err
		}
		return meta.Put(keyCompacted, seqKey(throughSeq))
	})
	return removed, err
}

// unindex removes an entry from every lookup bucket.
func (x *Index) unindex(tx *bolt.Tx, e *Entry) error {
	if err := tx.Bucket(bucketNames).Delete(nameKey(e.Record.Cluster, e.Namespace(), e.Name)); err != nil {
		return err
	}
	seq := seqKey(e.Seq)
	if err := tx.Bucket(bucketByScope).Delete(append(scopeKey(e.Record.Cluster, e.Namespace()), seq...)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketByObject).Delete(append(objectKey(e.Record.Cluster, e.Namespace(), e.Record.Object.Name), seq...)); err != nil {
		return err
	}
	return tx.Bucket(bucketIDs).Delete([]byte(e.Record.ChangeID))
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
