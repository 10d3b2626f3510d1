package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
)

const (
	// DefaultAckWait is how long a delivered message stays with its consumer without an Ack or an
	// InProgress before JetStream delivers it again. A consumer that works on a message for longer
	// keeps it with KeepInProgress; so AckWait only matters after a crash, where it is how long the
	// crashed consumer's messages wait.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxAckPending bounds the messages delivered to a consumer and not acknowledged yet.
	DefaultMaxAckPending = 1000
	// DefaultFetchWait is how long an idle Fetch waits for a first message; it bounds how long a
	// consumer takes to notice that it must stop.
	DefaultFetchWait = 500 * time.Millisecond
	// minFetchWait keeps a fetch at the end of a window from asking the server for a zero wait.
	minFetchWait = 10 * time.Millisecond
)

// Acker settles a delivered message. JetStream delivers a message again (at least once) until it is
// acknowledged or terminated.
type Acker interface {
	// Ack: the message is done with.
	Ack() error
	// Nak: deliver it again now; NakWithDelay: again after d.
	Nak() error
	NakWithDelay(d time.Duration) error
	// InProgress: still being worked on; restarts the AckWait.
	InProgress() error
	// Term: never deliver it again (a message no consumer can read).
	Term() error
}

// Msg is one message delivered by a Consumer or a Replay.
type Msg struct {
	Subject string
	Data    []byte
	// Seq is the message's sequence in its stream; NumDelivered counts its deliveries, this one
	// included; MsgID is the ID it was published with (the change ID, for deduplication).
	Seq          uint64
	NumDelivered uint64
	MsgID        string
	// Time is when the stream stored it.
	Time time.Time
	Acker
}

// Consumer is a durable consumer of one stream: every message on its subject is delivered to it at
// least once, in stream order except for redeliveries.
type Consumer interface {
	// Fetch waits up to wait (DefaultFetchWait when 0, never past ctx's deadline) for up to max
	// messages and returns those that arrived, none when none did. ctx ending does not cut a fetch
	// short, so that no delivered message is left unreturned.
	Fetch(ctx context.Context, max int, wait time.Duration) ([]*Msg, error)
	// Backlog says how far behind the consumer is.
	Backlog(ctx context.Context) (Backlog, error)
}

// Backlog is the state of a consumer.
type Backlog struct {
	// Pending counts the messages not delivered yet; AckPending those delivered and not acknowledged
	// (acknowledgements are asynchronous: it may still count a message just acknowledged).
	Pending, AckPending uint64
	// AckFloor is the stream sequence up to which every message of the consumer is acknowledged.
	AckFloor uint64
	// Oldest is when the oldest message not acknowledged yet (the first after the ack floor) was stored;
	// zero when there is none or it could not be read.
	Oldest time.Time
}

// ConsumerConfig describes a durable consumer.
type ConsumerConfig struct {
	// Stream is change.ChangesStream or change.HistoryStream.
	Stream string
	// Durable names the consumer (ChangesConsumerName, HistoryConsumerName); Description is shown by
	// the nats CLI.
	Durable, Description string
	// FilterSubject limits the consumer to one subject; empty: the whole stream.
	FilterSubject string
	// AckWait (default DefaultAckWait) and MaxAckPending (default DefaultMaxAckPending).
	AckWait       time.Duration
	MaxAckPending int
	// StartSeq is the first sequence delivered; 0: the first message of the stream.
	StartSeq uint64
	// Recreate deletes the consumer first, so that it starts exactly at StartSeq: a consumer that keeps
	// its position would deliver new messages at once and the unacknowledged ones of a crashed run only
	// after AckWait. Without it the consumer is created or updated and keeps its position.
	Recreate bool
}

// ChangesConsumerName is the durable consumer of a destination's changes on KUBEHISTORY_CHANGES (its
// Git writer; the name stays what it was, so that an upgrade keeps the consumer's position).
func ChangesConsumerName(ref change.DestinationRef) string {
	return "gitwriter_" + change.SubjectToken(ref.Namespace) + "_" + change.SubjectToken(ref.Name)
}

// HistoryConsumerName is a replica's durable consumer on KUBEHISTORY_HISTORY (its index).
func HistoryConsumerName(replica string) string {
	return "index_" + change.SubjectToken(strings.ReplaceAll(replica, "/", "_"))
}

// Consumer creates (or updates) the durable consumer cfg describes. It acknowledges explicitly and
// redelivers without limit: a message is done only when its consumer says so.
func (c *Conn) Consumer(ctx context.Context, cfg ConsumerConfig) (Consumer, error) {
	if cfg.Stream == "" || cfg.Durable == "" {
		return nil, errors.New("a consumer needs a stream and a durable name")
	}
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MaxAckPending <= 0 {
		cfg.MaxAckPending = DefaultMaxAckPending
	}
	jc := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		Description:   cfg.Description,
		FilterSubject: cfg.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
	}
	if cfg.StartSeq > 0 {
		jc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		jc.OptStartSeq = cfg.StartSeq
	}
	var cons jetstream.Consumer
	var err error
	if cfg.Recreate {
		if err := c.js.DeleteConsumer(ctx, cfg.Stream, cfg.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("resetting consumer %s: %w", cfg.Durable, err)
		}
		cons, err = c.js.CreateConsumer(ctx, cfg.Stream, jc)
	} else {
		cons, err = c.js.CreateOrUpdateConsumer(ctx, cfg.Stream, jc)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	return &consumer{conn: c, cons: cons, stream: cfg.Stream, filter: cfg.FilterSubject}, nil
}

