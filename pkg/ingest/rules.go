package ingest

import (
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kubeinformers "k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/generated/informers/externalversions"
	configlisters "github.com/kubehistory/kubehistory/pkg/generated/listers/config/v1alpha1"
)

// ObjectInfo is what rule matching knows about a changed object.
type ObjectInfo struct {
	// Group is the API group ("" for core), Resource the plural resource name of the object (of the
	// parent for a write through a subresource).
	Group, Resource string
	// Namespace is "" for cluster-scoped objects.
	Namespace string
	// Name is "" for a deletecollection sweep.
	Name string
	// Labels are the object's labels, valid only when LabelsKnown.
	Labels map[string]string
	// LabelsKnown is false when the event carried no body of the object (Metadata audit level, writes
	// through subresources, deletes answered with a Status, deletecollection sweeps). Object selectors
	// then count as matching: recording a change the writer may later find out of scope is recoverable,
	// silently losing one is not.
	LabelsKnown bool
	// Username is the actor's (the impersonated user's, under impersonation), for ignoreUsers.
	Username string
}

// RuleMatcher returns the destinations of every rule that tracks the object, without duplicates.
type RuleMatcher interface {
	Match(obj ObjectInfo) []change.DestinationRef
}

// RuleCache is the RuleMatcher backed by WatchRule, ClusterWatchRule and Namespace informers: it follows
// rule and namespace label changes as they happen, without restart. The caller starts the informer
// factories and waits for HasSynced before serving, or early batches would be dropped as unmatched.
type RuleCache struct {
	// Trust decides which namespaces' GitDestinations ClusterWatchRules may send history to.
	Trust DestinationTrust

	watchRules        configlisters.WatchRuleLister
	clusterWatchRules configlisters.ClusterWatchRuleLister
	namespaces        corelisters.NamespaceLister
	synced            []cache.InformerSynced
}

var _ RuleMatcher = &RuleCache{}

// NewRuleCache registers its informers with the factories; start them afterwards. The generation of
// every rule it holds is published as kubehistory_rule_cache_rule_generation.
func NewRuleCache(configInformers externalversions.SharedInformerFactory, kubeInformers kubeinformers.SharedInformerFactory) *RuleCache {
	RegisterMetrics()
	wr := configInformers.Config().V1alpha1().WatchRules()
	cwr := configInformers.Config().V1alpha1().ClusterWatchRules()
	ns := kubeInformers.Core().V1().Namespaces()
	// Handlers run after the informer's store took the object in, so a published generation is one
	// Match already sees.
	_, _ = wr.Informer().AddEventHandler(generationHandler("WatchRule"))
	_, _ = cwr.Informer().AddEventHandler(generationHandler("ClusterWatchRule"))
	return &RuleCache{
		watchRules:        wr.Lister(),
		clusterWatchRules: cwr.Lister(),
		namespaces:        ns.Lister(),
		synced:            []cache.InformerSynced{wr.Informer().HasSynced, cwr.Informer().HasSynced, ns.Informer().HasSynced},
	}
}

// generationHandler keeps ruleGeneration equal to the rules of one kind in the informer's store.
func generationHandler(kind string) cache.ResourceEventHandler {
	set := func(obj any) {
		if m, err := meta.Accessor(obj); err == nil {
			ruleGeneration.WithLabelValues(kind, m.GetNamespace(), m.GetName()).Set(float64(m.GetGeneration()))
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if m, err := meta.Accessor(obj); err == nil {
				ruleGeneration.DeleteLabelValues(kind, m.GetNamespace(), m.GetName())
			}
		},
	}
}

// HasSynced is true once all three informers listed their objects.
func (c *RuleCache) HasSynced() bool {
	for _, s := range c.synced {
		if !s() {
			return false
		}
	}
	return true
}

