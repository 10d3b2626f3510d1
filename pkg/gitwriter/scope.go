package gitwriter

import (
	"encoding/json"
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
)

// Scope says whether the rules that route to dest track an object with the given labels, changed by
// actor. The writer asks it when the audit event did not carry the object's labels (Metadata audit
// level, writes through subresources, deletes answered with a Status): ingest then matched the change
// ignoring objectSelectors, and only the writer, with the object in hand, can apply them.
type Scope func(dest change.DestinationRef, obj change.Object, labels map[string]string, actor string) bool

// Reasons a change is left out of Git by the scope check, the label of outOfScopeTotal.
const (
	// OutOfScopeSelector: the fetched object does not match the objectSelector of any rule.
	OutOfScopeSelector = "selector"
	// OutOfScopeUnknown: the object is gone (or deleted without a body), its labels are unknown, only a
	// rule with an objectSelector could track it, and Git never held it.
	OutOfScopeUnknown = "labels-unknown"
)

var (
	outOfScopeTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace:      "kubehistory",
		Subsystem:      "writer",
		Name:           "out_of_scope_total",
		Help:           "Changes matched by ingest without the object's labels that the writer left out of Git because no rule's objectSelector selects the object, by reason (selector, labels-unknown).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	registerMetrics sync.Once
)

func registerWriterMetrics() {
	registerMetrics.Do(func() { legacyregistry.MustRegister(outOfScopeTotal) })
}

// needsScope says whether the change was matched without the object's labels.
func (p *pending) needsScope() bool {
	return len(p.ch.Body) == 0 && !p.control() && !p.ch.Sweep && p.ch.Source == change.SourceAudit
}

// inScope applies the scope to a change matched without labels; body is the fetched object (nil when
// it is gone or the change is a delete). A change out of scope is acknowledged without a record.
func (w *Writer) inScope(p *pending, body []byte) bool {
	if w.cfg.Scope == nil || !p.needsScope() {
		return true
	}
	reason := OutOfScopeUnknown
	var labels map[string]string
	if body != nil {
		var o struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(body, &o); err == nil {
			labels = o.Metadata.Labels
		}
		reason = OutOfScopeSelector
	} else if _, known := w.state.paths[gitrecord.ObjectPath(w.cfg.PathPrefix, p.ch.Object)]; known {
		// Git holds the object: its delete (or its disappearance) is history whatever its labels were.
		return true
	}
	if w.cfg.Scope(w.cfg.Destination, p.ch.Object, labels, p.ch.Actor.Username) {
		return true
	}
	outOfScopeTotal.WithLabelValues(reason).Inc()
	klog.V(2).InfoS("Change left out of Git: no rule's objectSelector selects the object", "destination", w.ref(),
		"changeID", p.ch.ChangeID, "resource", p.ch.Object.Resource, "namespace", p.ch.Object.Namespace, "reason", reason)
	p.outOfScope = true
	return false
}