// ConsumerBacklog is the Backlog of an existing durable consumer.
func (c *Conn) ConsumerBacklog(ctx context.Context, stream, durable string) (Backlog, error) {
	cons, err := c.js.Consumer(ctx, stream, durable)
	if err != nil {
		return Backlog{}, fmt.Errorf("consumer %s: %w", durable, err)
	}
	return (&consumer{conn: c, cons: cons, stream: stream, filter: cons.CachedInfo().Config.FilterSubject}).Backlog(ctx)
}

type consumer struct {
	conn   *Conn
	cons   jetstream.Consumer
	stream string
	filter string
}

func (c *consumer) Fetch(ctx context.Context, n int, wait time.Duration) ([]*Msg, error) {
	if wait <= 0 {
		wait = DefaultFetchWait
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	wait = max(wait, minFetchWait)
	mb, err := c.cons.Fetch(n, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, err
	}
	return collect(mb)
}

// collect reads a fetched batch to its end. A message without JetStream metadata cannot be placed: it
// is handed back (Nak) and reported.
func collect(mb jetstream.MessageBatch) ([]*Msg, error) {
	var out []*Msg
	var mdErr error
	for m := range mb.Messages() {
		msg, err := toMsg(m)
		if err != nil {
			_ = m.Nak()
			mdErr = err
			continue
		}
		out = append(out, msg)
	}
	if err := mb.Error(); err != nil && !isNoMessages(err) {
		return out, err
	}
	return out, mdErr
}

func toMsg(m jetstream.Msg) (*Msg, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("message metadata: %w", err)
	}
	msg := &Msg{Subject: m.Subject(), Data: m.Data(), Seq: md.Sequence.Stream, NumDelivered: md.NumDelivered, Time: md.Timestamp, Acker: m}
	if h := m.Headers(); h != nil {
		msg.MsgID = h.Get(jetstream.MsgIDHeader)
	}
	return msg, nil
}

// isNoMessages: a fetch that ended without messages, or before its batch was full, is no failure.
func isNoMessages(err error) bool {
	return errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded)
}

func (c *consumer) Backlog(ctx context.Context) (Backlog, error) {
	info, err := c.cons.Info(ctx)
	if err != nil {
		return Backlog{}, err
	}
	b := Backlog{Pending: info.NumPending, AckPending: uint64(max(info.NumAckPending, 0)), AckFloor: info.AckFloor.Stream}
	if b.Pending+b.AckPending == 0 {
		return b, nil
	}
	opts := []jetstream.GetMsgOpt{}
	if c.filter != "" {
		opts = append(opts, jetstream.WithGetMsgSubject(c.filter))
	}
	s, err := c.conn.stream(ctx, c.stream)
	if err != nil {
		return b, nil
	}
	msg, err := s.GetMsg(ctx, info.AckFloor.Stream+1, opts...)
	if err != nil {
		klog.V(4).InfoS("Reading the oldest unacknowledged message", "stream", c.stream, "filter", c.filter, "err", err)
		return b, nil
	}
	b.Oldest = msg.Time
	return b, nil
}

// KeepInProgress marks msgs InProgress every third of ackWait (the consumer's; DefaultAckWait when
// 0) until stop is called, so that the consumer keeps them however long the work on them takes.
func KeepInProgress(msgs []*Msg, ackWait time.Duration) (stop func()) {
	if ackWait <= 0 {
		ackWait = DefaultAckWait
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() { close(done) }
}

// StreamState says what a stream holds.
type StreamState struct {
	Msgs, FirstSeq, LastSeq uint64
}

// StreamState reads the state of a stream.
func (c *Conn) StreamState(ctx context.Context, name string) (StreamState, error) {
	s, err := c.stream(ctx, name)
	if err != nil {
		return StreamState{}, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return StreamState{}, fmt.Errorf("reading stream %s: %w", name, err)
	}
	return StreamState{Msgs: info.State.Msgs, FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq}, nil
}

// replayWait bounds the wait for the next batch of a Replay: the messages are all stored, so only a
// server in trouble makes it wait that long.
const replayWait = 5 * time.Second

// Replay reads the stream in order from its first message up to sequence last, handing fn batches of
// up to batch messages. It reads through an ordered consumer, which leaves no state on the server
// (and nothing to acknowledge). It fails when no message arrives within a few seconds although the
// stream holds more: waiting forever would hide a server in trouble.
func (c *Conn) Replay(ctx context.Context, stream string, last uint64, batch int, fn func([]*Msg) error) error {
	if last == 0 {
		return nil
	}
	s, err := c.stream(ctx, stream)
	if err != nil {
		return err
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("reading %s: %w", stream, err)
	}
	var read uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		mb, err := cons.Fetch(batch, jetstream.FetchMaxWait(replayWait))
		if err != nil {
			return fmt.Errorf("reading %s: %w", stream, err)
		}
		var seq uint64
		msgs := make([]*Msg, 0, batch)
		for m := range mb.Messages() {
			msg, err := toMsg(m)
			if err != nil {
				return fmt.Errorf("reading %s: %w", stream, err)
			}
			seq = msg.Seq
			if seq > last {
				break
			}
			msgs = append(msgs, msg)
		}
		if err := mb.Error(); err != nil && !isNoMessages(err) {
			return fmt.Errorf("reading %s: %w", stream, err)
		}
		read += uint64(len(msgs))
		if len(msgs) > 0 {
			if err := fn(msgs); err != nil {
				return err
			}
		}
		if seq >= last {
			return nil
		}
		if seq == 0 {
			return fmt.Errorf("reading %s: no messages after %d of %d", stream, read, last)
		}
	}
}
