package reconcile

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubeinformers "k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/metrics/testutil"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	versionedfake "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned/fake"
	"github.com/kubehistory/kubehistory/pkg/generated/informers/externalversions"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/ingest"
)

// served is what the fake discovery answers.
var servedLists = []*metav1.APIResourceList{
	{GroupVersion: "v1", APIResources: []metav1.APIResource{
		{Name: "configmaps", Kind: "ConfigMap", Namespaced: true, Verbs: []string{"list", "get", "watch"}},
		{Name: "secrets", Kind: "Secret", Namespaced: true, Verbs: []string{"list", "get", "watch"}},
		{Name: "namespaces", Kind: "Namespace", Verbs: []string{"list", "get", "watch"}},
		{Name: "namespaces/status", Kind: "Namespace", Verbs: []string{"get", "update"}},
		{Name: "bindings", Kind: "Binding", Namespaced: true, Verbs: []string{"create"}},
	}},
	{GroupVersion: "apps/v1", APIResources: []metav1.APIResource{
		{Name: "deployments", Kind: "Deployment", Namespaced: true, Verbs: []string{"list", "get"}},
	}},
	{GroupVersion: "history.kubehistory.io/v1alpha1", APIResources: []metav1.APIResource{
		{Name: "resourcechanges", Kind: "ResourceChange", Namespaced: true, Verbs: []string{"list", "get"}},
	}},
}

func served(t *testing.T) []Resource {
	t.Helper()
	kube := kubefake.NewClientset()
	kube.Resources = servedLists
	res, err := Discover(kube.Discovery())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestDiscover(t *testing.T) {
	var got []string
	for _, r := range served(t) {
		got = append(got, r.Name()+"@"+r.Version)
	}
	want := "configmaps@v1 deployments.apps@v1 namespaces@v1 secrets@v1"
	if strings.Join(got, " ") != want {
		t.Fatalf("discovered %v, want %s (no subresources, unlistable resources or history)", got, want)
	}
}

func TestResolve(t *testing.T) {
	rr := func(groups, resources string) configv1alpha1.ResourceRule {
		return configv1alpha1.ResourceRule{APIGroups: strings.Split(groups, ","), Resources: strings.Split(resources, ",")}
	}
	for _, tc := range []struct {
		name        string
		watch       []configv1alpha1.ResourceRule
		cluster     []configv1alpha1.ClusterResourceRule
		want        string
		wantUnknown []string
	}{
		{name: "core configmaps", watch: []configv1alpha1.ResourceRule{rr("", "configmaps")}, want: "configmaps"},
		{name: "group wildcard", watch: []configv1alpha1.ResourceRule{rr("apps", "*")}, want: "deployments.apps"},
		{name: "everything namespaced", watch: []configv1alpha1.ResourceRule{rr("*", "*")}, want: "configmaps deployments.apps secrets"},
		{name: "unknown CRD", watch: []configv1alpha1.ResourceRule{rr("example.com", "widgets"), rr("", "configmaps")}, want: "configmaps",
			wantUnknown: []string{`resource "widgets" in group "example.com" is not served`}},
		{name: "unknown group", watch: []configv1alpha1.ResourceRule{rr("example.com", "*")},
			wantUnknown: []string{`API group "example.com" is not served`}},
		{name: "cluster-scoped in a WatchRule", watch: []configv1alpha1.ResourceRule{rr("", "namespaces")},
			wantUnknown: []string{`resource "namespaces" (core group) is served only cluster-scoped`}},
		{name: "cluster scope", cluster: []configv1alpha1.ClusterResourceRule{{ResourceRule: rr("", "*"), Scope: configv1alpha1.ScopeCluster}}, want: "namespaces"},
		{name: "default scope", cluster: []configv1alpha1.ClusterResourceRule{{ResourceRule: rr("", "configmaps,namespaces")}}, want: "configmaps namespaces"},
		{name: "namespaced entry naming a cluster resource", cluster: []configv1alpha1.ClusterResourceRule{{ResourceRule: rr("", "namespaces"), Scope: configv1alpha1.ScopeNamespaced}},
			wantUnknown: []string{`resource "namespaces" (core group) is served only cluster-scoped`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res Resolution
			if tc.watch != nil {
				res = ResolveWatchRule(&configv1alpha1.WatchRule{Spec: configv1alpha1.WatchRuleSpec{Rules: tc.watch}}, served(t))
			} else {
				res = ResolveClusterWatchRule(&configv1alpha1.ClusterWatchRule{Spec: configv1alpha1.ClusterWatchRuleSpec{Rules: tc.cluster}}, served(t))
			}
			if got := strings.Join(res.Names(), " "); got != tc.want {
				t.Errorf("tracked %q, want %q", got, tc.want)
			}
			if len(res.Unknown) != len(tc.wantUnknown) {
				t.Fatalf("unknown %q, want %q", res.Unknown, tc.wantUnknown)
			}
			for i, u := range tc.wantUnknown {
				if !strings.HasPrefix(res.Unknown[i], u) {
					t.Errorf("unknown[%d] = %q, want prefix %q", i, res.Unknown[i], u)
				}
			}
		})
	}
}

type capture struct {
	mu      sync.Mutex
	changes []change.Change
}

func (c *capture) Publish(_ context.Context, chs []change.Change) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes = append(c.changes, chs...)
	return nil
}

