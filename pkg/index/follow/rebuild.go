package follow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
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

// Rebuild reads every record of KUBEHISTORY_HISTORY, up to the stream's last sequence when it starts,
// into idx (normally a fresh file) under its stream sequence, so the rebuilt index serves the same
// names and resourceVersions as before. It reads through an ordered consumer, which leaves no state on
// the server: the replica's durable consumer keeps its position, and the follower skips what the
// rebuilt index already holds.
func Rebuild(ctx context.Context, js jetstream.JetStream, idx *index.Index) (RebuildStats, error) {
	var st RebuildStats
	stream, err := js.Stream(ctx, change.HistoryStream)
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", change.HistoryStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", change.HistoryStream, err)
	}
	st.LastSeq = info.State.LastSeq
	if info.State.Msgs == 0 {
		return st, nil
	}
	if info.State.FirstSeq > 1 {
		// The stream's limits removed older records: they are in Git only (rebuild from Git for them).
		klog.InfoS("Stream no longer holds its first records; the rebuilt index starts later", "stream", change.HistoryStream, "firstSeq", info.State.FirstSeq)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return st, fmt.Errorf("reading %s: %w", change.HistoryStream, err)
	}
	batch := make([]index.SeqRecord, 0, rebuildBatch)
	flush := func() error {
		n, err := idx.AddBatch(batch)
		st.Added += n
		batch = batch[:0]
		return err
	}
	lastLog := time.Now()
	for {
		msgs, err := cons.Fetch(rebuildBatch, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return st, fmt.Errorf("reading %s: %w", change.HistoryStream, err)
		}
		var seq uint64
		for msg := range msgs.Messages() {
			meta, err := msg.Metadata()
			if err != nil {
				return st, fmt.Errorf("record metadata: %w", err)
			}
			seq = meta.Sequence.Stream
			if seq > st.LastSeq {
				break
			}
			st.Read++
			var rec change.Record
			err = change.DecodeRecord(msg.Data(), &rec)
			if errors.Is(err, change.ErrUnknownVersion) {
				return st, fmt.Errorf("record %d: %w", seq, err)
			}
			if err != nil || rec.ChangeID == "" {
				// As the follower does: a record that does not decode is no history entry.
				klog.ErrorS(err, "Skipping undecodable record", "seq", seq)
				st.Skipped++
				continue
			}
			batch = append(batch, index.SeqRecord{Seq: seq, Record: rec})
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return st, fmt.Errorf("reading %s: %w", change.HistoryStream, err)
		}
		if err := flush(); err != nil {
			return st, fmt.Errorf("indexing records up to %d: %w", seq, err)
		}
		if seq >= st.LastSeq {
			return st, nil
		}
		if seq == 0 {
			// Nothing arrived within the wait although the stream holds more: only a server in trouble
			// does that, and waiting forever would hide it.
			return st, fmt.Errorf("reading %s: no records after %d of %d", change.HistoryStream, st.Read, st.LastSeq)
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			klog.InfoS("Rebuilding the index from the stream", "seq", seq, "lastSeq", st.LastSeq)
		}
	}
}
