package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"unicode/utf8"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	kjson "sigs.k8s.io/json"
)

// referenceJSON decodes into auditv1.EventList by reflection, case-sensitively, with the decoder
// kube-apiserver uses (sigs.k8s.io/json): the reference DecodeEventList is held to.
func referenceJSON(data []byte, v any) error {
	return kjson.UnmarshalCaseSensitivePreserveInts(data, v)
}

// FuzzDecodeEventList feeds arbitrary bodies to the decoder and, when they decode, through the filter
// and mapping: nothing a client sends may panic the webhook, and whatever decodes is an EventList. It
// also holds the hand-written decoder to the reference: a body that is valid JSON and decodes by
// reflection must decode, and map to the same changes for the same reasons.
func FuzzDecodeEventList(f *testing.F) {
	fixtures, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range fixtures {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add(iterBody(benchBody(), 0)[:4096])
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := DecodeEventList(data)
		if err == nil {
			if list.Kind != "EventList" || list.APIVersion != auditv1.SchemeGroupVersion.String() {
				t.Fatalf("decoded kind %q apiVersion %q", list.Kind, list.APIVersion)
			}
			// The webhook maps with the heads read while decoding: the same as reading them again.
			decoded, err := decodeEvents(data)
			if err != nil || len(decoded) != len(list.Items) {
				t.Fatalf("decodeEvents: %d events, %v; DecodeEventList: %d", len(decoded), err, len(list.Items))
			}
			for i := range list.Items {
				cs, reason := EventChanges(&list.Items[i], teamAMatcher)
				inline, inlineReason := eventChanges(&decoded[i].Event, decoded[i].head, teamAMatcher, nil)
				if inlineReason != reason || !reflect.DeepEqual(inline, cs) {
					t.Fatalf("item %d: with the head read while decoding %q %+v, read again %q %+v", i, inlineReason, inline, reason, cs)
				}
				if (reason == ReasonAccepted) != (len(cs) > 0) {
					t.Fatalf("reason %q with %d changes", reason, len(cs))
				}
				for _, c := range cs {
					if c.ChangeID == "" || c.Object.Resource == "" {
						t.Fatalf("change without ID or resource: %+v", c)
					}
					if len(c.Body) > 0 && !json.Valid(c.Body) {
						t.Fatalf("change body is not valid JSON: %q", c.Body)
					}
				}
			}
		} else if list != nil {
			t.Fatal("error with a non-nil list")
		}

		// The reference. Strings are compared only where both decoders must agree byte for byte: valid
		// UTF-8 without \u escapes (the reference keeps invalid bytes, this decoder replaces them as
		// encoding/json does).
		ref := &auditv1.EventList{}
		if !json.Valid(data) || referenceJSON(data, ref) != nil || !utf8.Valid(data) || bytes.Contains(data, []byte(`\u`)) {
			return
		}
		if ref.Kind != "EventList" || ref.APIVersion != auditv1.SchemeGroupVersion.String() {
			if err == nil {
				t.Fatalf("decoded, the reference has kind %q apiVersion %q", ref.Kind, ref.APIVersion)
			}
			return
		}
		for i := range ref.Items {
			if (ref.Items[i].Kind != "" && ref.Items[i].Kind != "Event") || (ref.Items[i].APIVersion != "" && ref.Items[i].APIVersion != auditv1.SchemeGroupVersion.String()) {
				return // both refuse: checked by TestDecodeEventList
			}
		}
		if err != nil {
			if errors.Is(err, errDuplicateItems) {
				return
			}
			t.Fatalf("refused what the reference decodes: %v", err)
		}
		if len(ref.Items) != len(list.Items) {
			t.Fatalf("%d items, the reference %d", len(list.Items), len(ref.Items))
		}
		for i := range ref.Items {
			want, wantReason := EventChanges(&ref.Items[i], teamAMatcher)
			got, gotReason := EventChanges(&list.Items[i], teamAMatcher)
			if gotReason != wantReason || !reflect.DeepEqual(got, want) {
				t.Fatalf("item %d: %q %+v, the reference %q %+v", i, gotReason, got, wantReason, want)
			}
		}
	})
}
