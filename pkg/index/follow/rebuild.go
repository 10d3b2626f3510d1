package follow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// rebuildBatch is how many records one index transaction takes during a rebuild: one fsync per batch
// instead of one per record, as the follower does.
const rebuildBatch = 1000

// RebuildStats says what a rebuild read.
type RebuildStats struct {
	// Read is the number of stream messages read; Added the records indexed (a record whose change ID
	// is already indexed is skipped, as the follower skips it); Skipped the undecodable ones.
	Read, Added, Skipped int
	// LastSeq is the stream's last sequence when the rebuild started; the index holds everything up to it.
	LastSeq uint64
}

// Replayer is what Rebuild needs of JetStream (queue.Conn implements it).
type Replayer interface {
	StreamState(ctx context.Context, stream string) (queue.StreamState, error)
	Replay(ctx context.Context, stream string, last uint64, batch int, fn func([]*queue.Msg) error) error
}

var _ Replayer = (*queue.Conn)(nil)

// Rebuild reads every record of KUBEHISTORY_HISTORY, up to the stream's last sequence when it starts,
// into idx (normally a fresh file) under its stream sequence, so the rebuilt index serves the same
// names and resourceVersions as before. It leaves no state on the server (queue.Conn.Replay): the
// replica's durable consumer keeps its position, and the follower skips what the rebuilt index
// already holds.
func Rebuild(ctx context.Context, src Replayer, idx *index.Index) (RebuildStats, error) {
	var st RebuildStats
	state, err := src.StreamState(ctx, change.HistoryStream)
	if err != nil {
		return st, err
	}
	st.LastSeq = state.LastSeq
	if state.Msgs == 0 {
		return st, nil
	}
	if state.FirstSeq > 1 {
		// The stream's limits removed older records: they are in Git only (rebuild from Git for them).
		klog.InfoS("Stream no longer holds its first records; the rebuilt index starts later", "stream", change.HistoryStream, "firstSeq", state.FirstSeq)
	}
	batch := make([]index.SeqRecord, 0, rebuildBatch)
	lastLog := time.Now()
	err = src.Replay(ctx, change.HistoryStream, st.LastSeq, rebuildBatch, func(msgs []*queue.Msg) error {
		for _, msg := range msgs {
			st.Read++
			var rec change.Record
			err := change.DecodeRecord(msg.Data, &rec)
			if errors.Is(err, change.ErrUnknownVersion) {
				return fmt.Errorf("record %d: %w", msg.Seq, err)
			}
			if err != nil || rec.ChangeID == "" {
				// As the follower does: a record that does not decode is no history entry.
				klog.ErrorS(err, "Skipping undecodable record", "seq", msg.Seq)
				st.Skipped++
				continue
			}
			batch = append(batch, index.SeqRecord{Seq: msg.Seq, Record: rec})
		}
		n, err := idx.AddBatch(batch)
		st.Added += n
		batch = batch[:0]
		if err != nil {
			return fmt.Errorf("indexing records up to %d: %w", msgs[len(msgs)-1].Seq, err)
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			klog.InfoS("Rebuilding the index from the stream", "seq", msgs[len(msgs)-1].Seq, "lastSeq", st.LastSeq)
		}
		return nil
	})
	return st, err
}
