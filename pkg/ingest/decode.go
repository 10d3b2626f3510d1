package ingest

import (
	"errors"
	"fmt"

	jsoniter "github.com/json-iterator/go"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
)

// fastJSON decodes case-sensitively, like kube-apiserver's own decoding ("Kind" is not "kind"), at about
// twice the speed of encoding/json on 400-event batches: decoding is the largest cost of a batch
// (docs/benchmarks.md). It is also used for the response-object heads of the events.
var fastJSON = jsoniter.Config{CaseSensitive: true, ValidateJsonRawMessage: true}.Froze()

// DecodeEventList decodes an audit.k8s.io/v1 EventList as kube-apiserver's audit webhook sends it. It
// never panics; every error is meant for the sender (a 400 body).
func DecodeEventList(data []byte) (*auditv1.EventList, error) {
	if len(data) == 0 {
		return nil, errors.New("empty body: expected an audit.k8s.io/v1 EventList")
	}
	list := &auditv1.EventList{}
	if err := fastJSON.Unmarshal(data, list); err != nil {
		return nil, fmt.Errorf("malformed audit EventList JSON: %w", err)
	}
	gv := auditv1.SchemeGroupVersion.String()
	if list.APIVersion != gv || list.Kind != "EventList" {
		return nil, fmt.Errorf("expected kind EventList of apiVersion %s, got kind %q of apiVersion %q", gv, list.Kind, list.APIVersion)
	}
	for i := range list.Items {
		ev := &list.Items[i]
		// kube-apiserver does not set TypeMeta on the items of a list; when present it must agree.
		if (ev.APIVersion != "" && ev.APIVersion != gv) || (ev.Kind != "" && ev.Kind != "Event") {
			return nil, fmt.Errorf("item %d: expected kind Event of apiVersion %s, got kind %q of apiVersion %q", i, gv, ev.Kind, ev.APIVersion)
		}
	}
	return list, nil
}