var (
	longAgo = metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
)

func obj(apiVersion, kind, ns, name string, lbls map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	u.SetLabels(lbls)
	u.SetUID(types.UID("uid-" + ns + "-" + name))
	u.SetResourceVersion("7")
	u.SetCreationTimestamp(longAgo)
	return u
}

type fixture struct {
	r      *Reconciler
	pub    *capture
	config *versionedfake.Clientset
}

func newFixture(t *testing.T, configObjs []runtime.Object, objects []runtime.Object, settle time.Duration) *fixture {
	t.Helper()
	kube := kubefake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"env": "prod"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b", Labels: map[string]string{"env": "dev"}}})
	kube.Resources = servedLists
	config := versionedfake.NewSimpleClientset(configObjs...)
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{
		{Version: "v1", Resource: "configmaps"}:                 "ConfigMapList",
		{Version: "v1", Resource: "secrets"}:                    "SecretList",
		{Version: "v1", Resource: "namespaces"}:                 "NamespaceList",
		{Group: "apps", Version: "v1", Resource: "deployments"}: "DeploymentList",
	}, objects...)
	dyn.PrependReactor("list", "secrets", func(clienttesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", nil)
	})
	cfgInf := externalversions.NewSharedInformerFactory(config, 0)
	kubeInf := kubeinformers.NewSharedInformerFactory(kube, 0)
	pub := &capture{}
	r, err := New(Options{Settle: settle, Identity: "replica-0", Actor: "kubehistory"}, kube, config, dyn, kube.Discovery(), pub, cfgInf, kubeInf)
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return testNow }
	r.actor = change.Actor{Username: "kubehistory"}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfgInf.Start(ctx.Done())
	kubeInf.Start(ctx.Done())
	cfgInf.WaitForCacheSync(ctx.Done())
	kubeInf.WaitForCacheSync(ctx.Done())
	return &fixture{r: r, pub: pub, config: config}
}

func watchRule(ns, name, dest string, sel map[string]string, rules ...configv1alpha1.ResourceRule) *configv1alpha1.WatchRule {
	wr := &configv1alpha1.WatchRule{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 3},
		Spec: configv1alpha1.WatchRuleSpec{DestinationRef: configv1alpha1.LocalDestinationReference{Name: dest}, Rules: rules}}
	if sel != nil {
		wr.Spec.ObjectSelector = &metav1.LabelSelector{MatchLabels: sel}
	}
	return wr
}

