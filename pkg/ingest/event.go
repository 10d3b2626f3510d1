package ingest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
)

// Reasons an event is dropped, the "reason" label of kubehistory_ingest_events_total.
const (
	ReasonStage             = "stage"              // not ResponseComplete: the request is not finished
	ReasonVerb              = "verb"               // a read (get, list, watch, ...)
	ReasonNoObject          = "no-object"          // no objectRef: a non-resource request
	ReasonOwnGroup          = "own-group"          // history.kubehistory.io: kubehistory's own reads
	ReasonDryRun            = "dry-run"            // ?dryRun=All persisted nothing
	ReasonFailed            = "failed"             // response code outside 2xx
	ReasonNoStatus          = "no-status"          // no response code and nothing showing success
	ReasonStatusSubresource = "status-subresource" // a status-only write
	ReasonSubresource       = "subresource"        // a subresource call that changes no object (exec, token, ...)
	ReasonUnnamed           = "unnamed"            // the object's name is in neither the objectRef nor a body
	ReasonNothingDeleted    = "nothing-deleted"    // a deletecollection whose response lists no item
	ReasonNoRule            = "no-rule"            // no WatchRule or ClusterWatchRule tracks the object
	ReasonNoOp              = "no-op"              // a write that persisted nothing (resourceVersion unchanged, noop.go)
)

// ReasonAccepted is the reason label of accepted events.
const ReasonAccepted = ""

// OwnGroup is kubehistory's aggregated API group; its requests are never history.
const OwnGroup = "history.kubehistory.io"

// truncatedAnnotation is set by kube-apiserver's truncating audit backend on events it stripped of their
// request and response objects.
const truncatedAnnotation = "audit.k8s.io/truncated"

var mutatingVerbs = map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "deletecollection": true}

// subresourceCreates are the subresources whose "create" changes the parent object (binding sets a pod's
// node, eviction marks it for deletion); other creates on subresources (exec, attach, portforward,
// serviceaccounts/token, ...) change nothing.
var subresourceCreates = map[string]bool{"binding": true, "eviction": true}

// objectHead is the part of an object the mapping reads; parsing only these fields keeps a 400-event
// batch cheap.
type objectHead struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	// Status is a string in a metav1.Status and an object in most other kinds.
	Status   json.RawMessage `json:"status"`
	Metadata struct {
		Name                       string            `json:"name"`
		Namespace                  string            `json:"namespace"`
		UID                        string            `json:"uid"`
		ResourceVersion            string            `json:"resourceVersion"`
		Labels                     map[string]string `json:"labels"`
		DeletionTimestamp          *string           `json:"deletionTimestamp"`
		DeletionGracePeriodSeconds *int64            `json:"deletionGracePeriodSeconds"`
		Finalizers                 []string          `json:"finalizers"`
	} `json:"metadata"`
	Items []json.RawMessage `json:"items"`
}

// parseHead reads the head of an object; ok is false if raw is not a JSON object of the expected field
// types. Strings and items point into raw.
func parseHead(raw []byte) (*objectHead, bool) {
	if len(raw) == 0 {
		return nil, false
	}
	s := &scanner{data: raw}
	if s.next() != '{' {
		return nil, false
	}
	h := readHead(s)
	s.end()
	if s.err != nil {
		return nil, false
	}
	return h, true
}

// readHead reads the head of the object at the scanner's position, skipping everything else (data,
// spec, managedFields, ...).
func readHead(s *scanner) *objectHead {
	h := &objectHead{}
	s.object(func(field string) bool {
		switch field {
		case "kind":
			h.Kind = s.stringValue()
		case "apiVersion":
			h.APIVersion = s.stringValue()
		case "status":
			// Only a Status's status (a string) is kept; an object's status is skipped.
			h.Status = nil
			if s.next() == '"' {
				h.Status = s.raw()
			} else {
				s.skip()
			}
		case "metadata":
			readHeadMetadata(s, h)
		case "items":
			h.Items = nil
			if s.null() {
				return true
			}
			h.Items = []json.RawMessage{}
			s.array(func() bool {
				h.Items = append(h.Items, s.raw())
				return true
			})
		default:
			s.skip()
		}
		return true
	})
	return h
}

