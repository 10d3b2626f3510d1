package ingest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-base/metrics/testutil"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// write describes one audit event of a write to the ConfigMap team-a/web (uid "u-web"), or of the
// object named by resource/name.
type write struct {
	id       string // auditID
	verb     string
	code     int
	sub      string // subresource
	refRV    string // objectRef.resourceVersion: the version an update named
	respRV   string // the response object's resourceVersion; "" for no response object
	received int    // requestReceivedTimestamp, in milliseconds after t0
	done     int    // stageTimestamp, in milliseconds after t0
	// deleting marks the response object as held by a finalizer after a delete.
	deleting bool
	// gone marks the response object as deleted (deletion completed).
	gone      bool
	resource  string
	namespace string
	name      string
}

var t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

// eventJSON renders w as kube-apiserver does at RequestResponse level.
func (w write) eventJSON() map[string]any {
	res, ns, name := "configmaps", "team-a", "web"
	if w.resource != "" {
		res, ns, name = w.resource, w.namespace, w.name
	}
	ref := map[string]any{"resource": res, "namespace": ns, "name": name, "apiVersion": "v1"}
	if w.refRV != "" {
		ref["resourceVersion"] = w.refRV
	}
	if w.sub != "" {
		ref["subresource"] = w.sub
		ref["resource"], ref["apiGroup"] = "deployments", "apps"
	}
	ev := map[string]any{
		"level": "RequestResponse", "auditID": w.id, "stage": "ResponseComplete",
		"requestURI": "/api/v1/namespaces/" + ns + "/" + res + "/" + name,
		"verb":       w.verb, "user": map[string]any{"username": "alice"},
		"objectRef":                ref,
		"responseStatus":           map[string]any{"code": w.code},
		"requestReceivedTimestamp": t0.Add(time.Duration(w.received) * time.Millisecond).Format(metav1.RFC3339Micro),
		"stageTimestamp":           t0.Add(time.Duration(w.done) * time.Millisecond).Format(metav1.RFC3339Micro),
	}
	if w.respRV != "" {
		md := map[string]any{"name": name, "uid": "u-" + name, "resourceVersion": w.respRV}
		kind := "ConfigMap"
		if res == "namespaces" {
			kind = "Namespace"
		} else {
			md["namespace"] = ns
		}
		if w.sub == "scale" {
			kind = "Scale"
		}
		switch {
		case w.deleting:
			md["deletionTimestamp"] = "2026-05-04T10:00:00Z"
			md["deletionGracePeriodSeconds"] = 0
			md["finalizers"] = []string{"example.com/hold"}
		case w.gone:
			md["deletionTimestamp"] = "2026-05-04T10:00:00Z"
			md["deletionGracePeriodSeconds"] = 0
		}
		ev["responseObject"] = map[string]any{"kind": kind, "apiVersion": "v1", "metadata": md}
	}
	return ev
}