func readyOf(t *testing.T, conds []metav1.Condition) *metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(conds, configv1alpha1.ConditionReady)
	if c == nil {
		t.Fatal("no Ready condition")
	}
	return c
}

// TestSyncSeedsTheScope: one pass of a destination publishes a seed for each object its rules track
// (namespace, objectSelector, namespaceSelector, cluster scope), leaves recently written objects to
// audit, ends with an orphan check listing them all, and reports each rule's resolution in its status.
func TestSyncSeedsTheScope(t *testing.T) {
	cm := []configv1alpha1.ResourceRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}}}
	recent := obj("v1", "ConfigMap", "team-a", "fresh", map[string]string{"app": "web"})
	recent.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: "kubectl", Time: &metav1.Time{Time: testNow.Add(-5 * time.Second)}}})
	f := newFixture(t,
		[]runtime.Object{
			&configv1alpha1.GitDestination{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "history"}},
			watchRule("team-a", "web", "history", map[string]string{"app": "web"}, cm...),
			&configv1alpha1.ClusterWatchRule{ObjectMeta: metav1.ObjectMeta{Name: "dev", Generation: 1},
				Spec: configv1alpha1.ClusterWatchRuleSpec{
					DestinationRef:    configv1alpha1.DestinationReference{Namespace: "team-a", Name: "history"},
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "dev"}},
					Rules: []configv1alpha1.ClusterResourceRule{
						{ResourceRule: cm[0]},
						{ResourceRule: configv1alpha1.ResourceRule{APIGroups: []string{""}, Resources: []string{"namespaces"}}, Scope: configv1alpha1.ScopeCluster},
					}}},
		},
		[]runtime.Object{
			obj("v1", "ConfigMap", "team-a", "web", map[string]string{"app": "web"}),
			obj("v1", "ConfigMap", "team-a", "other", map[string]string{"app": "other"}),
			obj("v1", "ConfigMap", "team-b", "dev-config", nil),
			obj("v1", "ConfigMap", "team-c", "elsewhere", nil),
			recent,
			obj("v1", "Namespace", "", "team-a", nil),
			obj("v1", "Namespace", "", "team-b", nil),
		}, time.Minute)

	if err := f.r.Sync(context.Background(), "team-a/history"); err != nil {
		t.Fatal(err)
	}
	var seeds []string
	var check *change.OrphanCheck
	for _, c := range f.pub.changes {
		if c.OrphanCheck != nil {
			check = c.OrphanCheck
			continue
		}
		seeds = append(seeds, gitrecord.ObjectPath("", c.Object))
		if c.Verb != change.VerbSeed || c.Source != change.SourceReconcile || c.Actor.Username != "kubehistory" || len(c.Body) == 0 {
			t.Errorf("seed %+v", c.Fields)
		}
		if want := change.ID(c.Destination, "seed/"+c.Object.UID+"/7", c.Object); c.ChangeID != want {
			t.Errorf("seed change ID %s, want %s", c.ChangeID, want)
		}
		if !strings.Contains(string(c.Body), `"kind":`) {
			t.Errorf("seed body without kind: %s", c.Body)
		}
	}
	sort.Strings(seeds)
	want := "_cluster/core/namespaces/team-a.yaml _cluster/core/namespaces/team-b.yaml team-a/core/configmaps/web.yaml team-b/core/configmaps/dev-config.yaml"
	if got := strings.Join(seeds, " "); got != want {
		t.Fatalf("seeds:\n%s\nwant:\n%s", got, want)
	}
	if check == nil {
		t.Fatal("no orphan check")
	}
	// The recently written object is in scope (no orphan) but left to its audit event for now.
	wantExpected := "_cluster/core/namespaces/team-a.yaml _cluster/core/namespaces/team-b.yaml team-a/core/configmaps/fresh.yaml team-a/core/configmaps/web.yaml team-b/core/configmaps/dev-config.yaml"
	if got := strings.Join(check.Expected, " "); got != wantExpected || check.Chunks != 1 || check.GraceSeconds != 60 {
		t.Fatalf("orphan check %+v", check)
	}
	if got := strings.Join(check.Resources, " ") + " | " + strings.Join(check.Namespaces, " "); got != "/configmaps /namespaces | _cluster team-a team-b" {
		t.Errorf("check scope %s", got)
	}
	// Listed but left out by the selectors: orphans of these are out of scope, not gone.
	if got := strings.Join(check.Excluded, " "); got != "team-a/core/configmaps/other.yaml team-c/core/configmaps/elsewhere.yaml" {
		t.Errorf("excluded %s", got)
	}

	wr, _ := f.config.ConfigV1alpha1().WatchRules("team-a").Get(context.Background(), "web", metav1.GetOptions{})
	if c := readyOf(t, wr.Status.Conditions); c.Status != metav1.ConditionTrue || wr.Status.ObservedGeneration != 3 || strings.Join(wr.Status.TrackedResources, ",") != "configmaps" {
		t.Errorf("WatchRule status %+v", wr.Status)
	}
	cr, _ := f.config.ConfigV1alpha1().ClusterWatchRules().Get(context.Background(), "dev", metav1.GetOptions{})
	if c := readyOf(t, cr.Status.Conditions); c.Status != metav1.ConditionTrue || strings.Join(cr.Status.TrackedResources, ",") != "configmaps,namespaces" {
		t.Errorf("ClusterWatchRule status %+v", cr.Status)
	}

	// The next pass publishes only the orphan check: nothing changed. Past republishAfter, every seed
	// goes out again (JetStream's window is long gone; the writer finds Git equal).
	seedsOf := func() int {
		n := 0
		for _, c := range f.pub.changes {
			if c.OrphanCheck == nil {
				n++
			}
		}
		f.pub.changes = nil
		return n
	}
	seedsOf()
	if err := f.r.Sync(context.Background(), "team-a/history"); err != nil {
		t.Fatal(err)
	}
	if n := seedsOf(); n != 0 {
		t.Errorf("an unchanged scope republished %d seeds", n)
	}
	f.r.now = func() time.Time { return testNow.Add(republishAfter) }
	if err := f.r.Sync(context.Background(), "team-a/history"); err != nil {
		t.Fatal(err)
	}
	if n := seedsOf(); n != 5 {
		t.Errorf("%d seeds republished after %s, want 5 (the recent object has settled by now)", n, republishAfter)
	}
}

