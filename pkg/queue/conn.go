package queue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// defaultMaxPending caps the asynchronous publishes outstanding on a connection; publishing beyond it
// waits (back-pressure towards the HTTP callers). Enough for a few 400-event batches fanned out to
// several destinations.
const defaultMaxPending = 8192

// Conn is a connection to NATS with its JetStream context: everything kubehistory does with JetStream
// (streams, publishing, consumers, the status bucket) goes through one. Build it with Connect or
// Embedded.Connect.
type Conn struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu      sync.Mutex
	streams map[string]jetstream.Stream
}

func newConn(nc *nats.Conn) (*Conn, error) {
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(defaultMaxPending),
		// Acks that never come (server gone mid-batch) are failed and released after the timeout, so
		// they neither leak nor hold back later batches' back-pressure.
		jetstream.WithPublishAsyncTimeout(DefaultPublishTimeout),
	)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("creating JetStream context: %w", err)
	}
	return &Conn{nc: nc, js: js, streams: map[string]jetstream.Stream{}}, nil
}

// Close closes the connection.
func (c *Conn) Close() { c.nc.Close() }

// Connected returns nil while the connection is up, else why not (for readiness).
func (c *Conn) Connected() error {
	if !c.nc.IsConnected() {
		return fmt.Errorf("NATS connection is %s", c.nc.Status())
	}
	return nil
}

// stream returns a (cached) handle of a stream.
func (c *Conn) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	c.mu.Lock()
	s, ok := c.streams[name]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := c.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	c.mu.Lock()
	c.streams[name] = s
	c.mu.Unlock()
	return s, nil
}

// recordPublishTimeout bounds a Publish of records: a writer's batch can be thousands of them.
const recordPublishTimeout = time.Minute

// Publish stores msgs, each on its subject's stream (KUBEHISTORY_CHANGES or KUBEHISTORY_HISTORY) with
// its ID as Nats-Msg-Id, and returns nil only when JetStream acknowledged all of them (a duplicate
// within the window counts: it is stored already). On error some may be stored; publishing the same
// messages again stores the others, and deduplication keeps the stored ones single.
func (c *Conn) Publish(ctx context.Context, msgs []Message) error {
	ctx, cancel := context.WithTimeout(ctx, recordPublishTimeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		stream, err := streamOf(m.Subject)
		if err != nil {
			return err
		}
		if m.ID == "" {
			return fmt.Errorf("message on %s has no ID", m.Subject)
		}
		f, err := c.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}},
			jetstream.WithMsgID(m.ID), jetstream.WithExpectStream(stream))
		if err != nil {
			return fmt.Errorf("publishing %s: %w", m.ID, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publishing %s: %w", f.Msg().Header.Get(jetstream.MsgIDHeader), err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for JetStream acknowledgements of %d messages: %w", len(futures), ctx.Err())
		}
	}
	return nil
}
