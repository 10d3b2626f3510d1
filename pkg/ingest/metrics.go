package ingest

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var (
	eventsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "kubehistory",
		Subsystem:      "ingest",
		Name:           "events_total",
		Help:           "Audit events of answered batches, by result (accepted, dropped) and reason of dropping.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result", "reason"})
	changesTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace:      "kubehistory",
		Subsystem:      "ingest",
		Name:           "changes_total",
		Help:           "Changes published to JetStream and acknowledged (one per object and destination).",
		StabilityLevel: metrics.ALPHA,
	})
	requestsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "kubehistory",
		Subsystem:      "ingest",
		Name:           "requests_total",
		Help:           "Audit webhook requests (batches), by HTTP status code of the answer.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"code"})
	publishDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Namespace:      "kubehistory",
		Subsystem:      "ingest",
		Name:           "publish_duration_seconds",
		Help:           "Time from the start of publishing a batch (its changes are mapped and encoded as they are published) to the last JetStream acknowledgement.",
		Buckets:        metrics.ExponentialBuckets(0.001, 2, 14),
		StabilityLevel: metrics.ALPHA,
	})

	registerOnce sync.Once
)

// RegisterMetrics registers the ingest metrics with the legacy registry served on /metrics. NewServer
// calls it; it is idempotent.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(eventsTotal, changesTotal, requestsTotal, publishDuration)
	})
}
