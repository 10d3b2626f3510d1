package server

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/reconcile"
)

// levelFor evaluates the policy the way kube-apiserver's policy checker does for a resource request:
// the first rule whose verbs, resources and namespaces match decides; no match is None.
func levelFor(p *auditv1.Policy, verb, group, resource, namespace string) auditv1.Level {
	for _, r := range p.Rules {
		if len(r.Verbs) > 0 && !slices.Contains(r.Verbs, verb) {
			continue
		}
		if len(r.Namespaces) > 0 && !slices.Contains(r.Namespaces, namespace) {
			continue
		}
		if len(r.NonResourceURLs) > 0 {
			continue
		}
		if len(r.Resources) > 0 && !resourcesMatch(r.Resources, group, resource) {
			continue
		}
		return r.Level
	}
	return auditv1.LevelNone
}

func resourcesMatch(grs []auditv1.GroupResources, group, resource string) bool {
	for _, gr := range grs {
		if gr.Group != group {
			continue
		}
		if len(gr.Resources) == 0 {
			return true
		}
		for _, name := range gr.Resources {
			if name == resource || name == "*" {
				return true
			}
			if parent, sub, ok := cutSub(resource); ok && (name == parent+"/*" || name == "*/"+sub) {
				return true
			}
		}
	}
	return false
}

func cutSub(resource string) (string, string, bool) {
	for i := range resource {
		if resource[i] == '/' {
			return resource[:i], resource[i+1:], true
		}
	}
	return "", "", false
}

