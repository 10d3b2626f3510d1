package queue

import (
	"context"
	"errors"
	"fmt"
	"iter"
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
	// fanned out to several destinations. Left at their defaults, Timeout and MaxPending share the
	// connection's JetStream context (and its pending acknowledgements) with everything else on it.
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
func NewPublisher(c *Conn, o PublisherOptions) (*Publisher, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultPublishTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = defaultMaxPending
	}
	if o.Timeout == DefaultPublishTimeout && o.MaxPending == defaultMaxPending {
		return &Publisher{nc: c.nc, js: c.js, timeout: o.Timeout}, nil
	}
	js, err := jetstream.New(c.nc,
		jetstream.WithPublishAsyncMaxPending(o.MaxPending),
		// Acks that never come (server gone mid-batch) are failed and released after the timeout, so
		// they neither leak nor hold back later batches' back-pressure.
		jetstream.WithPublishAsyncTimeout(o.Timeout),
	)
	if err != nil {
		return nil, fmt.Errorf("creating JetStream context: %w", err)
	}
	return &Publisher{nc: c.nc, js: js, timeout: o.Timeout}, nil
}

// Message is a change encoded for KUBEHISTORY_CHANGES: its destination's subject, its Nats-Msg-Id (the
// ChangeID) and its JSON. Encoding is split from publishing so that a caller can encode while it is
// still busy with other work (the audit webhook maps and encodes while it decodes).
type Message struct {
	Subject string
	ID      string
	Data    []byte
}

// NewMessage encodes a change; it refuses a change without ID, which JetStream could not deduplicate.
func NewMessage(c *change.Change) (Message, error) {
	if c.ChangeID == "" {
		return Message{}, fmt.Errorf("change of %s %s/%s has no change ID", c.Object.Resource, c.Object.Namespace, c.Object.Name)
	}
	data, err := change.Encode(c)
	if err != nil {
		return Message{}, fmt.Errorf("encoding change %s: %w", c.ChangeID, err)
	}
	return Message{Subject: c.Destination.ChangesSubject(), ID: c.ChangeID, Data: data}, nil
}

// Publish encodes the changes and publishes them as PublishMessages does.
func (p *Publisher) Publish(ctx context.Context, changes []change.Change) error {
	msgs := make([]Message, 0, len(changes))
	for i := range changes {
		m, err := NewMessage(&changes[i])
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	return p.PublishMessages(ctx, msgs)
}

// PublishMessages publishes msgs as PublishSeq does.
func (p *Publisher) PublishMessages(ctx context.Context, msgs []Message) error {
	return p.PublishSeq(ctx, func(yield func(Message, error) bool) {
		for _, m := range msgs {
			if !yield(m, nil) {
				return
			}
		}
	})
}

// PublishSeq sends every message of msgs to its subject with its Nats-Msg-Id as soon as msgs yields it,
// so that JetStream stores the first while the caller still makes the next (the audit webhook maps and
// encodes its batch this way). It returns nil only when JetStream acknowledged all of them (a duplicate
// within the window counts as acknowledged: it is already stored). An error yielded by msgs stops the
// batch and is returned. On error, some messages may be stored and others not; the caller retries the
// whole batch and deduplication keeps the stored ones single.
//
// A sequence without messages succeeds even while NATS is unreachable: there is nothing to store.
func (p *Publisher) PublishSeq(ctx context.Context, msgs iter.Seq2[Message, error]) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	var futures []jetstream.PubAckFuture
	for m, err := range msgs {
		if err != nil {
			return err
		}
		if len(futures) == 0 && !p.nc.IsConnected() {
			return ErrNotConnected
		}
		if m.ID == "" {
			return fmt.Errorf("message %d on %s has no ID", len(futures), m.Subject)
		}
		f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}},
			jetstream.WithMsgID(m.ID),
			jetstream.WithExpectStream(change.ChangesStream),
			jetstream.WithStallWait(p.timeout),
		)
		if err != nil {
			return fmt.Errorf("publishing change %s: %w", m.ID, err)
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
			return fmt.Errorf("waiting for JetStream acknowledgements of %d changes: %w", len(futures), ctx.Err())
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d changes not acknowledged by JetStream: %w", failed, len(futures), firstErr)
	}
	return nil
}
