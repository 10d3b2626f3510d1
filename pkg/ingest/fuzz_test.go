package ingest

import (
	"os"
	"path/filepath"
	"testing"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
)

// FuzzDecodeEventList feeds arbitrary bodies to the decoder and, when they decode, through the filter
// and mapping: nothing a client sends may panic the webhook, and whatever decodes is an EventList.
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
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := DecodeEventList(data)
		if err != nil {
			if list != nil {
				t.Fatal("error with a non-nil list")
			}
			return
		}
		if list.Kind != "EventList" || list.APIVersion != auditv1.SchemeGroupVersion.String() {
			t.Fatalf("decoded kind %q apiVersion %q", list.Kind, list.APIVersion)
		}
		for i := range list.Items {
			cs, reason := EventChanges(&list.Items[i], teamAMatcher)
			if (reason == ReasonAccepted) != (len(cs) > 0) {
				t.Fatalf("reason %q with %d changes", reason, len(cs))
			}
			for _, c := range cs {
				if c.ChangeID == "" || c.Object.Resource == "" {
					t.Fatalf("change without ID or resource: %+v", c)
				}
			}
		}
	})
}
