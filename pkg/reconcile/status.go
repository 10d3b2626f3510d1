package reconcile

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
)

// readyCondition says whether a rule is in effect, and if not, what to fix: the destination first (no
// change is recorded without it), then the resources it names, then kubehistory's permissions.
func readyCondition(p *plan, res Resolution, denied map[string]error, generation int64) metav1.Condition {
	c := metav1.Condition{Type: configv1alpha1.ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: generation}
	var deniedMsgs []string
	for _, r := range res.Resources {
		if err, ok := denied[r.Name()]; ok {
			deniedMsgs = append(deniedMsgs, fmt.Sprintf("%s: %v", r.Name(), err))
		}
	}
	sort.Strings(deniedMsgs)
	switch {
	case !p.destinationExists:
		c.Reason = configv1alpha1.ReasonDestinationMissing
		c.Message = fmt.Sprintf("GitDestination %s not found: nothing is recorded until it exists", p.dest)
	case len(res.Unknown) > 0:
		c.Reason = configv1alpha1.ReasonUnknownResource
		c.Message = strings.Join(res.Unknown, "; ")
		if len(res.Resources) > 0 {
			c.Message += fmt.Sprintf(" (the other %d resources are tracked)", len(res.Resources))
		}
	case len(deniedMsgs) > 0:
		c.Reason = configv1alpha1.ReasonAccessDenied
		c.Message = "kubehistory may not list " + strings.Join(deniedMsgs, "; ")
	default:
		c.Status = metav1.ConditionTrue
		c.Reason = configv1alpha1.ReasonReady
		c.Message = fmt.Sprintf("tracking %d resources into GitDestination %s", len(res.Resources), p.dest)
	}
	return c
}

// writeStatuses sets every rule's status; an update that would change nothing is not sent, so that
// periodic passes cost no writes (and no watch events) while nothing changes.
func (r *Reconciler) writeStatuses(ctx context.Context, p *plan, denied map[string]error) {
	for i, wr := range p.watchRules {
		st := ruleStatus(wr.Status, p.wrResolved[i], readyCondition(p, p.wrResolved[i], denied, wr.Generation), wr.Generation)
		if equality.Semantic.DeepEqual(st, wr.Status) {
			continue
		}
		u := wr.DeepCopy()
		u.Status = st
		if _, err := r.client.ConfigV1alpha1().WatchRules(u.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			klog.ErrorS(err, "Updating WatchRule status", "watchRule", klog.KObj(wr))
		}
	}
	for _, cr := range p.untrusted {
		c := metav1.Condition{Type: configv1alpha1.ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: cr.Generation,
			Reason: configv1alpha1.ReasonDestinationNotTrusted,
			Message: fmt.Sprintf("GitDestination %s is in namespace %q, which kubehistory does not trust as a destination of cluster-wide rules (--trusted-destination-namespaces); nothing is recorded",
				p.dest, p.dest.Namespace)}
		st := ruleStatus(cr.Status, Resolution{}, c, cr.Generation)
		if equality.Semantic.DeepEqual(st, cr.Status) {
			continue
		}
		u := cr.DeepCopy()
		u.Status = st
		if _, err := r.client.ConfigV1alpha1().ClusterWatchRules().UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			klog.ErrorS(err, "Updating ClusterWatchRule status", "clusterWatchRule", klog.KObj(cr))
		}
	}
	for i, cr := range p.clusterRules {
		st := ruleStatus(cr.Status, p.crResolved[i], readyCondition(p, p.crResolved[i], denied, cr.Generation), cr.Generation)
		if equality.Semantic.DeepEqual(st, cr.Status) {
			continue
		}
		u := cr.DeepCopy()
		u.Status = st
		if _, err := r.client.ConfigV1alpha1().ClusterWatchRules().UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			klog.ErrorS(err, "Updating ClusterWatchRule status", "clusterWatchRule", klog.KObj(cr))
		}
	}
}

func ruleStatus(old configv1alpha1.RuleStatus, res Resolution, ready metav1.Condition, generation int64) configv1alpha1.RuleStatus {
	st := *old.DeepCopy()
	st.ObservedGeneration = generation
	st.TrackedResources = res.Names()
	if len(st.TrackedResources) == 0 {
		st.TrackedResources = nil
	}
	// SetStatusCondition keeps lastTransitionTime when the status did not change.
	meta.SetStatusCondition(&st.Conditions, ready)
	return st
}
