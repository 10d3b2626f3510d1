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
// request object of a delete or deletecollection (as raw JSON: its DeleteOptions may ask for a dry
// run), the response object, the request and stage timestamps and the annotations. Other request
// objects, user extras and the rest of the response status are skipped after being checked as
// well-formed JSON.
// Decoding a 400-event batch is the largest cost of the webhook, and this is several times faster
// than reflection into auditv1.Event (docs/benchmarks.md). FuzzDecodeEventList checks it against
// encoding/json. The strings and response objects of the events point into data, which must not change
// while the list is in use.
func DecodeEventList(data []byte) (*auditv1.EventList, error) {
	events, err := decodeEvents(data)
	if err != nil {
		return nil, err
	}
	list := &auditv1.EventList{
		TypeMeta: metav1.TypeMeta{Kind: "EventList", APIVersion: auditv1.SchemeGroupVersion.String()},
		Items:    make([]auditv1.Event, len(events)),
	}
	for i := range events {
		list.Items[i] = events[i].Event
	}
	return list, nil
}

// decodedEvent is an audit event with the head of its response object, read in the same pass over
// the body (nil when the response object is absent or not an object of the expected shape), so that
// mapping the event does not scan the object again.
type decodedEvent struct {
	auditv1.Event
	head *objectHead
}

var errDuplicateItems = errors.New("malformed audit EventList: more than one \"items\" field")

// decodeEvents decodes an EventList. Keys match case-sensitively, as in kube-apiserver's own decoding
// ("Kind" is not "kind").
func decodeEvents(data []byte) ([]decodedEvent, error) {
	if len(data) == 0 {
		return nil, errors.New("empty body: expected an audit.k8s.io/v1 EventList")
	}
	gv := auditv1.SchemeGroupVersion.String()
	s := &scanner{data: data}
	if s.next() != '{' {
		return nil, errors.New("malformed audit EventList JSON: the body is not a JSON object")
	}
	var kind, apiVersion string
	var events []decodedEvent
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
				// encoding/json would keep the last; two lists in one batch are refused instead.
				itemErr = errDuplicateItems
				return false
			}
			seenItems = true
			events, itemErr = readItems(s, gv)
		default:
			s.skip()
		}
		return itemErr == nil
	})
	if itemErr != nil {
		return nil, itemErr
	}
	s.end()
	if s.err != nil {
		return nil, fmt.Errorf("malformed audit EventList JSON: %w", s.err)
	}
	if apiVersion != gv || kind != "EventList" {
		return nil, fmt.Errorf("expected kind EventList of apiVersion %s, got kind %q of apiVersion %q", gv, kind, apiVersion)
	}
	return events, nil
}

// readItems reads the items array of an EventList.
//
// Decision: decoding stays on one goroutine. Splitting a batch at a guessed event boundary and decoding
// the halves on two cores was tried and measured slower in BenchmarkIngestVsRaw400: the second core is
// busy with TLS, HTTP/2 and garbage collection while a batch is decoded.
func readItems(s *scanner, gv string) ([]decodedEvent, error) {
	var events []decodedEvent
	var itemErr error
	s.array(func() bool {
		events = append(events, decodedEvent{})
		ev := &events[len(events)-1]
		readEvent(s, ev)
		if s.err != nil {
			return false
		}
		// kube-apiserver does not set TypeMeta on the items of a list; when present it must agree.
		if (ev.APIVersion != "" && ev.APIVersion != gv) || (ev.Kind != "" && ev.Kind != "Event") {
			itemErr = fmt.Errorf("item %d: expected kind Event of apiVersion %s, got kind %q of apiVersion %q", len(events)-1, gv, ev.Kind, ev.APIVersion)
			return false
		}
		return true
	})
	return events, itemErr
}

// readEvent fills the fields of ev that EventChanges reads (of the annotations, only
// audit.k8s.io/truncated). A JSON null leaves a field unset, as
// encoding/json does.
func readEvent(s *scanner, ev *decodedEvent) {
	if s.next() != '{' {
		if !s.null() {
			s.fail("expected an audit Event object")
		}
		return
	}
	// The request object is kept only for deletes, whose verb may come after it.
	var requestObject []byte
	defer func() {
		if requestObject != nil && (ev.Verb == "delete" || ev.Verb == "deletecollection") {
			ev.RequestObject = &runtime.Unknown{Raw: requestObject, ContentType: runtime.ContentTypeJSON}
		}
	}()
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
			readOptional(s, &ev.ImpersonatedUser, readUser)
		case "sourceIPs":
			ev.SourceIPs = s.strings()
		case "userAgent":
			ev.UserAgent = s.stringValue()
		case "objectRef":
			readOptional(s, &ev.ObjectRef, readObjectRef)
		case "responseStatus":
			readOptional(s, &ev.ResponseStatus, readStatus)
		case "requestObject":
			requestObject = nil
			if !s.null() {
				requestObject = s.raw()
			}
		case "responseObject":
			if s.null() {
				ev.ResponseObject, ev.head = nil, nil
				return true
			}
			// Checked by the scanner: it is spliced verbatim into the change message (change.Encode)
			// when it is an object with a head.
			raw, head := readResponseObject(s)
			ev.ResponseObject, ev.head = &runtime.Unknown{Raw: raw, ContentType: runtime.ContentTypeJSON}, head
		case "requestReceivedTimestamp":
			ev.RequestReceivedTimestamp = readMicroTime(s, field)
		case "stageTimestamp":
			ev.StageTimestamp = readMicroTime(s, field)
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

// readResponseObject reads a response object and, when it is an object of the expected field types,
// its head in the same pass. A head of other types is not an error of the batch (the event is mapped
// without it, see EventChanges): the object is then read again as plain JSON.
func readResponseObject(s *scanner) ([]byte, *objectHead) {
	if s.next() == '{' {
		from, depth := s.pos, s.depth
		if h := readHead(s); s.err == nil {
			return s.data[from:s.pos:s.pos], h
		}
		s.err, s.pos, s.depth = nil, from, depth
	}
	return s.raw(), nil
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
func readMicroTime(s *scanner, field string) metav1.MicroTime {
	if s.null() {
		return metav1.MicroTime{}
	}
	v := s.stringValue()
	if s.err != nil {
		return metav1.MicroTime{}
	}
	t, err := time.Parse(metav1.RFC3339Micro, v)
	if err != nil {
		s.fail("%s: %v", field, err)
		return metav1.MicroTime{}
	}
	return metav1.NewMicroTime(t.Local())
}

// readOptional reads an optional object field into *p: null clears it, anything else is read into *p,
// allocated first if nil (as encoding/json fills a pointer field).
func readOptional[T any](s *scanner, p **T, read func(*scanner, *T)) {
	if s.null() {
		*p = nil
		return
	}
	if *p == nil {
		*p = new(T)
	}
	read(s, *p)
}
