package access

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// fakeRBAC allows alice to get ConfigMaps in team-a and counts the questions.
type fakeRBAC struct {
	calls int
	err   error
}

func (f *fakeRBAC) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	f.calls++
	if f.err != nil {
		return authorizer.DecisionNoOpinion, "", f.err
	}
	if a.GetUser().GetName() == "alice" && a.GetVerb() == "get" && a.GetAPIGroup() == "" && a.GetResource() == "configmaps" && a.GetNamespace() == "team-a" {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "", nil
}

func record(resource, ns string) *change.Record {
	return &change.Record{Cluster: ns == "", Fields: change.Fields{
		Object: change.Object{Version: "v1", Resource: resource, Namespace: ns, Name: "x"},
	}}
}

func TestMayGet(t *testing.T) {
	f := &fakeRBAC{}
	m := New(f, time.Hour, 100)
	alice := &user.DefaultInfo{Name: "alice", Groups: []string{"developers"}}
	cases := []struct {
		name string
		u    user.Info
		rec  *change.Record
		want bool
	}{
		{"alice, ConfigMap in team-a", alice, record("configmaps", "team-a"), true},
		{"alice, Secret in team-a", alice, record("secrets", "team-a"), false},
		{"alice, ConfigMap in team-b", alice, record("configmaps", "team-b"), false},
		{"alice, a cluster object", alice, record("namespaces", ""), false},
		{"bob, ConfigMap in team-a", &user.DefaultInfo{Name: "bob"}, record("configmaps", "team-a"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.MayGet(context.Background(), tc.u, tc.rec)
			if err != nil || got != tc.want {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	calls := f.calls
	for i := 0; i < 3; i++ {
		if ok, _ := m.MayGet(context.Background(), alice, record("configmaps", "team-a")); !ok {
			t.Fatal("cached decision changed")
		}
	}
	// The same user in other groups is another question.
	if _, _ = m.MayGet(context.Background(), &user.DefaultInfo{Name: "alice", Groups: []string{"ops"}}, record("configmaps", "team-a")); f.calls != calls+1 {
		t.Errorf("authorizer asked %d times after %d, want one more for a different group set", f.calls, calls)
	}

	// Authorizer errors surface, and are not cached.
	f.err = errors.New("kube-apiserver unreachable")
	if _, err := m.MayGet(context.Background(), alice, record("pods", "team-a")); err == nil {
		t.Error("an authorizer error was taken as a decision")
	}
	f.err = nil
	if ok, err := m.MayGet(context.Background(), alice, record("pods", "team-a")); ok || err != nil {
		t.Errorf("after the error: %v %v", ok, err)
	}
}

func TestDecisionsExpire(t *testing.T) {
	f := &fakeRBAC{}
	m := New(f, time.Nanosecond, 100)
	alice := &user.DefaultInfo{Name: "alice"}
	for i := 0; i < 2; i++ {
		if _, err := m.MayGet(context.Background(), alice, record("configmaps", "team-a")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	if f.calls != 2 {
		t.Errorf("authorizer asked %d times, want 2 once the decision expired", f.calls)
	}
}