// TestSyncConditions: a missing destination, an unknown resource and a forbidden list each show in the
// rule's Ready condition; a denied list means no orphan check (unseen objects are no orphans).
func TestSyncConditions(t *testing.T) {
	f := newFixture(t,
		[]runtime.Object{
			&configv1alpha1.GitDestination{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "history"}},
			watchRule("team-a", "widgets", "history", nil, configv1alpha1.ResourceRule{APIGroups: []string{"example.com"}, Resources: []string{"widgets"}}),
			watchRule("team-a", "secrets", "history", nil, configv1alpha1.ResourceRule{APIGroups: []string{""}, Resources: []string{"secrets"}}),
			watchRule("team-b", "lost", "nowhere", nil, configv1alpha1.ResourceRule{APIGroups: []string{""}, Resources: []string{"configmaps"}}),
		},
		[]runtime.Object{obj("v1", "ConfigMap", "team-b", "x", nil)}, 0)
	ctx := context.Background()
	if err := f.r.Sync(ctx, "team-a/history"); err != nil {
		t.Fatal(err)
	}
	if err := f.r.Sync(ctx, "team-b/nowhere"); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.pub.changes {
		if c.OrphanCheck != nil {
			t.Errorf("orphan check published for %s despite an incomplete or impossible pass", c.Destination)
		}
		if c.Destination.Name == "nowhere" {
			t.Errorf("seed published to a missing destination: %+v", c.Object)
		}
	}
	for _, tc := range []struct{ ns, name, reason, msg string }{
		{"team-a", "widgets", configv1alpha1.ReasonUnknownResource, `resource "widgets" in group "example.com" is not served by the API server`},
		{"team-a", "secrets", configv1alpha1.ReasonAccessDenied, "kubehistory may not list secrets"},
		{"team-b", "lost", configv1alpha1.ReasonDestinationMissing, "GitDestination team-b/nowhere not found"},
	} {
		wr, err := f.config.ConfigV1alpha1().WatchRules(tc.ns).Get(ctx, tc.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := readyOf(t, wr.Status.Conditions)
		if c.Status != metav1.ConditionFalse || c.Reason != tc.reason || !strings.HasPrefix(c.Message, tc.msg) {
			t.Errorf("%s/%s Ready=%s %s %q, want %s %q", tc.ns, tc.name, c.Status, c.Reason, c.Message, tc.reason, tc.msg)
		}
	}
}

