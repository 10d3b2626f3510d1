package index

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/kubehistory/kubehistory/pkg/change"
)

func putSecondary(tx *bolt.Tx, e *Entry) error {
	seq := seqKey(e.Seq)
	if err := tx.Bucket(bucketByScope).Put(append(scopeKey(e.Record.Cluster, e.Namespace()), seq...), nil); err != nil {
		return err
	}
	return tx.Bucket(bucketByObject).Put(append(objectKey(e.Record.Cluster, e.Namespace(), e.Record.Object.Name), seq...), nil)
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
			if err := decodeEntryKeys(v, &e); err != nil {
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
