package ingest

import (
	"context"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeinformers "k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/component-base/metrics/legacyregistry"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned/fake"
	"github.com/kubehistory/kubehistory/pkg/generated/informers/externalversions"
)

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func TestRuleCache(t *testing.T) {
	watchRule := &configv1alpha1.WatchRule{
		ObjectMeta: metav1.ObjectMeta{Name: "cms", Namespace: "team-a"},
		Spec: configv1alpha1.WatchRuleSpec{
			DestinationRef: configv1alpha1.LocalDestinationReference{Name: "repo"},
			Rules:          []configv1alpha1.ResourceRule{{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}}},
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "skip", Operator: metav1.LabelSelectorOpDoesNotExist}}},
			IgnoreUsers:    []string{"system:serviceaccount:team-a:bot"},
		},
	}
	appsRule := &configv1alpha1.WatchRule{
		ObjectMeta: metav1.ObjectMeta{Name: "apps", Namespace: "team-a"},
		Spec: configv1alpha1.WatchRuleSpec{
			DestinationRef: configv1alpha1.LocalDestinationReference{Name: "repo"}, // same destination: reported once
			Rules:          []configv1alpha1.ResourceRule{{APIGroups: []string{"*"}, Resources: []string{"*"}}},
			ObjectSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "frontend"}},
		},
	}
	clusterScoped := &configv1alpha1.ClusterWatchRule{
		ObjectMeta: metav1.ObjectMeta{Name: "rbac"},
		Spec: configv1alpha1.ClusterWatchRuleSpec{
			DestinationRef: configv1alpha1.DestinationReference{Namespace: "platform", Name: "cluster"},
			Rules: []configv1alpha1.ClusterResourceRule{{
				ResourceRule: configv1alpha1.ResourceRule{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"*"}},
				Scope:        configv1alpha1.ScopeCluster,
			}},
			// Present but irrelevant for cluster-scoped objects.
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"never": "matches"}},
		},
	}
	prodNamespaces := &configv1alpha1.ClusterWatchRule{
		ObjectMeta: metav1.ObjectMeta{Name: "prod"},
		Spec: configv1alpha1.ClusterWatchRuleSpec{
			DestinationRef: configv1alpha1.DestinationReference{Namespace: "platform", Name: "prod"},
			Rules: []configv1alpha1.ClusterResourceRule{{
				ResourceRule: configv1alpha1.ResourceRule{APIGroups: []string{"", "apps"}, Resources: []string{"configmaps", "deployments"}},
				Scope:        configv1alpha1.ScopeNamespaced,
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
			IgnoreUsers:       []string{"system:serviceaccount:kube-system:deployment-controller"},
		},
	}
	noSelector := &configv1alpha1.ClusterWatchRule{
		ObjectMeta: metav1.ObjectMeta{Name: "nosel"},
		Spec: configv1alpha1.ClusterWatchRuleSpec{
			DestinationRef: configv1alpha1.DestinationReference{Namespace: "platform", Name: "nosel"},
			Rules: []configv1alpha1.ClusterResourceRule{{
				ResourceRule: configv1alpha1.ResourceRule{APIGroups: []string{""}, Resources: []string{"configmaps"}},
				Scope:        configv1alpha1.ScopeAll,
			}},
		},
	}

	kube := kubefake.NewSimpleClientset(ns("team-a", nil), ns("shop", map[string]string{"env": "prod"}), ns("dev", map[string]string{"env": "dev"}))
	cfg := fake.NewSimpleClientset(watchRule, appsRule, clusterScoped, prodNamespaces, noSelector)
	cfgFactory := externalversions.NewSharedInformerFactory(cfg, 0)
	kubeFactory := kubeinformers.NewSharedInformerFactory(kube, 0)
	rc := NewRuleCache(cfgFactory, kubeFactory)
	ctx, cancel := context.WithCancel(context.Background())
	cfgFactory.Start(ctx.Done())
	kubeFactory.Start(ctx.Done())
	defer func() {
		cancel() // informers stop on the channel; Shutdown then waits for them
		cfgFactory.Shutdown()
		kubeFactory.Shutdown()
	}()
	waitFor(t, "cache sync", rc.HasSynced)

	repo := change.DestinationRef{Namespace: "team-a", Name: "repo"}
	cluster := change.DestinationRef{Namespace: "platform", Name: "cluster"}
	prod := change.DestinationRef{Namespace: "platform", Name: "prod"}
	nosel := change.DestinationRef{Namespace: "platform", Name: "nosel"}
	tests := []struct {
		name string
		obj  ObjectInfo
		want []change.DestinationRef
	}{
		{name: "configmap in team-a", obj: ObjectInfo{Resource: "configmaps", Namespace: "team-a", Name: "x", LabelsKnown: true}, want: []change.DestinationRef{repo}},
		{name: "label excluded", obj: ObjectInfo{Resource: "configmaps", Namespace: "team-a", Name: "x", LabelsKnown: true, Labels: map[string]string{"skip": "1"}}},
		{name: "labels unknown match", obj: ObjectInfo{Resource: "configmaps", Namespace: "team-a", Name: "x", Labels: map[string]string{"skip": "1"}}, want: []change.DestinationRef{repo}},
		{name: "ignored user", obj: ObjectInfo{Resource: "secrets", Namespace: "team-a", Name: "x", LabelsKnown: true, Username: "system:serviceaccount:team-a:bot"}},
		{name: "wildcard rule with selector", obj: ObjectInfo{Group: "apps", Resource: "deployments", Namespace: "team-a", Name: "web", LabelsKnown: true, Labels: map[string]string{"tier": "frontend"}}, want: []change.DestinationRef{repo}},
		{name: "wildcard rule selector mismatch", obj: ObjectInfo{Group: "apps", Resource: "deployments", Namespace: "team-a", Name: "web", LabelsKnown: true}},
		{name: "other namespace", obj: ObjectInfo{Resource: "secrets", Namespace: "dev", Name: "x", LabelsKnown: true}},
		{name: "cluster-scoped rbac", obj: ObjectInfo{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "viewer"}, want: []change.DestinationRef{cluster}},
		{name: "namespaced rbac not in Cluster scope", obj: ObjectInfo{Group: "rbac.authorization.k8s.io", Resource: "roles", Namespace: "shop", Name: "r"}},
		{name: "prod namespace", obj: ObjectInfo{Group: "apps", Resource: "deployments", Namespace: "shop", Name: "web"}, want: []change.DestinationRef{prod}},
		{name: "prod ignored user", obj: ObjectInfo{Group: "apps", Resource: "deployments", Namespace: "shop", Name: "web", Username: "system:serviceaccount:kube-system:deployment-controller"}},
		{name: "dev namespace", obj: ObjectInfo{Group: "apps", Resource: "deployments", Namespace: "dev", Name: "web"}},
		{name: "nil namespaceSelector selects no namespace", obj: ObjectInfo{Resource: "configmaps", Namespace: "dev", Name: "x"}},
		{name: "scope * covers cluster-scoped", obj: ObjectInfo{Resource: "configmaps", Name: "odd"}, want: []change.DestinationRef{nosel}},
		{name: "configmap in prod namespace", obj: ObjectInfo{Resource: "configmaps", Namespace: "shop", Name: "x"}, want: []change.DestinationRef{prod}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := rc.Match(tc.obj); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Match(%+v) = %v, want %v", tc.obj, got, tc.want)
			}
		})
	}

	// Rule and namespace changes take effect without restart.
	devCM := ObjectInfo{Resource: "configmaps", Namespace: "dev", Name: "x"}
	noSelector = noSelector.DeepCopy()
	noSelector.Spec.NamespaceSelector = &metav1.LabelSelector{}
	if _, err := cfg.ConfigV1alpha1().ClusterWatchRules().Update(ctx, noSelector, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "empty namespaceSelector selecting dev", func() bool { return reflect.DeepEqual(rc.Match(devCM), []change.DestinationRef{nosel}) })
	shopCM := ObjectInfo{Resource: "configmaps", Namespace: "shop", Name: "x"}
	if got := rc.Match(shopCM); !reflect.DeepEqual(got, []change.DestinationRef{nosel, prod}) {
		t.Errorf("two rules, two destinations, sorted: got %v", got)
	}

	if _, err := kube.CoreV1().Namespaces().Update(ctx, ns("dev", map[string]string{"env": "prod"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	devDeploy := ObjectInfo{Group: "apps", Resource: "deployments", Namespace: "dev", Name: "web"}
	waitFor(t, "dev relabelled prod", func() bool { return reflect.DeepEqual(rc.Match(devDeploy), []change.DestinationRef{prod}) })

	// Namespace created after the rule: an empty selector covers it even before the informer saw it.
	if got := rc.Match(ObjectInfo{Resource: "configmaps", Namespace: "brand-new", Name: "x"}); !reflect.DeepEqual(got, []change.DestinationRef{nosel}) {
		t.Errorf("new namespace: %v", got)
	}

	// ClusterWatchRules reach only destinations in trusted namespaces; WatchRules are not concerned.
	rbacObj := ObjectInfo{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "viewer"}
	teamCM := ObjectInfo{Resource: "configmaps", Namespace: "team-a", Name: "x", LabelsKnown: true}
	rc.Trust = NewDestinationTrust([]string{"kubehistory-system"})
	if got := rc.Match(rbacObj); got != nil {
		t.Errorf("a ClusterWatchRule reached the untrusted namespace platform: %v", got)
	}
	if got := rc.Match(teamCM); !reflect.DeepEqual(got, []change.DestinationRef{repo}) {
		t.Errorf("trust changed a WatchRule's match: %v", got)
	}
	rc.Trust = NewDestinationTrust([]string{"platform"})
	if got := rc.Match(rbacObj); !reflect.DeepEqual(got, []change.DestinationRef{cluster}) {
		t.Errorf("trusted platform: %v", got)
	}
	if NewDestinationTrust([]string{"*"}).Trusts("anything") != true || NewDestinationTrust(nil).Trusts("x") {
		t.Error("\"*\" must trust every namespace, an empty list none")
	}
	rc.Trust = nil
	// Selects is what the writer asks about a fetched object: the labels decide.
	if rc.Selects(repo, ObjectInfo{Resource: "configmaps", Namespace: "team-a", Name: "x", LabelsKnown: true, Labels: map[string]string{"skip": "1"}}) {
		t.Error("Selects ignored the objectSelector")
	}
	if !rc.Selects(repo, teamCM) || rc.Selects(cluster, teamCM) {
		t.Error("Selects does not follow the rules' destinations")
	}

	if err := cfg.ConfigV1alpha1().WatchRules("team-a").Delete(ctx, "cms", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "WatchRule deleted", func() bool {
		return rc.Match(ObjectInfo{Resource: "secrets", Namespace: "team-a", Name: "x", LabelsKnown: true}) == nil
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStaticMatcher(t *testing.T) {
	m := StaticMatcher{Rules: []configv1alpha1.ResourceRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}}}, Destination: testDest}
	if got := m.Match(ObjectInfo{Resource: "configmaps", Namespace: "x", Name: "y"}); len(got) != 1 {
		t.Errorf("configmap not matched")
	}
	if got := m.Match(ObjectInfo{Resource: "secrets", Namespace: "x", Name: "y"}); got != nil {
		t.Errorf("secret matched")
	}
}

// TestRuleCacheGeneration checks the signal tests and operators wait on: a rule's generation is
// published once Match sees the rule's spec, follows updates, and goes with the rule.
func TestRuleCacheGeneration(t *testing.T) {
	wr := &configv1alpha1.WatchRule{
		ObjectMeta: metav1.ObjectMeta{Name: "gen", Namespace: "team-gen", Generation: 1},
		Spec: configv1alpha1.WatchRuleSpec{
			DestinationRef: configv1alpha1.LocalDestinationReference{Name: "repo"},
			Rules:          []configv1alpha1.ResourceRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}}},
		},
	}
	cwr := &configv1alpha1.ClusterWatchRule{
		ObjectMeta: metav1.ObjectMeta{Name: "gen", Generation: 3},
		Spec: configv1alpha1.ClusterWatchRuleSpec{
			DestinationRef: configv1alpha1.DestinationReference{Namespace: "platform", Name: "cluster"},
			Rules:          []configv1alpha1.ClusterResourceRule{{ResourceRule: configv1alpha1.ResourceRule{APIGroups: []string{""}, Resources: []string{"namespaces"}}, Scope: configv1alpha1.ScopeCluster}},
		},
	}
	cfg := fake.NewSimpleClientset(wr, cwr)
	cfgFactory := externalversions.NewSharedInformerFactory(cfg, 0)
	kubeFactory := kubeinformers.NewSharedInformerFactory(kubefake.NewSimpleClientset(), 0)
	rc := NewRuleCache(cfgFactory, kubeFactory)
	ctx, cancel := context.WithCancel(context.Background())
	cfgFactory.Start(ctx.Done())
	kubeFactory.Start(ctx.Done())
	defer func() {
		cancel()
		cfgFactory.Shutdown()
		kubeFactory.Shutdown()
	}()
	waitFor(t, "cache sync", rc.HasSynced)
	generation := func(kind, ns, name string) (float64, bool) {
		// Gather, not WithLabelValues: asking for a series would create it.
		mfs, err := legacyregistry.DefaultGatherer.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "kubehistory_rule_cache_rule_generation" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if l["kind"] == kind && l["namespace"] == ns && l["name"] == name {
					return m.GetGauge().GetValue(), true
				}
			}
		}
		return 0, false
	}
	// Handlers are notified after the store took the object in, so the series may trail HasSynced.
	waitFor(t, "WatchRule generation 1 published", func() bool { g, _ := generation("WatchRule", "team-gen", "gen"); return g == 1 })
	waitFor(t, "ClusterWatchRule generation 3 published", func() bool { g, _ := generation("ClusterWatchRule", "", "gen"); return g == 3 })

	// The fake clientset does not bump generations: the test plays the API server.
	upd := wr.DeepCopy()
	upd.Generation = 2
	upd.Spec.Rules[0].Resources = []string{"secrets"}
	if _, err := cfg.ConfigV1alpha1().WatchRules("team-gen").Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "generation 2 published", func() bool { g, _ := generation("WatchRule", "team-gen", "gen"); return g == 2 })
	if got := rc.Match(ObjectInfo{Resource: "secrets", Namespace: "team-gen", Name: "s"}); len(got) != 1 {
		t.Errorf("generation 2 is published but Match does not follow it: %v", got)
	}
	if err := cfg.ConfigV1alpha1().ClusterWatchRules().Delete(ctx, "gen", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deleted rule's series gone", func() bool { _, ok := generation("ClusterWatchRule", "", "gen"); return !ok })
}