func TestAuditPolicy(t *testing.T) {
	served := []reconcile.Resource{
		{Group: "", Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespaced: true},
		{Group: "", Version: "v1", Resource: "secrets", Kind: "Secret", Namespaced: true},
		{Group: "", Version: "v1", Resource: "pods", Kind: "Pod", Namespaced: true},
		{Group: "", Version: "v1", Resource: "namespaces", Kind: "Namespace"},
		{Group: "apps", Version: "v1", Resource: "deployments", Kind: "Deployment", Namespaced: true},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles", Kind: "ClusterRole"},
	}
	wr := func(ns string, groups, resources []string) configv1alpha1.WatchRule {
		return configv1alpha1.WatchRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"},
			Spec: configv1alpha1.WatchRuleSpec{Rules: []configv1alpha1.ResourceRule{{APIGroups: groups, Resources: resources}}}}
	}
	cwr := func(groups, resources []string) configv1alpha1.ClusterWatchRule {
		return configv1alpha1.ClusterWatchRule{ObjectMeta: metav1.ObjectMeta{Name: "c"},
			Spec: configv1alpha1.ClusterWatchRuleSpec{Rules: []configv1alpha1.ClusterResourceRule{{ResourceRule: configv1alpha1.ResourceRule{APIGroups: groups, Resources: resources}}}}}
	}
	type req struct {
		verb, group, resource, namespace string
		want                             auditv1.Level
	}
	// Checked for every policy, whatever the rules track.
	always := []req{
		{"create", "authentication.k8s.io", "tokenreviews", "", auditv1.LevelNone},
		{"create", "", "serviceaccounts/token", "team-a", auditv1.LevelNone},
		{"create", "authorization.k8s.io", "subjectaccessreviews", "", auditv1.LevelNone},
		{"create", "authorization.k8s.io", "selfsubjectaccessreviews", "", auditv1.LevelNone},
		{"create", "authorization.k8s.io", "selfsubjectrulesreviews", "", auditv1.LevelNone},
		{"create", "authentication.k8s.io", "selfsubjectreviews", "", auditv1.LevelNone},
		{"get", "history.kubehistory.io", "resourcechanges", "team-a", auditv1.LevelNone},
		{"create", "history.kubehistory.io", "resourcechanges", "team-a", auditv1.LevelNone},
		{"get", "", "secrets", "team-a", auditv1.LevelNone},
		{"list", "", "configmaps", "team-a", auditv1.LevelNone},
		{"watch", "apps", "deployments", "team-a", auditv1.LevelNone},
	}
	cases := []struct {
		name   string
		policy *auditv1.Policy
		reqs   []req
	}{
		{name: "all resources", policy: AllResourcesAuditPolicy(), reqs: []req{
			{"create", "", "configmaps", "team-a", auditv1.LevelRequestResponse},
			{"patch", "apps", "deployments/scale", "team-a", auditv1.LevelRequestResponse},
			{"create", "", "pods/binding", "team-a", auditv1.LevelRequestResponse},
			{"create", "", "pods/eviction", "team-a", auditv1.LevelRequestResponse},
			{"create", "", "secrets", "team-a", auditv1.LevelMetadata},
			{"patch", "", "secrets", "team-a", auditv1.LevelMetadata},
			{"deletecollection", "", "secrets", "team-a", auditv1.LevelMetadata},
			{"delete", "example.com", "widgets", "", auditv1.LevelRequestResponse},
		}},
		{name: "no rules", policy: TrackedAuditPolicy(TrackedFromRules(nil, nil, served)), reqs: []req{
			{"create", "", "configmaps", "team-a", auditv1.LevelNone},
			{"create", "", "secrets", "team-a", auditv1.LevelMetadata},
		}},
		{name: "a WatchRule audits only its namespace", policy: TrackedAuditPolicy(TrackedFromRules(
			[]configv1alpha1.WatchRule{wr("team-a", []string{""}, []string{"configmaps"})}, nil, served)), reqs: []req{
			{"create", "", "configmaps", "team-a", auditv1.LevelRequestResponse},
			{"update", "", "configmaps", "team-a", auditv1.LevelRequestResponse},
			{"create", "", "configmaps", "team-b", auditv1.LevelNone},
			{"create", "", "pods", "team-a", auditv1.LevelNone},
			{"update", "", "configmaps/status", "team-a", auditv1.LevelNone},
		}},
		{name: "secrets tracked stay at Metadata", policy: TrackedAuditPolicy(TrackedFromRules(
			[]configv1alpha1.WatchRule{wr("team-a", []string{""}, []string{"secrets", "configmaps"})}, nil, served)), reqs: []req{
			{"create", "", "secrets", "team-a", auditv1.LevelMetadata},
			{"update", "", "secrets", "team-a", auditv1.LevelMetadata},
			{"create", "", "configmaps", "team-a", auditv1.LevelRequestResponse},
		}},
		{name: "wildcards resolve through discovery; subresources of the parent", policy: TrackedAuditPolicy(TrackedFromRules(
			[]configv1alpha1.WatchRule{wr("team-a", []string{"*"}, []string{"*"})}, nil, served)), reqs: []req{
			{"create", "", "secrets", "team-a", auditv1.LevelMetadata},
			{"patch", "apps", "deployments", "team-a", auditv1.LevelRequestResponse},
			{"update", "apps", "deployments/scale", "team-a", auditv1.LevelRequestResponse},
			{"update", "apps", "deployments/status", "team-a", auditv1.LevelNone},
			{"create", "", "pods/binding", "team-a", auditv1.LevelRequestResponse},
			{"create", "", "pods/eviction", "team-a", auditv1.LevelRequestResponse},
			{"create", "", "namespaces", "", auditv1.LevelNone}, // cluster-scoped: not a WatchRule's
			{"create", "authentication.k8s.io", "tokenreviews", "", auditv1.LevelNone},
		}},
		{name: "a ClusterWatchRule audits every namespace and cluster-scoped objects", policy: TrackedAuditPolicy(TrackedFromRules(nil,
			[]configv1alpha1.ClusterWatchRule{cwr([]string{"", "rbac.authorization.k8s.io"}, []string{"namespaces", "configmaps", "clusterroles"})}, served)), reqs: []req{
			{"create", "", "namespaces", "", auditv1.LevelRequestResponse},
			{"delete", "rbac.authorization.k8s.io", "clusterroles", "", auditv1.LevelRequestResponse},
			{"create", "", "configmaps", "team-b", auditv1.LevelRequestResponse},
			{"create", "apps", "deployments", "team-b", auditv1.LevelNone},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.OmitStages; !slices.Equal(got, []auditv1.Stage{auditv1.StageRequestReceived}) {
				t.Errorf("omitStages = %v, want [RequestReceived]", got)
			}
			for _, r := range append(always, tc.reqs...) {
				if got := levelFor(tc.policy, r.verb, r.group, r.resource, r.namespace); got != r.want {
					t.Errorf("%s %s %q in %q: level %s, want %s", r.verb, r.resource, r.group, r.namespace, got, r.want)
				}
			}
			for _, rule := range tc.policy.Rules {
				if rule.Level == auditv1.LevelRequest || rule.Level == auditv1.LevelRequestResponse {
					if resourcesMatch(rule.Resources, "", "secrets") && len(rule.Resources) > 0 {
						t.Errorf("rule %+v logs Secrets with bodies", rule)
					}
				}
			}
		})
	}
}

// TestShippedAuditPolicyIsGenerated fails when artifacts/deploy/audit/policy.yaml differs from
// `audit-policy --all-resources`: regenerate it with
// go run ./cmd/kubehistory-apiserver audit-policy --all-resources > artifacts/deploy/audit/policy.yaml
func TestShippedAuditPolicyIsGenerated(t *testing.T) {
	want, err := AllResourcesAuditPolicyYAML()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("..", "..", "..", "artifacts", "deploy", "audit", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("artifacts/deploy/audit/policy.yaml differs from `kubehistory-apiserver audit-policy --all-resources`; regenerate it:\n%s", want)
	}
}
