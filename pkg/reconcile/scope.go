package reconcile

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/ingest"
)

// Resource is one listable resource in the version the API server prefers.
type Resource struct {
	Group, Version, Resource, Kind string
	Namespaced                     bool
}

// GVR is the resource's group, version and resource.
func (r Resource) GVR() schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: r.Group, Version: r.Version, Resource: r.Resource}
}

// Name is "resource.group", or "resource" for the core group: the form of status.trackedResources and
// of sensitiveResources.
func (r Resource) Name() string {
	if r.Group == "" {
		return r.Resource
	}
	return r.Resource + "." + r.Group
}

// Discover returns the resources that can be listed, in their preferred versions. Groups whose
// discovery failed (an aggregated API that is down) are left out and logged: one broken API must not
// stop the seeding of every other resource. Rules naming resources of such a group then show
// UnknownResource until it is back.
func Discover(d discovery.DiscoveryInterface) ([]Resource, error) {
	lists, err := discovery.ServerPreferredResources(d)
	if err != nil {
		if !discovery.IsGroupDiscoveryFailedError(err) || len(lists) == 0 {
			return nil, fmt.Errorf("discovering resources: %w", err)
		}
		klog.InfoS("Some API groups failed discovery; their resources are not reconciled until they answer", "err", err)
	}
	var out []Resource
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		// kubehistory's own history is not history: listing it would only record records.
		if gv.Group == ingest.OwnGroup {
			continue
		}
		for _, ar := range l.APIResources {
			if strings.Contains(ar.Name, "/") || !hasVerb(ar.Verbs, "list") {
				continue // subresources are recorded for their parent; unlistable resources hold no state
			}
			out = append(out, Resource{Group: gv.Group, Version: gv.Version, Resource: ar.Name, Kind: ar.Kind, Namespaced: ar.Namespaced})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

func hasVerb(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}

// Resolution is what a rule's resource rules resolved to through discovery.
type Resolution struct {
	// Resources are the tracked resources.
	Resources []Resource
	// Unknown explains every entry of the rule that names nothing the API server serves in a scope
	// the rule can track (empty when every entry resolved).
	Unknown []string
}

// Names are the tracked resources as "resource.group", sorted (status.trackedResources).
func (r Resolution) Names() []string {
	out := make([]string, 0, len(r.Resources))
	for _, res := range r.Resources {
		out = append(out, res.Name())
	}
	return out
}

// scopeFilter says which resources a rule entry may track: WatchRules only namespaced ones,
// ClusterWatchRules by their scope field.
type scopeFilter func(Resource) bool

func namespacedOnly(r Resource) bool { return r.Namespaced }

func clusterScope(s configv1alpha1.ResourceScope) scopeFilter {
	switch s {
	case configv1alpha1.ScopeCluster:
		return func(r Resource) bool { return !r.Namespaced }
	case configv1alpha1.ScopeNamespaced:
		return func(r Resource) bool { return r.Namespaced }
	}
	return func(Resource) bool { return true }
}

// resolveEntry adds what one resource rule resolves to, and explains each of its group/resource pairs
// that resolves to nothing.
func resolveEntry(res *Resolution, seen map[string]bool, rr configv1alpha1.ResourceRule, fits scopeFilter, scopeHint string, served []Resource) {
	for _, g := range rr.APIGroups {
		for _, name := range rr.Resources {
			pair := configv1alpha1.ResourceRule{APIGroups: []string{g}, Resources: []string{name}}
			matched, wrongScope := 0, 0
			for _, r := range served {
				if !ingest.ResourceRuleMatches(pair, ingest.ObjectInfo{Group: r.Group, Resource: r.Resource}) {
					continue
				}
				if !fits(r) {
					wrongScope++
					continue
				}
				matched++
				if !seen[r.Name()] {
					seen[r.Name()] = true
					res.Resources = append(res.Resources, r)
				}
			}
			if matched > 0 {
				continue
			}
			what := describePair(g, name)
			if wrongScope > 0 {
				res.Unknown = append(res.Unknown, fmt.Sprintf("%s is served only %s", what, scopeHint))
			} else {
				res.Unknown = append(res.Unknown, fmt.Sprintf("%s is not served by the API server", what))
			}
		}
	}
}

func describePair(group, resource string) string {
	switch {
	case group == "*":
		return fmt.Sprintf("resource %q (any group)", resource)
	case resource == "*" && group == "":
		return "the core group"
	case resource == "*":
		return fmt.Sprintf("API group %q", group)
	case group == "":
		return fmt.Sprintf("resource %q (core group)", resource)
	}
	return fmt.Sprintf("resource %q in group %q", resource, group)
}

// ResolveWatchRule resolves a WatchRule: namespaced resources only.
func ResolveWatchRule(r *configv1alpha1.WatchRule, served []Resource) Resolution {
	var res Resolution
	seen := map[string]bool{}
	for _, rr := range r.Spec.Rules {
		resolveEntry(&res, seen, rr, namespacedOnly, "cluster-scoped, and a WatchRule tracks namespaced resources only (use a ClusterWatchRule)", served)
	}
	sort.Slice(res.Resources, func(i, j int) bool { return res.Resources[i].Name() < res.Resources[j].Name() })
	return res
}

// ResolveClusterWatchRule resolves a ClusterWatchRule, each entry within its scope.
func ResolveClusterWatchRule(r *configv1alpha1.ClusterWatchRule, served []Resource) Resolution {
	var res Resolution
	seen := map[string]bool{}
	for _, rr := range r.Spec.Rules {
		scope := rr.Scope
		if scope == "" {
			scope = configv1alpha1.ScopeAll // the CRD default, for objects created before defaulting
		}
		hint := "namespaced, outside the entry's scope Cluster"
		if scope == configv1alpha1.ScopeNamespaced {
			hint = "cluster-scoped, outside the entry's scope Namespaced"
		}
		resolveEntry(&res, seen, rr.ResourceRule, clusterScope(scope), hint, served)
	}
	sort.Slice(res.Resources, func(i, j int) bool { return res.Resources[i].Name() < res.Resources[j].Name() })
	return res
}