func readHeadMetadata(s *scanner, h *objectHead) {
	md := &h.Metadata
	s.object(func(field string) bool {
		switch field {
		case "name":
			md.Name = s.stringValue()
		case "namespace":
			md.Namespace = s.stringValue()
		case "uid":
			md.UID = s.stringValue()
		case "resourceVersion":
			md.ResourceVersion = s.stringValue()
		case "labels":
			if s.null() {
				md.Labels = nil
				return true
			}
			if md.Labels == nil {
				md.Labels = map[string]string{}
			}
			s.object(func(key string) bool {
				md.Labels[key] = s.stringValue()
				return true
			})
		case "deletionTimestamp":
			md.DeletionTimestamp = nil
			if !s.null() {
				ts := s.stringValue()
				md.DeletionTimestamp = &ts
			}
		case "deletionGracePeriodSeconds":
			md.DeletionGracePeriodSeconds = nil
			if !s.null() {
				n, err := strconv.ParseInt(string(s.number()), 10, 64)
				if err != nil {
					s.fail("deletionGracePeriodSeconds: expected an integer")
					return false
				}
				md.DeletionGracePeriodSeconds = &n
			}
		case "finalizers":
			md.Finalizers = s.strings()
		default:
			s.skip()
		}
		return true
	})
}

func (h *objectHead) isStatus() bool { return h != nil && h.Kind == "Status" }

// EventChanges turns one audit event into the changes to publish, or returns why it is dropped.
//
// Decisions beyond ARCHITECTURE.md:
//   - An event with no response code (responseStatus absent or code 0, which kube-apiserver does not
//     produce for a completed request) counts as successful only if its response body is an object, not a
//     failure Status: a body with a resourceVersion is proof the write was persisted.
//   - Writes through subresources are recorded for the parent, without body (the response is a Scale, a
//     Status, ...): the writer fetches the parent's state (NoBody marker). create on a subresource counts
//     only for binding and eviction, and is recorded as an update.
//   - A delete whose response still carries finalizers or a grace period only marked the object: update.
//     An update or patch that removed the last finalizer of an object marked for deletion (deletion grace
//     period 0) removed it: delete.
//   - A create whose name was generated takes it from the response; without a body it is dropped as
//     unnamed, and the reconciler will find the object as a gap.
//   - A patch or update answered 201 created the object (server-side apply, create-on-update): create.
//     The request's own verb stays visible in the request URI (fieldManager, force).
//   - A Namespace is cluster-scoped: kube-apiserver puts its name in objectRef.namespace too, which is
//     dropped.
//   - A delete or deletecollection whose DeleteOptions (the request object) ask for a dry run is one,
//     as is any request with dryRun in its URI.
//   - A write answered with the resourceVersion its request named (objectRef.resourceVersion)
//     persisted nothing: no-op. The Server also remembers the versions it published (noop.go), which
//     EventChanges, seeing one event alone, does not.
func EventChanges(ev *auditv1.Event, m RuleMatcher) ([]change.Change, string) {
	var respRaw []byte
	if ev.ResponseObject != nil {
		respRaw = ev.ResponseObject.Raw
	}
	head, _ := parseHead(respRaw)
	return eventChanges(ev, head, m, nil)
}

