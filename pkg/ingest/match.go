package ingest

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
)

// The matching functions below are the RuleCache's own, exported so that the reconciler decides which
// listed objects a rule tracks exactly as ingest decides which audited changes it records: an object
// seeded by one and ignored by the other would flap between Git and orphan.

// WatchRuleMatches reports whether a WatchRule tracks obj (the caller has checked that obj is in the
// rule's namespace).
func WatchRuleMatches(r *configv1alpha1.WatchRule, obj ObjectInfo) bool {
	return watchRuleMatches(r, obj)
}

// ResourceRuleMatches reports whether a rule's groups and resources name obj's group and resource.
func ResourceRuleMatches(rr configv1alpha1.ResourceRule, obj ObjectInfo) bool {
	return resourceRuleMatches(rr, obj)
}

// ClusterWatchRuleMatches reports whether a ClusterWatchRule tracks obj; nsLabels are the labels of
// obj's namespace (known=false when the namespace is not found), ignored for cluster-scoped objects.
func ClusterWatchRuleMatches(r *configv1alpha1.ClusterWatchRule, obj ObjectInfo, nsLabels map[string]string, known bool) bool {
	if !clusterRuleSelectsResource(r, obj) {
		return false
	}
	if obj.Namespace != "" && !namespaceSelected(r.Spec.NamespaceSelector, nsLabels, known) {
		return false
	}
	return objectSelected(r.Spec.ObjectSelector, obj) && !ignored(r.Spec.IgnoreUsers, obj.Username)
}

// NamespaceSelected applies a ClusterWatchRule's namespaceSelector: absent selects no namespace, empty
// every namespace.
func NamespaceSelected(sel *metav1.LabelSelector, nsLabels map[string]string, known bool) bool {
	return namespaceSelected(sel, nsLabels, known)
}