func eventList(t *testing.T, writes ...write) []byte {
	t.Helper()
	items := make([]map[string]any, len(writes))
	for i, w := range writes {
		items[i] = w.eventJSON()
	}
	data, err := json.Marshal(map[string]any{"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestNoOpWrites maps sequences of events, in the order ingest receives them, with the memory of the
// versions published so far: a write that provably persisted nothing is dropped as no-op, a write that
// may have persisted something never is.
func TestNoOpWrites(t *testing.T) {
	type want struct {
		reason string
		verb   change.Verb
	}
	accepted := func(verb change.Verb) want { return want{ReasonAccepted, verb} }
	noop := want{reason: ReasonNoOp}
	tests := []struct {
		name   string
		writes []write
		want   []want
		// stateless is what EventChanges, which remembers nothing, says of each event; nil: the same
		// as want.
		stateless []want
	}{
		{
			name:   "update answered with the version it named",
			writes: []write{{id: "u1", verb: "update", code: 200, refRV: "10", respRV: "10", received: 0, done: 5}},
			want:   []want{noop},
		},
		{
			name:   "update answered with a newer version",
			writes: []write{{id: "u1", verb: "update", code: 200, refRV: "10", respRV: "11", received: 0, done: 5}},
			want:   []want{accepted("update")},
		},
		{
			name:   "scale naming the version, unchanged",
			writes: []write{{id: "s1", verb: "update", code: 200, sub: "scale", refRV: "10", respRV: "10", received: 0, done: 5}},
			want:   []want{noop},
		},
		{
			name: "apply creates, updates, then changes nothing",
			writes: []write{
				{id: "a1", verb: "patch", code: 201, respRV: "10", received: 0, done: 5},
				{id: "a2", verb: "patch", code: 200, respRV: "11", received: 10, done: 15},
				{id: "a3", verb: "patch", code: 200, respRV: "11", received: 20, done: 25},
				{id: "a4", verb: "patch", code: 200, respRV: "11", received: 30, done: 35},
			},
			want:      []want{accepted("create"), accepted("patch"), noop, noop},
			stateless: []want{accepted("create"), accepted("patch"), accepted("patch"), accepted("patch")},
		},
		{
			name: "update without a version after an apply, unchanged",
			writes: []write{
				{id: "a1", verb: "patch", code: 200, respRV: "11", received: 0, done: 5},
				{id: "u1", verb: "update", code: 200, respRV: "11", received: 10, done: 15},
			},
			want:      []want{accepted("patch"), noop},
			stateless: []want{accepted("patch"), accepted("update")},
		},
		{
			name:   "create on update (201)",
			writes: []write{{id: "c1", verb: "update", code: 201, respRV: "10", received: 0, done: 5}},
			want:   []want{accepted("create")},
		},
		{
			// A scale answered 201 is no creation of the Deployment.
			name:   "scale answered 201",
			writes: []write{{id: "s1", verb: "patch", code: 201, sub: "scale", respRV: "10", received: 0, done: 5}},
			want:   []want{accepted("patch")},
		},
		{
			// The request received while the other was in flight may be the one that wrote.
			name: "overlapping requests answering the same version",
			writes: []write{
				{id: "p1", verb: "patch", code: 200, respRV: "11", received: 0, done: 10},
				{id: "p2", verb: "patch", code: 200, respRV: "11", received: 9, done: 12},
			},
			want: []want{accepted("patch"), accepted("patch")},
		},
		{
			// kube-apiserver re-sends the batch of the write after the batch of a later no-op: the
			// write was received before the no-op completed, so it is kept (the no-op, first in,
			// could not be told apart and is recorded too).
			name: "the writing request's batch arrives after a no-op",
			writes: []write{
				{id: "noop", verb: "patch", code: 200, respRV: "11", received: 20, done: 25},
				{id: "writer", verb: "patch", code: 200, respRV: "11", received: 0, done: 10},
			},
			want: []want{accepted("patch"), accepted("patch")},
		},
		{
			name: "a batch re-sent",
			writes: []write{
				{id: "p1", verb: "patch", code: 200, respRV: "11", received: 0, done: 10},
				{id: "p1", verb: "patch", code: 200, respRV: "11", received: 0, done: 10},
			},
			want: []want{accepted("patch"), accepted("patch")},
		},
		{
			// An old no-op delivered late answers an older version than the last published: kept (an
			// extra entry, never a loss), and the memory stays at the newest version.
			name: "older version delivered late",
			writes: []write{
				{id: "p1", verb: "patch", code: 200, respRV: "11", received: 0, done: 5},
				{id: "p2", verb: "patch", code: 200, respRV: "12", received: 30, done: 35},
				{id: "p1-noop", verb: "patch", code: 200, respRV: "11", received: 10, done: 15},
				{id: "p2-noop", verb: "patch", code: 200, respRV: "12", received: 40, done: 45},
			},
			want:      []want{accepted("patch"), accepted("patch"), accepted("patch"), noop},
			stateless: []want{accepted("patch"), accepted("patch"), accepted("patch"), accepted("patch")},
		},
		{
			name: "scale to the same replicas after a change",
			writes: []write{
				{id: "s1", verb: "patch", code: 200, sub: "scale", respRV: "11", received: 0, done: 5},
				{id: "s2", verb: "patch", code: 200, sub: "scale", respRV: "11", received: 10, done: 15},
			},
			want:      []want{accepted("patch"), noop},
			stateless: []want{accepted("patch"), accepted("patch")},
		},
		{
			name: "delete held by a finalizer, repeated",
			writes: []write{
				{id: "d1", verb: "delete", code: 200, respRV: "12", deleting: true, received: 0, done: 5},
				{id: "d2", verb: "delete", code: 202, respRV: "12", deleting: true, received: 10, done: 15},
				{id: "f1", verb: "patch", code: 200, respRV: "13", gone: true, received: 20, done: 25},
			},
			want:      []want{accepted("update"), noop, accepted("delete")},
			stateless: []want{accepted("update"), accepted("update"), accepted("delete")},
		},
		{
			// A removal is never a no-op, even answered with the last version (a store returning the
			// object's last state).
			name: "delete answered with the last version",
			writes: []write{
				{id: "p1", verb: "patch", code: 200, respRV: "11", received: 0, done: 5},
				{id: "d1", verb: "delete", code: 200, respRV: "11", received: 10, done: 15},
			},
			want: []want{accepted("patch"), accepted("delete")},
		},
		{
			// Nothing is remembered of objects no rule tracks.
			name: "untracked object",
			writes: []write{
				{id: "p1", verb: "patch", code: 200, respRV: "11", received: 0, done: 5, resource: "configmaps", namespace: "other", name: "x"},
				{id: "p2", verb: "patch", code: 200, respRV: "11", received: 10, done: 15, resource: "configmaps", namespace: "other", name: "x"},
			},
			want: []want{{reason: ReasonNoRule}, {reason: ReasonNoRule}},
		},
		{
			name: "Metadata level: no response object, nothing to compare",
			writes: []write{
				{id: "p1", verb: "patch", code: 200, received: 0, done: 5},
				{id: "p2", verb: "patch", code: 200, received: 10, done: 15},
			},
			want: []want{accepted("patch"), accepted("patch")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			check := func(t *testing.T, last *lastVersions, wants []want) {
				t.Helper()
				for i, w := range tc.writes {
					// One batch per event, as kube-apiserver may send them.
					decoded, err := decodeEvents(eventList(t, w))
					if err != nil || len(decoded) != 1 {
						t.Fatalf("event %d: %v", i, err)
					}
					cs, reason := eventChanges(&decoded[0].Event, decoded[0].head, teamAMatcher, last)
					got := want{reason: reason}
					if len(cs) > 0 {
						got.verb = cs[0].Verb
					}
					if got != wants[i] {
						t.Errorf("event %d (%s): %+v, want %+v", i, w.id, got, wants[i])
					}
				}
			}
			check(t, newLastVersions(16), tc.want)
			stateless := tc.stateless
			if stateless == nil {
				stateless = tc.want
			}
			check(t, nil, stateless)
		})
	}
}

// TestNoOpInOneBatch: the memory also serves events of the same batch, in order.
func TestNoOpInOneBatch(t *testing.T) {
	decoded, err := decodeEvents(eventList(t,
		write{id: "a1", verb: "patch", code: 201, respRV: "10", received: 0, done: 5},
		write{id: "a2", verb: "patch", code: 200, respRV: "10", received: 10, done: 15},
	))
	if err != nil {
		t.Fatal(err)
	}
	last := newLastVersions(16)
	var reasons []string
	for i := range decoded {
		_, reason := eventChanges(&decoded[i].Event, decoded[i].head, teamAMatcher, last)
		reasons = append(reasons, reason)
	}
	if fmt.Sprint(reasons) != fmt.Sprint([]string{ReasonAccepted, ReasonNoOp}) {
		t.Errorf("reasons %q", reasons)
	}
}

func TestLastVersionsBounded(t *testing.T) {
	last := newLastVersions(2)
	for i, uid := range []string{"a", "b", "c"} {
		last.observe(uid, "5", t0.Add(time.Duration(i)*time.Millisecond))
	}
	later := t0.Add(time.Second)
	if last.unchanged("a", "5", later) {
		t.Error("the oldest object was not evicted")
	}
	if !last.unchanged("c", "5", later) || !last.unchanged("b", "5", later) {
		t.Error("recent objects were forgotten")
	}
	// The earliest completion of a version is kept: a later one would prove less.
	last.observe("c", "5", t0.Add(500*time.Millisecond))
	if !last.unchanged("c", "5", t0.Add(100*time.Millisecond)) {
		t.Error("the earliest completion of version 5 was replaced by a later one")
	}
	last.forget("c")
	if last.unchanged("c", "5", later) {
		t.Error("a deleted object is still remembered")
	}
	var none *lastVersions
	none.observe("a", "5", t0)
	if none.unchanged("a", "5", later) {
		t.Error("a nil memory remembered")
	}
}

// TestNamespaceIsClusterScoped: an event on a Namespace names it as its own namespace; the change is
// cluster-scoped, and rule matching sees it so.
func TestNamespaceIsClusterScoped(t *testing.T) {
	for _, verb := range []string{"create", "patch", "delete"} {
		t.Run(verb, func(t *testing.T) {
			w := write{id: "n-" + verb, verb: verb, code: 200, respRV: "20", received: 0, done: 5, resource: "namespaces", namespace: "team-b", name: "team-b"}
			if verb == "create" {
				w.code = 201
			}
			body := eventList(t, w)
			// kube-apiserver's objectRef for POST /api/v1/namespaces has no namespace.
			if verb == "create" {
				body = []byte(strings.Replace(string(body), `"namespace":"team-b",`, ``, 1))
			}
			decoded, err := decodeEvents(body)
			if err != nil {
				t.Fatal(err)
			}
			var seen []ObjectInfo
			m := matcherFunc(func(o ObjectInfo) []change.DestinationRef {
				seen = append(seen, o)
				return teamAMatcher(o)
			})
			cs, reason := eventChanges(&decoded[0].Event, decoded[0].head, m, nil)
			if reason != ReasonAccepted || len(cs) != 1 {
				t.Fatalf("reason %q, %d changes", reason, len(cs))
			}
			if o := cs[0].Object; o.Namespace != "" || o.Name != "team-b" || o.Resource != "namespaces" {
				t.Errorf("changed object %+v, want the cluster-scoped Namespace team-b", o)
			}
			if len(seen) != 1 || seen[0].Namespace != "" {
				t.Errorf("matcher saw %+v", seen)
			}
		})
	}
}

// TestServerDropsNoOps: the webhook remembers across batches what it published, and counts a dropped
// no-op under its own reason.
func TestServerDropsNoOps(t *testing.T) {
	pki := newTestPKI(t)
	js := startJetStream(t)
	url := startServer(t, pki, Options{}, teamAMatcher, js.pub)
	apiserver := pki.client(t, "kube-apiserver", pki.ca, pki.caKey)

	before, _ := testutil.GetCounterMetricValue(eventsTotal.WithLabelValues("dropped", ReasonNoOp))
	create := write{id: "apply-create", verb: "patch", code: 201, respRV: "10", received: 0, done: 5}
	mustPost(t, apiserver, url, eventList(t, create), http.StatusOK)
	mustPost(t, apiserver, url, eventList(t, write{id: "apply-noop", verb: "patch", code: 200, respRV: "10", received: 10, done: 15}), http.StatusOK)
	mustPost(t, apiserver, url, eventList(t, write{id: "replace-noop", verb: "update", code: 200, refRV: "10", respRV: "10", received: 20, done: 25}), http.StatusOK)
	// kube-apiserver re-sends the first batch: the same change, deduplicated, not a no-op.
	mustPost(t, apiserver, url, eventList(t, create), http.StatusOK)
	mustPost(t, apiserver, url, eventList(t, write{id: "apply-update", verb: "patch", code: 200, respRV: "11", received: 30, done: 35}), http.StatusOK)

	ids := js.msgIDs(t)
	if len(ids) != 2 {
		t.Errorf("stream holds %d changes, want the create and the update: %v", len(ids), ids)
	}
	after, _ := testutil.GetCounterMetricValue(eventsTotal.WithLabelValues("dropped", ReasonNoOp))
	if after-before != 2 {
		t.Errorf(`events_total{result="dropped",reason="no-op"} grew by %v, want 2`, after-before)
	}
}

// TestWriteMatrixEvents maps the audit events kube-apiserver wrote for TestWriteMatrix (test/e2e), in
// the order it wrote them, one batch each: every way kubectl writes, as several users. Each object's
// entries are exactly its persisted changes, with the right verb and actor. (The fixture is in a
// folder of its own: at 77 KB, as a seed of FuzzDecodeEventList it would slow the fuzzer a
// thousandfold; noop-sample.json holds a few of its events for that.)
func TestWriteMatrixEvents(t *testing.T) {
	decoded, err := decodeEvents(loadFixture(t, filepath.Join("matrix", "write-matrix.json")))
	if err != nil {
		t.Fatal(err)
	}
	m := matcherFunc(func(o ObjectInfo) []change.DestinationRef {
		if o.Namespace == "matrix" || (o.Namespace == "" && o.Resource == "namespaces") {
			return []change.DestinationRef{testDest}
		}
		return nil
	})
	type entry struct{ verb, actor string }
	mapAll := func(last *lastVersions) (map[string][]entry, map[string]int) {
		got, reasons := map[string][]entry{}, map[string]int{}
		for i := range decoded {
			cs, reason := eventChanges(&decoded[i].Event, decoded[i].head, m, last)
			reasons[reason]++
			for _, c := range cs {
				obj := c.Object.Resource + "/" + c.Object.Namespace + "/" + c.Object.Name
				got[obj] = append(got[obj], entry{string(c.Verb), c.Actor.Username})
			}
		}
		return got, reasons
	}
	c, u, p, d := "create", "update", "patch", "delete"
	want := map[string][]entry{
		"namespaces//matrix":          {{c, "admin"}, {p, "admin"}},
		"configmaps/matrix/plain":     {{c, "alice"}, {u, "alice"}, {p, "alice"}, {p, "bob"}, {p, "alice"}, {p, "alice"}, {p, "bob"}, {p, "dave"}, {d, "bob"}},
		"configmaps/matrix/csa":       {{c, "alice"}, {p, "bob"}, {d, "bob"}},
		"configmaps/matrix/ssa":       {{c, "alice"}, {p, "alice"}, {p, "bob"}, {d, "bob"}},
		"configmaps/matrix/gen-2h59h": {{c, "alice"}, {d, "bob"}},
		"configmaps/matrix/guarded":   {{c, "alice"}, {u, "bob"}, {d, "alice"}},
		"configmaps/matrix/sweep-1":   {{c, "alice"}, {p, "alice"}, {d, "bob"}},
		"configmaps/matrix/sweep-2":   {{c, "alice"}, {p, "alice"}, {d, "bob"}},
		"configmaps/matrix/sentinel":  {{c, "alice"}},
		"deployments/matrix/web":      {{c, "alice"}, {p, "bob"}},
	}
	got, reasons := mapAll(newLastVersions(DefaultLastVersions))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		for obj := range want {
			if fmt.Sprint(got[obj]) != fmt.Sprint(want[obj]) {
				t.Errorf("%s:\n got %v\nwant %v", obj, got[obj], want[obj])
			}
		}
		for obj := range got {
			if _, ok := want[obj]; !ok {
				t.Errorf("unexpected %s: %v", obj, got[obj])
			}
		}
	}
	// No-ops: a replace, a patch, a server-side apply, a repeated delete and a scale, all unchanged.
	// Dry runs: a patch, an apply (in the URI) and a delete (in its DeleteOptions).
	if reasons[ReasonNoOp] != 5 || reasons[ReasonDryRun] != 3 || reasons[ReasonFailed] != 6 {
		t.Errorf("reasons %v, want 5 no-op, 3 dry-run, 6 failed", reasons)
	}
	// Without the memory of published versions only the replace, which named its version, is known
	// to be a no-op.
	if _, reasons := mapAll(nil); reasons[ReasonNoOp] != 1 {
		t.Errorf("stateless: reasons %v, want 1 no-op", reasons)
	}
}

// TestDryRunDelete: kubectl delete --dry-run=server asks for it in the DeleteOptions body, not the URI.
// Only a delete's request object is read so: a patch whose body has a dryRun field changes the object.
func TestDryRunDelete(t *testing.T) {
	tests := []struct {
		name, verb, requestObject, reason string
	}{
		{"dry-run delete", "delete", `{"kind":"DeleteOptions","apiVersion":"meta.k8s.io/__internal","propagationPolicy":"Background","dryRun":["All"]}`, ReasonDryRun},
		{"dry-run deletecollection", "deletecollection", `{"kind":"DeleteOptions","dryRun":["All"]}`, ReasonDryRun},
		{"delete", "delete", `{"kind":"DeleteOptions","apiVersion":"meta.k8s.io/__internal","propagationPolicy":"Background"}`, ReasonAccepted},
		{"empty dryRun", "delete", `{"kind":"DeleteOptions","dryRun":[]}`, ReasonAccepted},
		{"null dryRun", "delete", `{"kind":"DeleteOptions","dryRun":null}`, ReasonAccepted},
		{"dryRun not a list", "delete", `{"kind":"DeleteOptions","dryRun":"All"}`, ReasonAccepted},
		{"no request object", "delete", `null`, ReasonAccepted},
		{"patch with a dryRun field", "patch", `{"dryRun":["All"]}`, ReasonAccepted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a1","stage":"ResponseComplete","verb":%q,`+
				`"requestURI":"/api/v1/namespaces/team-a/configmaps/web","objectRef":{"resource":"configmaps","namespace":"team-a","name":"web","apiVersion":"v1"},`+
				`"responseStatus":{"code":200},"requestObject":%s,"stageTimestamp":"2026-05-04T10:00:00.000000Z"}]}`, tc.verb, tc.requestObject)
			decoded, err := decodeEvents([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			_, inline := eventChanges(&decoded[0].Event, decoded[0].head, teamAMatcher, nil)
			list, err := DecodeEventList([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if _, reason := EventChanges(&list.Items[0], teamAMatcher); reason != tc.reason || inline != tc.reason {
				t.Errorf("reason %q (inline %q), want %q", reason, inline, tc.reason)
			}
		})
	}
}
