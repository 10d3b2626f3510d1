package queue

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// DefaultPublishTimeout bounds how long Publish waits for JetStream to acknowledge a batch. It stays
// well below kube-apiserver's audit webhook request timeout, so that the webhook gets a 503 it can retry
// rather than a timeout.
const DefaultPublishTimeout = 10 * time.Second

// ErrNotConnected is returned when the NATS connection is down: publishing would only fill a buffer
// whose outcome nobody could report to kube-apiserver.
var ErrNotConnected = errors.New("not connected to NATS")

// PublisherOptions tune a Publisher.
type PublisherOptions struct {
	// Timeout bounds the wait for all acknowledgements of one batch; default DefaultPublishTimeout.
	Timeout time.Duration
	// MaxPending caps the acknowledgements outstanding over all concurrent batches; publishing beyond it
	// waits (back-pressure towards the HTTP callers). Default 8192, enough for a few 400-event batches
	// fanned out to several destinations.
	MaxPending int
}

// Publisher publishes changes to KUBEHISTORY_CHANGES. It is safe for concurrent use: each call waits
// only for the acknowledgements of its own messages.
type Publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	timeout time.Duration
}

// NewPublisher builds a Publisher on an open connection.
func NewPublisher(nc *nats.Conn, o PublisherOptions) (*Publisher, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultPublishTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 8192
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(o.MaxPending),
		// Acks that never come (server gone mid-batch) are failed and released after the timeout, so
		// they neither leak nor hold back later batches' back-pressure.
		jetstream.WithPublishAsyncTimeout(o.Timeout),
	)
	if err != nil {
		return nil, fmt.Errorf("creating JetStream context: %w", err)
	}
	return &Publisher{nc: nc, js: js, timeout: o.Timeout}, nil
}

// JetStream exposes the JetStream context, for EnsureStreams and consumers sharing the connection.
func (p *Publisher) JetStream() jetstream.JetStream { return p.js }

// Publish sends every change to its destination's subject with Nats-Msg-Id = ChangeID, and returns nil
// only when JetStream acknowledged all of them (a duplicate within the window counts as acknowledged: it
// is already stored). On error, some messages may be stored and others not; the caller retries the whole
// batch and deduplication keeps the stored ones single.
func (p *Publisher) Publish(ctx context.Context, changes []change.Change) error {
	if len(changes) == 0 {
		return nil
	}
	if !p.nc.IsConnected() {
		return ErrNotConnected
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	futures := make([]jetstream.PubAckFuture, 0, len(changes))
	for i := range changes {
		c := &changes[i]
		if c.ChangeID == "" {
			return fmt.Errorf("change %d (%s %s/%s) has no change ID", i, c.Object.Resource, c.Object.Namespace, c.Object.Name)
		}
		data, err := change.Encode(c)
		if err != nil {
			return fmt.Errorf("encoding change %s: %w", c.ChangeID, err)
		}
		msg := &nats.Msg{Subject: c.Destination.ChangesSubject(), Data: data, Header: nats.Header{}}
		f, err := p.js.PublishMsgAsync(msg,
			jetstream.WithMsgID(c.ChangeID),
			jetstream.WithExpectStream(change.ChangesStream),
			jetstream.WithStallWait(p.timeout),
		)
		if err != nil {
			return fmt.Errorf("publishing change %s: %w", c.ChangeID, err)
		}
		futures = append(futures, f)
	}

	var failed int
	var firstErr error
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			failed++
			if firstErr == nil {
				firstErr = err
			}
		case <-ctx.Done():
			return fmt.Errorf("waiting for JetStream acknowledgements of %d changes: %w", len(changes), ctx.Err())
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d changes not acknowledged by JetStream: %w", failed, len(changes), firstErr)
	}
	return nil
}