// eventChanges is EventChanges with the head of the response object already read (nil if there is
// none of the expected shape), as decodeEvents reads it, and the versions ingest published so far
// (nil: none known).
func eventChanges(ev *auditv1.Event, head *objectHead, m RuleMatcher, last *lastVersions) ([]change.Change, string) {
	if ev.Stage != auditv1.StageResponseComplete {
		return nil, ReasonStage
	}
	if !mutatingVerbs[ev.Verb] {
		return nil, ReasonVerb
	}
	ref := ev.ObjectRef
	if ref == nil || ref.Resource == "" {
		return nil, ReasonNoObject
	}
	if ref.APIGroup == OwnGroup {
		return nil, ReasonOwnGroup
	}
	if isDryRun(ev.RequestURI) || ((ev.Verb == "delete" || ev.Verb == "deletecollection") && deleteDryRun(ev.RequestObject)) {
		return nil, ReasonDryRun
	}

	var respRaw []byte
	if ev.ResponseObject != nil {
		respRaw = ev.ResponseObject.Raw
	}
	hasHead := head != nil

	if ev.ResponseStatus == nil || ev.ResponseStatus.Code == 0 {
		if !hasHead || (head.isStatus() && string(head.Status) != `"Success"`) {
			return nil, ReasonNoStatus
		}
	} else if c := ev.ResponseStatus.Code; c < 200 || c >= 300 {
		return nil, ReasonFailed
	}

	verb := change.Verb(ev.Verb)
	sub := ref.Subresource
	if sub == "" && (ev.Verb == "patch" || ev.Verb == "update") && ev.ResponseStatus != nil && ev.ResponseStatus.Code == http.StatusCreated {
		verb = change.VerbCreate
	}
	if sub == "status" {
		return nil, ReasonStatusSubresource
	}
	if sub != "" {
		switch ev.Verb {
		case "update", "patch":
		case "create":
			if !subresourceCreates[sub] {
				return nil, ReasonSubresource
			}
			verb = change.VerbUpdate
		default:
			return nil, ReasonSubresource
		}
	}

	actor := actorOf(ev)
	truncated := ev.Annotations[truncatedAnnotation] == "true"

	// The objects the request changed, with what the event tells about each.
	type target struct {
		obj    change.Object
		verb   change.Verb
		head   *objectHead
		body   json.RawMessage
		sweep  bool
		labels bool
		// respRV is the object's resourceVersion in the response, "" if there is none.
		respRV string
	}
	var targets []target
	base := change.Object{
		Group: ref.APIGroup, Version: ref.APIVersion, Resource: ref.Resource,
		Namespace: ref.Namespace, Name: ref.Name, UID: string(ref.UID), ResourceVersion: ref.ResourceVersion,
	}
	if ref.APIGroup == "" && ref.Resource == "namespaces" {
		// kube-apiserver reads /api/v1/namespaces/{name} as namespace and name {name}.
		base.Namespace = ""
	}
	// The version the request started from, when it named one (an update's or a Scale's
	// metadata.resourceVersion; never on a patch or a delete).
	requestRV := ref.ResourceVersion

	switch {
	case ev.Verb == "deletecollection" && hasHead && !head.isStatus() && head.Items != nil:
		if len(head.Items) == 0 {
			return nil, ReasonNothingDeleted
		}
		for _, item := range head.Items {
			ih, ok := parseHead(item)
			if !ok || ih.Metadata.Name == "" {
				continue
			}
			t := target{obj: base, verb: change.VerbDelete, head: ih, body: item, labels: true}
			if ih.Metadata.Namespace != "" {
				t.obj.Namespace = ih.Metadata.Namespace
			}
			t.obj.Name = ih.Metadata.Name
			targets = append(targets, t)
		}
		if len(targets) == 0 {
			return nil, ReasonUnnamed
		}
	case ev.Verb == "deletecollection":
		base.Name = ""
		targets = append(targets, target{obj: base, verb: change.VerbDelete, sweep: true})
	default:
		t := target{obj: base, verb: verb}
		if sub == "" && hasHead {
			t.head = head
			t.body = respRaw
			t.labels = !head.isStatus()
			if t.obj.Name == "" && !head.isStatus() {
				t.obj.Name = head.Metadata.Name
			}
		} else if sub != "" && hasHead && !head.isStatus() {
			// A Scale (or similar) carries the parent's uid and resourceVersion, not its labels or body.
			t.obj.UID, t.obj.ResourceVersion = firstNonEmpty(head.Metadata.UID, t.obj.UID), firstNonEmpty(head.Metadata.ResourceVersion, t.obj.ResourceVersion)
			t.respRV = head.Metadata.ResourceVersion
		}
		if t.obj.Name == "" {
			return nil, ReasonUnnamed
		}
		targets = append(targets, t)
	}

	var out []change.Change
	noop := false
	for _, t := range targets {
		if t.head != nil && !t.head.isStatus() {
			md := &t.head.Metadata
			t.obj.UID = firstNonEmpty(md.UID, t.obj.UID)
			t.obj.ResourceVersion = firstNonEmpty(md.ResourceVersion, t.obj.ResourceVersion)
			t.obj.Kind = t.head.Kind
			t.verb = refineVerb(t.verb, t.head)
			t.respRV = md.ResourceVersion
		}
		// Only an update (patch, update, a delete that marked the object) can be a no-op: a create
		// or a removal always persists.
		if !faultKeepNoOp && t.respRV != "" && (t.verb == change.VerbUpdate || t.verb == change.VerbPatch) &&
			(t.respRV == requestRV || last.unchanged(t.obj.UID, t.respRV, ev.RequestReceivedTimestamp.Time)) {
			noop = true
			continue
		}
		info := ObjectInfo{
			Group: t.obj.Group, Resource: t.obj.Resource, Namespace: t.obj.Namespace, Name: t.obj.Name,
			LabelsKnown: t.labels, Username: actor.Username,
		}
		if t.labels {
			info.Labels = t.head.Metadata.Labels
		}
		var markers []change.Marker
		if t.sweep {
			markers = append(markers, change.MarkerCollectionSweep)
		} else if len(t.body) == 0 && t.verb != change.VerbDelete {
			markers = append(markers, change.MarkerNoBody)
		}
		if truncated {
			markers = append(markers, change.MarkerTruncatedEvent)
		}
		dests := m.Match(info)
		if len(dests) > 0 {
			if t.verb == change.VerbDelete {
				last.forget(t.obj.UID)
			} else {
				last.observe(t.obj.UID, t.respRV, ev.StageTimestamp.Time)
			}
		}
		for _, dest := range dests {
			out = append(out, change.Change{
				Fields: change.Fields{
					Object:     t.obj,
					Verb:       t.verb,
					Actor:      actor,
					Source:     change.SourceAudit,
					AuditID:    string(ev.AuditID),
					ChangeID:   change.ID(dest, string(ev.AuditID), t.obj),
					RequestURI: ev.RequestURI,
					ChangeTime: ev.StageTimestamp,
					Markers:    markers,
				},
				Destination: dest,
				Body:        t.body,
				Sweep:       t.sweep,
			})
		}
	}
	if len(out) == 0 {
		if noop {
			return nil, ReasonNoOp
		}
		return nil, ReasonNoRule
	}
	return out, ReasonAccepted
}

