package reconcile

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// Results of a destination's sync, the result label of syncsTotal.
const (
	syncSuccess = "success"
	syncError   = "error"
)

var (
	// syncsTotal counts the passes over each destination (rule statuses, seeds, orphan check), so that
	// "the reconciler has looked at this destination again since X" is observable: tests wait on it
	// instead of sleeping through a few intervals. One series per destination and result; destinations
	// are few.
	syncsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "kubehistory",
		Subsystem:      "reconcile",
		Name:           "syncs_total",
		Help:           "Reconciler passes over a destination (namespace/name) completed by this replica while leading, by result (success, error).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"destination", "result"})
	registerMetrics sync.Once
)

func registerReconcileMetrics() {
	registerMetrics.Do(func() { legacyregistry.MustRegister(syncsTotal) })
}