// A ClusterWatchRule aimed at a GitDestination in a namespace the server does not trust is not seeded
// and reports DestinationNotTrusted.
func TestSyncUntrustedDestination(t *testing.T) {
	cwr := &configv1alpha1.ClusterWatchRule{ObjectMeta: metav1.ObjectMeta{Name: "all-configmaps", Generation: 2},
		Spec: configv1alpha1.ClusterWatchRuleSpec{
			DestinationRef:    configv1alpha1.DestinationReference{Namespace: "team-a", Name: "history"},
			NamespaceSelector: &metav1.LabelSelector{},
			Rules: []configv1alpha1.ClusterResourceRule{{ResourceRule: configv1alpha1.ResourceRule{APIGroups: []string{""}, Resources: []string{"configmaps"}},
				Scope: configv1alpha1.ScopeAll}},
		}}
	f := newFixture(t,
		[]runtime.Object{&configv1alpha1.GitDestination{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "history"}}, cwr},
		[]runtime.Object{obj("v1", "ConfigMap", "team-b", "x", nil)}, 0)
	f.r.opts.Trust = ingest.NewDestinationTrust([]string{"kubehistory-system"})
	ctx := context.Background()
	if err := f.r.Sync(ctx, "team-a/history"); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.pub.changes {
		if c.OrphanCheck == nil {
			t.Errorf("seed published for an untrusted destination: %+v", c.Object)
		}
	}
	got, err := f.config.ConfigV1alpha1().ClusterWatchRules().Get(ctx, "all-configmaps", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := readyOf(t, got.Status.Conditions)
	if c.Status != metav1.ConditionFalse || c.Reason != configv1alpha1.ReasonDestinationNotTrusted || c.ObservedGeneration != 2 ||
		!strings.Contains(c.Message, `"team-a"`) {
		t.Errorf("Ready=%s %s %q (generation %d)", c.Status, c.Reason, c.Message, c.ObservedGeneration)
	}
}

// processNext counts each destination's passes by result: the signal that the reconciler looked at a
// destination again.
func TestProcessNextCountsSyncs(t *testing.T) {
	f := newFixture(t, []runtime.Object{
		&configv1alpha1.GitDestination{ObjectMeta: metav1.ObjectMeta{Namespace: "team-c", Name: "history"}},
		watchRule("team-c", "cms", "history", nil, configv1alpha1.ResourceRule{APIGroups: []string{""}, Resources: []string{"configmaps"}}),
	}, nil, 0)
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer q.ShutDown()
	before, _ := testutil.GetCounterMetricValue(syncsTotal.WithLabelValues("team-c/history", syncSuccess))
	for i := 0; i < 2; i++ {
		q.Add("team-c/history")
		if !f.r.processNext(context.Background(), q) {
			t.Fatal("processNext stopped")
		}
	}
	after, _ := testutil.GetCounterMetricValue(syncsTotal.WithLabelValues("team-c/history", syncSuccess))
	if after-before != 2 {
		t.Errorf("syncs_total{destination=team-c/history,result=success} grew by %v, want 2", after-before)
	}
}
