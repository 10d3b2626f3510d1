package ingest

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
)

// DecodeEventList decodes an audit.k8s.io/v1 EventList as kube-apiserver's audit webhook sends it. It
// never panics; every error is meant for the sender (a 400 body).
//
// It is a hand-written decoder (on a scanner of its own, jsonscan.go) that fills only the fields of each Event
// that the filter and the mapping read: the level, audit ID, stage, request URI, verb, user and
// impersonated user (name, uid, groups), source IPs, user agent, objectRef, the response code, the
// response object, the stage timestamp and the annotations. The request object, the request timestamp,
// user extras and the rest of the response status are skipped after being checked as well-formed JSON.
// Decoding a 400-event batch is the largest cost of the webhook, and this is several times faster
// than reflection into auditv1.Event (docs/benchmarks.md). FuzzDecodeEventList checks it against
// encoding/json. The strings and response objects of the events point into data, which must not change
// while the list is in use.
func DecodeEventList(data []byte) (*auditv1.EventList, error) {
	list := &auditv1.EventList{}
	kind, apiVersion, err := decodeEvents(data, func(chunk []auditv1.Event) { list.Items = append(list.Items, chunk...) })
	if err != nil {
		return nil, err
	}
	list.Kind, list.APIVersion = kind, apiVersion
	return list, nil
}

var errDuplicateItems = errors.New("malformed audit EventList: more than one \"items\" field")

// eventChunk is how many events decodeEvents hands over at a time.
const eventChunk = 32

// decodeEvents decodes an EventList and hands its events to emit in chunks, in order, as soon as each
// chunk is decoded, so that the caller can work on them while the rest is decoded. A chunk is never
// reused. An error may come after some chunks were emitted: the caller must discard them. Keys match
// case-sensitively, as in kube-apiserver's own decoding ("Kind" is not "kind").
func decodeEvents(data []byte, emit func([]auditv1.Event)) (kind, apiVersion string, err error) {
	if len(data) == 0 {
		return "", "", errors.New("empty body: expected an audit.k8s.io/v1 EventList")
	}
	gv := auditv1.SchemeGroupVersion.String()
	s := &scanner{data: data}
	if s.next() != '{' {
		return "", "", errors.New("malformed audit EventList JSON: the body is not a JSON object")
	}
	var itemErr error
	seenItems := false
	s.object(func(field string) bool {
		switch field {
		case "kind":
			kind = s.stringValue()
		case "apiVersion":
			apiVersion = s.stringValue()
		case "items":
			if seenItems {
				// encoding/json would keep the last; the first may already be handed over.
				itemErr = errDuplicateItems
				return false
			}
			seenItems = true
			itemErr = readItems(s, gv, emit)
		default:
			s.skip()
		}
		return itemErr == nil
	})
	if itemErr != nil {
		return "", "", itemErr
	}
	s.end()
	if s.err != nil {
		return "", "", fmt.Errorf("malformed audit EventList JSON: %w", s.err)
	}
	if apiVersion != gv || kind != "EventList" {
		return "", "", fmt.Errorf("expected kind EventList of apiVersion %s, got kind %q of apiVersion %q", gv, kind, apiVersion)
	}
	return kind, apiVersion, nil
}

// readItems reads the items array of an EventList and emits its events in chunks.
//
// Decision: decoding stays on one goroutine. Splitting a batch at a guessed event boundary and decoding
// the halves on two cores was tried and measured slower in BenchmarkIngestVsRaw400: the second core is
// busy with TLS, HTTP/2 and garbage collection while a batch is decoded.
func readItems(s *scanner, gv string, emit func([]auditv1.Event)) error {
	n := 0
	chunk := make([]auditv1.Event, 0, eventChunk)
	var itemErr error
	s.array(func() bool {
		chunk = append(chunk, auditv1.Event{})
		ev := &chunk[len(chunk)-1]
		readEvent(s, ev)
		if s.err != nil {
			return false
		}
		// kube-apiserver does not set TypeMeta on the items of a list; when present it must agree.
		if (ev.APIVersion != "" && ev.APIVersion != gv) || (ev.Kind != "" && ev.Kind != "Event") {
			itemErr = fmt.Errorf("item %d: expected kind Event of apiVersion %s, got kind %q of apiVersion %q", n, gv, ev.Kind, ev.APIVersion)
			return false
		}
		n++
		if len(chunk) == eventChunk {
			emit(chunk)
			chunk = make([]auditv1.Event, 0, eventChunk)
		}
		return true
	})
	if s.err == nil && itemErr == nil && len(chunk) > 0 {
		emit(chunk)
	}
	return itemErr
}

