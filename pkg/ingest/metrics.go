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
	// ruleGeneration is the rule cache's observable state: a rule's series appears (or takes the new
	// generation) once the informer store that Match reads holds it, and goes when the rule is deleted.
	// Tests and operators wait on it instead of guessing how long the informers take: every replica
	// matches against its own cache.
	ruleGeneration = metrics.NewGaugeVec(&metrics.GaugeOpts{
		Namespace:      "kubehistory",
		Subsystem:      "rule_cache",
		Name:           "rule_generation",
		Help:           "metadata.generation of each WatchRule and ClusterWatchRule the rule cache matches audit events against, by kind, namespace (empty for a ClusterWatchRule) and name; absent for a rule the cache does not hold.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"kind", "namespace", "name"})

	registerOnce sync.Once
)

// RegisterMetrics registers the ingest metrics with the legacy registry served on /metrics. NewServer
// and NewRuleCache call it; it is idempotent.
func RegisterMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(eventsTotal, changesTotal, requestsTotal, publishDuration, ruleGeneration)
	})
}
