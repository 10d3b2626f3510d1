package queue

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kubehistory/kubehistory/pkg/change"
)

const (
	// DefaultDuplicateWindow is how long KUBEHISTORY_CHANGES remembers message IDs. kube-apiserver's audit
	// webhook re-sends a failed batch with exponential backoff for up to about 4 minutes, from every
	// apiserver replica, out of order; 10 minutes covers that with margin.
	DefaultDuplicateWindow = 10 * time.Minute
	// MinDuplicateWindow is the shortest window that still covers kube-apiserver's retry span.
	MinDuplicateWindow = 5 * time.Minute
)

type streamOptions struct {
	duplicates time.Duration
}

// StreamOption tunes EnsureStreams.
type StreamOption func(*streamOptions)

// WithDuplicateWindow sets the deduplication window of KUBEHISTORY_CHANGES (at least
// MinDuplicateWindow).
func WithDuplicateWindow(d time.Duration) StreamOption {
	return func(o *streamOptions) { o.duplicates = d }
}

// ChangesStreamConfig is the configuration EnsureStreams applies to KUBEHISTORY_CHANGES.
//
// Retention is by limits, not work-queue: a change stays after a writer acknowledged it, so that a writer
// can be re-pointed or replayed; it is dropped after 7 days, by then long in Git.
func ChangesStreamConfig(replicas int, duplicates time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        change.ChangesStream,
		Description: "kubehistory: accepted changes on their way to the Git writers",
		Subjects:    []string{change.ChangesSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      7 * 24 * time.Hour,
		Duplicates:  duplicates,
		Replicas:    replicas,
	}
}

// HistoryStreamConfig is the configuration EnsureStreams applies to KUBEHISTORY_HISTORY. It keeps every
// record without limit: it is what a replica's index is rebuilt from.
func HistoryStreamConfig(replicas int, duplicates time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        change.HistoryStream,
		Description: "kubehistory: committed changes, feeding every replica's index",
		Subjects:    []string{change.HistorySubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  duplicates,
		Replicas:    replicas,
	}
}

// EnsureStreams creates KUBEHISTORY_CHANGES and KUBEHISTORY_HISTORY, or updates them to the current
// configuration; it is safe to call from every replica at every start.
func EnsureStreams(ctx context.Context, c *Conn, replicas int, opts ...StreamOption) error {
	o := streamOptions{duplicates: DefaultDuplicateWindow}
	for _, opt := range opts {
		opt(&o)
	}
	if replicas < 1 {
		return fmt.Errorf("stream replicas must be at least 1, got %d", replicas)
	}
	if o.duplicates < MinDuplicateWindow {
		return fmt.Errorf("duplicate window %s is shorter than kube-apiserver's retry span (minimum %s)", o.duplicates, MinDuplicateWindow)
	}
	for _, cfg := range []jetstream.StreamConfig{
		ChangesStreamConfig(replicas, o.duplicates),
		HistoryStreamConfig(replicas, o.duplicates),
	} {
		if _, err := c.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensuring stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// streamOf is the stream that stores a subject.
func streamOf(subject string) (string, error) {
	switch {
	case strings.HasPrefix(subject, change.ChangesSubjectPrefix):
		return change.ChangesStream, nil
	case strings.HasPrefix(subject, change.HistorySubjectPrefix):
		return change.HistoryStream, nil
	}
	return "", fmt.Errorf("subject %s belongs to no kubehistory stream", subject)
}