// readEvent fills the fields of ev that EventChanges reads (of the annotations, only
// audit.k8s.io/truncated). A JSON null leaves a field unset, as
// encoding/json does.
func readEvent(s *scanner, ev *auditv1.Event) {
	if s.next() != '{' {
		if !s.null() {
			s.fail("expected an audit Event object")
		}
		return
	}
	s.object(func(field string) bool {
		switch field {
		case "kind":
			ev.Kind = s.stringValue()
		case "apiVersion":
			ev.APIVersion = s.stringValue()
		case "level":
			ev.Level = auditv1.Level(s.stringValue())
		case "auditID":
			ev.AuditID = types.UID(s.stringValue())
		case "stage":
			ev.Stage = auditv1.Stage(s.stringValue())
		case "requestURI":
			ev.RequestURI = s.stringValue()
		case "verb":
			ev.Verb = s.stringValue()
		case "user":
			readUser(s, &ev.User)
		case "impersonatedUser":
			if s.null() {
				ev.ImpersonatedUser = nil
				return true
			}
			if ev.ImpersonatedUser == nil {
				ev.ImpersonatedUser = &authnv1.UserInfo{}
			}
			readUser(s, ev.ImpersonatedUser)
		case "sourceIPs":
			ev.SourceIPs = s.strings()
		case "userAgent":
			ev.UserAgent = s.stringValue()
		case "objectRef":
			if s.null() {
				ev.ObjectRef = nil
				return true
			}
			if ev.ObjectRef == nil {
				ev.ObjectRef = &auditv1.ObjectReference{}
			}
			readObjectRef(s, ev.ObjectRef)
		case "responseStatus":
			if s.null() {
				ev.ResponseStatus = nil
				return true
			}
			if ev.ResponseStatus == nil {
				ev.ResponseStatus = &metav1.Status{}
			}
			readStatus(s, ev.ResponseStatus)
		case "responseObject":
			if s.null() {
				ev.ResponseObject = nil
				return true
			}
			// Validated by the scanner: it is spliced verbatim into the change message (change.Encode)
			// when it is an object (parseHead).
			ev.ResponseObject = &runtime.Unknown{Raw: s.raw(), ContentType: runtime.ContentTypeJSON}
		case "stageTimestamp":
			ev.StageTimestamp = readMicroTime(s)
		case "annotations":
			// Only the annotation EventChanges reads is kept; the others (authorization decisions and
			// reasons, ...) are checked to be strings and skipped.
			if s.null() {
				ev.Annotations = nil
				return true
			}
			s.object(func(key string) bool {
				if key != truncatedAnnotation {
					s.skipStringValue()
					return true
				}
				if ev.Annotations == nil {
					ev.Annotations = map[string]string{}
				}
				ev.Annotations[key] = s.stringValue()
				return true
			})
		default:
			s.skip()
		}
		return true
	})
}

func readUser(s *scanner, u *authnv1.UserInfo) {
	s.object(func(field string) bool {
		switch field {
		case "username":
			u.Username = s.stringValue()
		case "uid":
			u.UID = s.stringValue()
		case "groups":
			u.Groups = s.strings()
		default:
			s.skip()
		}
		return true
	})
}

func readObjectRef(s *scanner, r *auditv1.ObjectReference) {
	s.object(func(field string) bool {
		switch field {
		case "resource":
			r.Resource = s.stringValue()
		case "namespace":
			r.Namespace = s.stringValue()
		case "name":
			r.Name = s.stringValue()
		case "uid":
			r.UID = types.UID(s.stringValue())
		case "apiGroup":
			r.APIGroup = s.stringValue()
		case "apiVersion":
			r.APIVersion = s.stringValue()
		case "resourceVersion":
			r.ResourceVersion = s.stringValue()
		case "subresource":
			r.Subresource = s.stringValue()
		default:
			s.skip()
		}
		return true
	})
}

func readStatus(s *scanner, st *metav1.Status) {
	s.object(func(field string) bool {
		switch field {
		case "code":
			if !s.null() {
				st.Code = readInt32(s, "responseStatus.code")
			}
		default:
			s.skip()
		}
		return true
	})
}

// readInt32 reads an integer as encoding/json does into an int32: no fraction, no exponent, in range.
func readInt32(s *scanner, what string) int32 {
	n, err := strconv.ParseInt(string(s.number()), 10, 32)
	if err != nil && s.err == nil {
		s.fail("%s: expected a 32-bit integer", what)
	}
	return int32(n)
}

// readMicroTime parses a metav1.MicroTime as its UnmarshalJSON does (RFC 3339 with microseconds, in
// local time), without going through encoding/json.
func readMicroTime(s *scanner) metav1.MicroTime {
	if s.null() {
		return metav1.MicroTime{}
	}
	v := s.stringValue()
	if s.err != nil {
		return metav1.MicroTime{}
	}
	t, err := time.Parse(metav1.RFC3339Micro, v)
	if err != nil {
		s.fail("stageTimestamp: %v", err)
		return metav1.MicroTime{}
	}
	return metav1.NewMicroTime(t.Local())
}