// Match implements RuleMatcher.
func (c *RuleCache) Match(obj ObjectInfo) []change.DestinationRef {
	seen := map[change.DestinationRef]struct{}{}

	if obj.Namespace != "" {
		rules, err := c.watchRules.WatchRules(obj.Namespace).List(labels.Everything())
		if err != nil {
			klog.ErrorS(err, "Listing WatchRules from cache", "namespace", obj.Namespace)
		}
		for _, r := range rules {
			if watchRuleMatches(r, obj) {
				seen[change.DestinationRef{Namespace: r.Namespace, Name: r.Spec.DestinationRef.Name}] = struct{}{}
			}
		}
	}

	crules, err := c.clusterWatchRules.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "Listing ClusterWatchRules from cache")
	}
	var nsLabels map[string]string
	nsKnown := false
	for _, r := range crules {
		if !clusterRuleSelectsResource(r, obj) {
			continue
		}
		if obj.Namespace != "" {
			if !nsKnown {
				nsLabels, nsKnown = c.namespaceLabels(obj.Namespace)
			}
			if !namespaceSelected(r.Spec.NamespaceSelector, nsLabels, nsKnown) {
				continue
			}
		}
		if !objectSelected(r.Spec.ObjectSelector, obj) || ignored(r.Spec.IgnoreUsers, obj.Username) {
			continue
		}
		if !c.Trust.Trusts(r.Spec.DestinationRef.Namespace) {
			// The reconciler reports it on the rule (DestinationNotTrusted).
			continue
		}
		seen[change.DestinationRef{Namespace: r.Spec.DestinationRef.Namespace, Name: r.Spec.DestinationRef.Name}] = struct{}{}
	}

	if len(seen) == 0 {
		return nil
	}
	out := make([]change.DestinationRef, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Selects says whether a rule routing to dest tracks obj: the writer asks it about an object it fetched
// (whose labels the audit event did not carry), so that an objectSelector holds for it too.
func (c *RuleCache) Selects(dest change.DestinationRef, obj ObjectInfo) bool {
	for _, d := range c.Match(obj) {
		if d == dest {
			return true
		}
	}
	return false
}

// DestinationTrust is the set of namespaces whose GitDestinations ClusterWatchRules may send history
// to: a cluster-wide rule must not let one namespace's admin decide where the whole cluster's history
// goes. The zero value trusts every namespace (tests, and setups that opt out with "*").
type DestinationTrust map[string]bool

// NewDestinationTrust trusts the given namespaces; "*" among them trusts every namespace.
func NewDestinationTrust(namespaces []string) DestinationTrust {
	t := DestinationTrust{}
	for _, ns := range namespaces {
		if ns == "*" {
			return nil
		}
		t[ns] = true
	}
	return t
}

// Trusts says whether a ClusterWatchRule may send history to a GitDestination in namespace ns.
func (t DestinationTrust) Trusts(ns string) bool { return t == nil || t[ns] }

func (c *RuleCache) namespaceLabels(name string) (map[string]string, bool) {
	ns, err := c.namespaces.Get(name)
	if err != nil {
		if !apierrors.IsNotFound(err) {
			klog.ErrorS(err, "Getting Namespace from cache", "namespace", name)
		}
		return nil, false
	}
	return ns.Labels, true
}

func watchRuleMatches(r *configv1alpha1.WatchRule, obj ObjectInfo) bool {
	matched := false
	for _, rr := range r.Spec.Rules {
		if resourceRuleMatches(rr, obj) {
			matched = true
			break
		}
	}
	return matched && objectSelected(r.Spec.ObjectSelector, obj) && !ignored(r.Spec.IgnoreUsers, obj.Username)
}

func clusterRuleSelectsResource(r *configv1alpha1.ClusterWatchRule, obj ObjectInfo) bool {
	for _, rr := range r.Spec.Rules {
		scope := rr.Scope
		if scope == "" {
			scope = configv1alpha1.ScopeAll // the CRD default, for objects created before defaulting
		}
		switch {
		case scope == configv1alpha1.ScopeCluster && obj.Namespace != "":
			continue
		case scope == configv1alpha1.ScopeNamespaced && obj.Namespace == "":
			continue
		}
		if resourceRuleMatches(rr.ResourceRule, obj) {
			return true
		}
	}
	return false
}

func resourceRuleMatches(rr configv1alpha1.ResourceRule, obj ObjectInfo) bool {
	return contains(rr.APIGroups, obj.Group) && contains(rr.Resources, obj.Resource)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == "*" || v == s {
			return true
		}
	}
	return false
}

// namespaceSelected applies a ClusterWatchRule's namespaceSelector: absent selects no namespace, empty
// every namespace (even one not in the cache yet, as right after its creation).
func namespaceSelected(sel *metav1.LabelSelector, nsLabels map[string]string, known bool) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		// The CRD validates selectors; an invalid one selects nothing rather than everything.
		klog.ErrorS(err, "Invalid namespaceSelector in ClusterWatchRule")
		return false
	}
	if s.Empty() {
		return true
	}
	return known && s.Matches(labels.Set(nsLabels))
}

func objectSelected(sel *metav1.LabelSelector, obj ObjectInfo) bool {
	if sel == nil || !obj.LabelsKnown {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		klog.ErrorS(err, "Invalid objectSelector in rule")
		return false
	}
	return s.Matches(labels.Set(obj.Labels))
}

func ignored(users []string, username string) bool {
	for _, u := range users {
		if u == username {
			return true
		}
	}
	return false
}

// StaticMatcher matches every object of the given groups/resources ("*" wildcards) in any namespace to
// one destination. It serves tests and benchmarks, and setups without the config CRDs.
type StaticMatcher struct {
	Rules       []configv1alpha1.ResourceRule
	Destination change.DestinationRef
}

// Match implements RuleMatcher.
func (m StaticMatcher) Match(obj ObjectInfo) []change.DestinationRef {
	for _, rr := range m.Rules {
		if resourceRuleMatches(rr, obj) {
			return []change.DestinationRef{m.Destination}
		}
	}
	return nil
}
