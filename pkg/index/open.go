package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
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
	schemaVersion = []byte("2")
)

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

// addSecondaryIndexes indexes the entries of a schema 1 file.
func addSecondaryIndexes(tx *bolt.Tx) error {
	return tx.Bucket(bucketChanges).ForEach(func(k, v []byte) error {
		var e Entry
		if err := decodeEntryKeys(v, &e); err != nil {
			return fmt.Errorf("decoding entry %d: %w", binary.BigEndian.Uint64(k), err)
		}
		return putSecondary(tx, &e)
	})
}
