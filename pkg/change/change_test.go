package change

import (
	"bytes"
	"encoding/json"
	"testing"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
)

func TestEncodeMatchesMarshal(t *testing.T) {
	base := Change{
		Change:      historyv1alpha1.Change{Verb: historyv1alpha1.VerbCreate, ChangeID: "id", Object: historyv1alpha1.ChangedObject{Version: "v1", Resource: "configmaps", Name: "web"}},
		Destination: DestinationRef{Namespace: "a", Name: "main"},
	}
	for _, body := range []string{"", `{"kind":"ConfigMap","data":{"a":"b"}}`, `{"spaced": [1, 2,  3]}`} {
		c := base
		if body != "" {
			c.Body = json.RawMessage(body)
		}
		got, err := Encode(&c)
		if err != nil {
			t.Fatal(err)
		}
		var back Change
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("Encode output does not decode: %v: %s", err, got)
		}
		want, _ := json.Marshal(&c)
		var wantBack Change
		_ = json.Unmarshal(want, &wantBack)
		if back.ChangeID != wantBack.ChangeID || back.Destination != wantBack.Destination || !bytes.Equal(compact(back.Body), compact(wantBack.Body)) {
			t.Errorf("body %q: Encode round-trips to %+v, Marshal to %+v", body, back, wantBack)
		}
	}
}

func compact(b []byte) []byte {
	var out bytes.Buffer
	_ = json.Compact(&out, b)
	return out.Bytes()
}
