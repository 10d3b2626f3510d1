package changes

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kubehistory/kubehistory/apis/history"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/registry/access"
)

// aliceRBAC lets alice get ConfigMaps in team-a and admin everything.
type aliceRBAC struct{}

func (aliceRBAC) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	switch {
	case a.GetUser().GetName() == "admin":
		return authorizer.DecisionAllow, "", nil
	case a.GetUser().GetName() == "alice" && a.GetVerb() == "get" && a.GetAPIGroup() == "" && a.GetResource() == "configmaps" && a.GetNamespace() == "team-a":
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "", nil
}

// configMapsAndSecrets returns an index of 40 changes in team-a alternating ConfigMap and Secret: odd
// sequences are ConfigMaps.
func configMapsAndSecrets(t *testing.T) *index.Index {
	x := newIndex(t, 0)
	for seq := uint64(1); seq <= 40; seq++ {
		resource := "configmaps"
		if seq%2 == 0 {
			resource = "secrets"
		}
		add(t, x, seq, record(seq, "", resource, "team-a", fmt.Sprintf("obj-%d", seq)))
	}
	return x
}

func TestRBACMirror(t *testing.T) {
	x := configMapsAndSecrets(t)
	r := NewResourceChanges(x, access.New(aliceRBAC{}, time.Minute, 100))
	alice, bob := userCtx("team-a", "alice"), userCtx("team-a", "bob")

	// list, paged: pages count visible items only, and every one is a ConfigMap.
	opts := &metainternalversion.ListOptions{Limit: 7}
	var seen []string
	for {
		obj, err := r.List(alice, opts)
		if err != nil {
			t.Fatal(err)
		}
		list := obj.(*history.ResourceChangeList)
		for _, it := range list.Items {
			if it.Object.Resource != "configmaps" {
				t.Errorf("alice sees a change of %s", it.Object.Resource)
			}
			seen = append(seen, it.Name)
		}
		if list.Continue == "" {
			break
		}
		if len(list.Items) != 7 {
			t.Errorf("a page of %d visible items, want 7", len(list.Items))
		}
		opts.Continue = list.Continue
	}
	if len(seen) != 20 {
		t.Errorf("alice lists %d changes, want the 20 ConfigMap changes", len(seen))
	}
	if obj, err := r.List(bob, &metainternalversion.ListOptions{}); err != nil || len(obj.(*history.ResourceChangeList).Items) != 0 {
		t.Errorf("bob lists %v, %v", obj, err)
	}

	// get: a hidden change is NotFound, like a missing one.
	all, _ := x.List(indexOptions("team-a"))
	for _, e := range all.Items[:2] {
		_, err := r.Get(alice, e.Name, nil)
		switch e.Record.Object.Resource {
		case "configmaps":
			if err != nil {
				t.Errorf("alice gets ConfigMap change %s: %v", e.Name, err)
			}
		case "secrets":
			if !apierrors.IsNotFound(err) {
				t.Errorf("alice gets Secret change %s: want NotFound, got %v", e.Name, err)
			}
		}
		if _, err := r.Get(userCtx("team-a", "admin"), e.Name, nil); err != nil {
			t.Errorf("admin gets %s: %v", e.Name, err)
		}
	}

	// watch: initial events and live ones, ConfigMaps only.
	w, err := r.Watch(alice, &metainternalversion.ListOptions{ResourceVersion: "30"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for seq := uint64(41); seq <= 44; seq++ {
		resource := "configmaps"
		if seq%2 == 0 {
			resource = "secrets"
		}
		add(t, x, seq, record(seq, "", resource, "team-a", "live"))
	}
	for _, want := range []string{"31", "33", "35", "37", "39", "41", "43"} {
		ev, ok := next(t, w)
		if !ok || ev.Type != watch.Added || rvOf(t, ev) != want {
			t.Fatalf("alice's watch: want ADDED %s, got %v %s", want, ev.Type, rvOf(t, ev))
		}
	}
}

// countingAuthz counts the questions that reach the authorizer.
type countingAuthz struct {
	aliceRBAC
	asked int
}

func (c *countingAuthz) Authorize(ctx context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	c.asked++
	return c.aliceRBAC.Authorize(ctx, a)
}

// TestListDecidesOncePerResource: with the mirror's cache off (TTL 0), a list still asks the
// authorizer once per resource and namespace, not once per change, and answers the same.
func TestListDecidesOncePerResource(t *testing.T) {
	x := configMapsAndSecrets(t)
	authz := &countingAuthz{}
	r := NewResourceChanges(x, access.New(authz, 0, 100))
	obj, err := r.List(userCtx("team-a", "alice"), &metainternalversion.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(obj.(*history.ResourceChangeList).Items); n != 20 {
		t.Errorf("alice lists %d changes, want 20", n)
	}
	if authz.asked != 2 {
		t.Errorf("the list asked the authorizer %d times, want 2 (configmaps and secrets in team-a)", authz.asked)
	}
}
