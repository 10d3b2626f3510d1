package ingest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// matcherFunc adapts a function to RuleMatcher.
type matcherFunc func(ObjectInfo) []change.DestinationRef

func (f matcherFunc) Match(o ObjectInfo) []change.DestinationRef { return f(o) }

var testDest = change.DestinationRef{Namespace: "team-a", Name: "repo"}

// teamAMatcher tracks everything in team-a and cluster-scoped objects; "other" is unwatched.
var teamAMatcher = matcherFunc(func(o ObjectInfo) []change.DestinationRef {
	if o.Namespace == "team-a" || o.Namespace == "" {
		return []change.DestinationRef{testDest}
	}
	return nil
})

func loadFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type wantChange struct {
	verb         change.Verb
	namespace    string
	name         string
	kind         string
	rv           string
	actor        string
	impersonator string
	markers      []change.Marker
	body         bool
	sweep        bool
}

func TestEventChanges(t *testing.T) {
	none := []change.Marker(nil)
	tests := []struct {
		fixture string
		reasons []string // per event
		want    []wantChange
	}{
		{
			fixture: "create-configmap.json",
			reasons: []string{ReasonStage, ReasonAccepted},
			want:    []wantChange{{verb: "create", namespace: "team-a", name: "web-config", kind: "ConfigMap", rv: "1201", actor: "alice", markers: none, body: true}},
		},
		{
			fixture: "apply-configmap.json",
			reasons: []string{ReasonVerb, ReasonAccepted},
			want:    []wantChange{{verb: "patch", namespace: "team-a", name: "web-config", kind: "ConfigMap", rv: "1250", actor: "alice", markers: none, body: true}},
		},
		{
			fixture: "patch-impersonated.json",
			reasons: []string{ReasonAccepted},
			want:    []wantChange{{verb: "patch", namespace: "team-a", name: "web-config", kind: "ConfigMap", rv: "1302", actor: "bob", impersonator: "kubernetes-admin", markers: none, body: true}},
		},
		{
			fixture: "replace-configmap.json",
			reasons: []string{ReasonAccepted},
			want:    []wantChange{{verb: "update", namespace: "team-a", name: "web-config", kind: "ConfigMap", rv: "1400", actor: "alice", markers: none, body: true}},
		},
		{
			// A Status response: the body is kept, but neither its kind nor labels describe the object.
			fixture: "delete-configmap.json",
			reasons: []string{ReasonAccepted},
			want:    []wantChange{{verb: "delete", namespace: "team-a", name: "web-config", actor: "alice", markers: none, body: true}},
		},
		{
			fixture: "rejected.json",
			reasons: []string{ReasonDryRun, ReasonFailed, ReasonFailed, ReasonFailed, ReasonVerb, ReasonStatusSubresource, ReasonSubresource, ReasonNoRule, ReasonStage, ReasonUnnamed, ReasonVerb},
		},
		{
			fixture: "deletecollection-list.json",
			reasons: []string{ReasonAccepted, ReasonAccepted},
			want: []wantChange{
				{verb: "delete", namespace: "team-a", name: "web-config", rv: "1400", actor: "system:serviceaccount:kube-system:namespace-controller", markers: none, body: true},
				{verb: "delete", namespace: "team-a", name: "web-extra", rv: "1401", actor: "system:serviceaccount:kube-system:namespace-controller", markers: none, body: true},
				{verb: "delete", namespace: "team-a", name: "", actor: "alice", markers: []change.Marker{change.MarkerCollectionSweep}, sweep: true},
			},
		},
		{
			fixture: "special.json",
			reasons: []string{ReasonAccepted, ReasonAccepted, ReasonAccepted, ReasonAccepted, ReasonAccepted, ReasonAccepted},
			want: []wantChange{
				// scale: entry for the parent, without the Scale as body
				{verb: "patch", namespace: "team-a", name: "web", rv: "1600", actor: "alice", markers: []change.Marker{change.MarkerNoBody}},
				// generateName: name from the response
				{verb: "create", namespace: "team-a", name: "gen-x7k2p", kind: "ConfigMap", rv: "1601", actor: "alice", markers: none, body: true},
				{verb: "update", namespace: "team-a", name: "big", actor: "alice", markers: []change.Marker{change.MarkerNoBody, change.MarkerTruncatedEvent}},
				// delete held by a finalizer: an update; removing the finalizer: the delete
				{verb: "update", namespace: "team-a", name: "guarded", kind: "ConfigMap", rv: "1602", actor: "alice", markers: none, body: true},
				{verb: "delete", namespace: "team-a", name: "guarded", kind: "ConfigMap", rv: "1603", actor: "system:serviceaccount:team-a:protector", markers: none, body: true},
				{verb: "update", namespace: "", name: "viewer", actor: "alice", markers: []change.Marker{change.MarkerNoBody}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			list, err := DecodeEventList(loadFixture(t, tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != len(tc.reasons) {
				t.Fatalf("fixture has %d events, table %d reasons", len(list.Items), len(tc.reasons))
			}
			var got []change.Change
			for i := range list.Items {
				cs, reason := EventChanges(&list.Items[i], teamAMatcher)
				if reason != tc.reasons[i] {
					t.Errorf("event %d (%s): reason %q, want %q", i, list.Items[i].AuditID, reason, tc.reasons[i])
				}
				if (reason == ReasonAccepted) != (len(cs) > 0) {
					t.Errorf("event %d: reason %q with %d changes", i, reason, len(cs))
				}
				got = append(got, cs...)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d changes, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				c := got[i]
				imp := ""
				if c.Actor.Impersonator != nil {
					imp = c.Actor.Impersonator.Username
				}
				gotW := wantChange{
					verb: c.Verb, namespace: c.Object.Namespace, name: c.Object.Name, kind: c.Object.Kind,
					rv: c.Object.ResourceVersion, actor: c.Actor.Username, impersonator: imp, markers: c.Markers,
					body: len(c.Body) > 0, sweep: c.Sweep,
				}
				if !reflect.DeepEqual(gotW, w) {
					t.Errorf("change %d:\n got %+v\nwant %+v", i, gotW, w)
				}
				if c.Source != change.SourceAudit || c.AuditID == "" || c.Destination != testDest {
					t.Errorf("change %d: source %q auditID %q destination %v", i, c.Source, c.AuditID, c.Destination)
				}
				if c.ChangeID != change.ID(testDest, c.AuditID, c.Object) {
					t.Errorf("change %d: change ID %s not derived from destination, auditID and object", i, c.ChangeID)
				}
				if c.ChangeTime.IsZero() {
					t.Errorf("change %d: no change time", i)
				}
			}
		})
	}
}

func TestEventChangesActorAndFanOut(t *testing.T) {
	list, err := DecodeEventList(loadFixture(t, "patch-impersonated.json"))
	if err != nil {
		t.Fatal(err)
	}
	var seen ObjectInfo
	two := matcherFunc(func(o ObjectInfo) []change.DestinationRef {
		seen = o
		return []change.DestinationRef{testDest, {Namespace: "audit", Name: "all"}}
	})
	cs, reason := EventChanges(&list.Items[0], two)
	if reason != ReasonAccepted || len(cs) != 2 {
		t.Fatalf("reason %q, %d changes", reason, len(cs))
	}
	if cs[0].ChangeID == cs[1].ChangeID {
		t.Error("two destinations share a change ID")
	}
	a := cs[0].Actor
	if a.Username != "bob" || !reflect.DeepEqual(a.Groups, []string{"developers"}) || a.Impersonator == nil ||
		a.Impersonator.Username != "kubernetes-admin" || len(a.Impersonator.Groups) != 2 || a.UserAgent == "" || len(a.SourceIPs) != 1 {
		t.Errorf("actor %+v impersonator %+v", a, a.Impersonator)
	}
	want := ObjectInfo{Resource: "configmaps", Namespace: "team-a", Name: "web-config", Labels: map[string]string{"app": "web"}, LabelsKnown: true, Username: "bob"}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("matcher saw %+v, want %+v", seen, want)
	}
}

func TestIsDryRun(t *testing.T) {
	tests := []struct {
		uri  string
		want bool
	}{
		{"/api/v1/namespaces/a/configmaps", false},
		{"/api/v1/namespaces/a/configmaps?fieldManager=kubectl", false},
		{"/api/v1/namespaces/a/configmaps?dryRun=All", true},
		{"/api/v1/namespaces/a/configmaps?fieldManager=x&dryRun=All", true},
		{"/api/v1/namespaces/a/configmaps?dryRun=", false},
		{"/api/v1/namespaces/dryRun/configmaps", false},
	}
	for _, tc := range tests {
		t.Run(tc.uri, func(t *testing.T) {
			if got := isDryRun(tc.uri); got != tc.want {
				t.Errorf("isDryRun(%q) = %v", tc.uri, got)
			}
		})
	}
}

func TestDecodeEventList(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		wantErr bool
		items   int
	}{
		{name: "empty list", body: `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}`},
		{name: "items with type meta", body: `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x"}]}`, items: 1},
		{name: "empty body", body: ``, wantErr: true},
		{name: "malformed", body: `{"kind":"EventList",`, wantErr: true},
		{name: "not json", body: `kind: EventList`, wantErr: true},
		{name: "v1beta1", body: `{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":[]}`, wantErr: true},
		{name: "an Event", body: `{"kind":"Event","apiVersion":"audit.k8s.io/v1"}`, wantErr: true},
		{name: "a ConfigMap", body: `{"kind":"ConfigMap","apiVersion":"v1","data":{}}`, wantErr: true},
		{name: "wrong case", body: `{"Kind":"EventList","APIVersion":"audit.k8s.io/v1","items":[]}`, wantErr: true},
		{name: "wrong item kind", body: `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"kind":"Pod"}]}`, wantErr: true},
		{name: "items not a list", body: `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":{}}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			list, err := DecodeEventList([]byte(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && len(list.Items) != tc.items {
				t.Errorf("%d items, want %d", len(list.Items), tc.items)
			}
		})
	}
}

func TestEventChangesWithoutResponseCode(t *testing.T) {
	base := `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"level":"RequestResponse","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/team-a/configmaps/c","verb":"update","user":{"username":"alice"},"objectRef":{"resource":"configmaps","namespace":"team-a","name":"c","apiVersion":"v1"}%s%s}]}`
	object := `,"responseObject":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"team-a","resourceVersion":"9"}}`
	failure := `,"responseObject":{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}`
	tests := []struct {
		name, status, body, reason string
	}{
		{name: "no status, object body", body: object, reason: ReasonAccepted},
		{name: "code 0, object body", status: `,"responseStatus":{"code":0}`, body: object, reason: ReasonAccepted},
		{name: "no status, no body", reason: ReasonNoStatus},
		{name: "no status, failure Status body", body: failure, reason: ReasonNoStatus},
		{name: "code 101", status: `,"responseStatus":{"code":101}`, body: object, reason: ReasonFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			list, err := DecodeEventList([]byte(fmt.Sprintf(base, tc.status, tc.body)))
			if err != nil {
				t.Fatal(err)
			}
			if _, reason := EventChanges(&list.Items[0], teamAMatcher); reason != tc.reason {
				t.Errorf("reason %q, want %q", reason, tc.reason)
			}
		})
	}
}

// TestHeadOfUnexpectedShape: a response object whose head has other field types is no error of the
// batch; the event is mapped without a head, whether the head is read while decoding or afterwards.
func TestHeadOfUnexpectedShape(t *testing.T) {
	body := []byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"auditID":"a1","stage":"ResponseComplete","verb":"update",` +
		`"objectRef":{"resource":"configmaps","namespace":"team-a","name":"web","apiVersion":"v1"},"responseStatus":{"code":200},` +
		`"responseObject":{"kind":"ConfigMap","metadata":{"name":"web","labels":{"n":5}},"data":{"a":"b"}}}]}`)
	decoded, err := decodeEvents(body)
	if err != nil || len(decoded) != 1 {
		t.Fatalf("decodeEvents: %d events, %v", len(decoded), err)
	}
	if decoded[0].head != nil {
		t.Errorf("a head with a number as label value was read: %+v", decoded[0].head)
	}
	if string(decoded[0].ResponseObject.Raw) != `{"kind":"ConfigMap","metadata":{"name":"web","labels":{"n":5}},"data":{"a":"b"}}` {
		t.Errorf("response object %s", decoded[0].ResponseObject.Raw)
	}
	inline, inlineReason := eventChanges(&decoded[0].Event, decoded[0].head, teamAMatcher, nil)
	again, reason := EventChanges(&decoded[0].Event, teamAMatcher)
	if reason != inlineReason || !reflect.DeepEqual(inline, again) || len(again) != 1 || again[0].Body != nil {
		t.Errorf("mapped %q %+v, read again %q %+v; want one change without body", inlineReason, inline, reason, again)
	}
	// A syntax error inside the object is still an error of the batch.
	if _, err := decodeEvents(bytes.Replace(body, []byte(`"n":5`), []byte(`"n":5,`), 1)); err == nil {
		t.Error("a malformed response object was accepted")
	}
}