// refineVerb tells a delete that only marked the object from one that removed it, and an update that
// completed a deletion (by removing the last finalizer) from an ordinary one.
func refineVerb(verb change.Verb, h *objectHead) change.Verb {
	md := &h.Metadata
	if md.DeletionTimestamp == nil {
		return verb
	}
	pending := len(md.Finalizers) > 0 || (md.DeletionGracePeriodSeconds != nil && *md.DeletionGracePeriodSeconds > 0)
	switch {
	case verb == change.VerbDelete && pending:
		return change.VerbUpdate
	case (verb == change.VerbUpdate || verb == change.VerbPatch) && !pending &&
		md.DeletionGracePeriodSeconds != nil:
		return change.VerbDelete
	}
	return verb
}

func actorOf(ev *auditv1.Event) change.Actor {
	a := change.Actor{UserAgent: ev.UserAgent, SourceIPs: ev.SourceIPs}
	who := ev.User
	if ev.ImpersonatedUser != nil {
		who = *ev.ImpersonatedUser
		a.Impersonator = &change.Impersonator{Username: ev.User.Username, UID: ev.User.UID, Groups: ev.User.Groups}
	}
	a.Username, a.UID, a.Groups = who.Username, who.UID, who.Groups
	return a
}

// isDryRun reports whether the request URI asks for a dry run; any dryRun value does, as kube-apiserver
// rejects all but "All".
func isDryRun(requestURI string) bool {
	i := strings.IndexByte(requestURI, '?')
	if i < 0 || !strings.Contains(requestURI[i:], "dryRun") {
		return false
	}
	q, err := url.ParseQuery(requestURI[i+1:])
	if err != nil {
		return true // unparsable but mentions dryRun: kube-apiserver would not have persisted it either
	}
	for _, v := range q["dryRun"] {
		if v != "" {
			return true
		}
	}
	return false
}

// deleteDryRun reports whether a delete's request object (DeleteOptions) asks for a dry run: kubectl
// delete --dry-run=server sends it in the body, not in the URI. Without a request object (Metadata
// audit level) a dry-run delete cannot be told from a delete.
func deleteDryRun(obj *runtime.Unknown) bool {
	if obj == nil || len(obj.Raw) == 0 {
		return false
	}
	s := &scanner{data: obj.Raw}
	if s.next() != '{' {
		return false
	}
	var dryRun []string
	s.object(func(field string) bool {
		if field == "dryRun" {
			dryRun = s.strings()
		} else {
			s.skip()
		}
		return true
	})
	if s.err != nil {
		return false // not DeleteOptions as kube-apiserver writes them: the delete is kept
	}
	for _, v := range dryRun {
		if v != "" {
			return true
		}
	}
	return false
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
