package gitwriter

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// Interleaved actors on one object must commit in time order, one commit per run of the same actor.
func TestGroupByActorKeepsTimeOrder(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	mk := func(seq uint64, actor, verb, rv string, at int) *pending {
		return &pending{seq: seq, ch: change.Change{Fields: change.Fields{
			Object:     change.Object{Version: "v1", Resource: "configmaps", Namespace: "ns", Name: "web", ResourceVersion: rv},
			Verb:       change.Verb(verb),
			Actor:      change.Actor{Username: actor},
			ChangeTime: metav1.NewMicroTime(t0.Add(time.Duration(at) * time.Millisecond)),
		}}}
	}
	// Delivered out of order; times say alice, alice, bob, admin, alice.
	batch := []*pending{
		mk(5, "alice", "delete", "241", 50),
		mk(1, "alice", "create", "237", 10),
		mk(3, "bob", "update", "239", 30),
		mk(2, "alice", "patch", "238", 20),
		mk(4, "admin", "create", "240", 40),
	}
	var got []string
	for _, g := range groupByActor(batch) {
		var verbs []string
		for _, p := range g.changes {
			verbs = append(verbs, string(p.ch.Verb))
		}
		got = append(got, g.actor.Username+":"+strings.Join(verbs, ","))
	}
	want := "alice:create,patch bob:update admin:create alice:delete"
	if strings.Join(got, " ") != want {
		t.Errorf("groups %q, want %q", strings.Join(got, " "), want)
	}
}
