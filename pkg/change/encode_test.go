package change

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fill sets every settable field of v that is zero to a value derived from s, recursively: a field added
// to Change later is thus covered by TestEncodeMatchesMarshal without anyone remembering to.
func fill(v reflect.Value, s string) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 { // json.RawMessage
			// Compact and without &, <, >, which json.Marshal would escape in a body Encode copies as it is.
			v.SetBytes([]byte(`{"kind":"ConfigMap","data":{"a":"b"}}`))
			return
		}
		sl := reflect.MakeSlice(v.Type(), 2, 2)
		fill(sl.Index(0), s+"-0")
		fill(sl.Index(1), s+"-1")
		v.Set(sl)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), s)
		v.Set(p)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(metav1.MicroTime{}) {
			v.Set(reflect.ValueOf(metav1.NewMicroTime(time.Date(2026, 11, 26, 16, 4, 5, 123456789, time.FixedZone("x", 3600)))))
			return
		}
		if v.Type() == reflect.TypeOf(metav1.Time{}) {
			v.Set(reflect.ValueOf(metav1.NewTime(time.Date(2026, 11, 26, 16, 4, 5, 0, time.UTC))))
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), s+"."+v.Type().Field(i).Name)
			}
		}
	}
}

func TestEncodeMatchesMarshal(t *testing.T) {
	full := Change{}
	fill(reflect.ValueOf(&full).Elem(), "x")
	ingestShaped := full
	ingestShaped.Git, ingestShaped.Diff, ingestShaped.DiffTruncated, ingestShaped.OrphanCheck = GitLink{}, "", false, nil

	minimal := Change{
		Fields:      Fields{Verb: VerbCreate, ChangeID: "id", Object: Object{Version: "v1", Resource: "configmaps", Name: "web"}},
		Destination: DestinationRef{Namespace: "a", Name: "main"},
	}
	odd := ingestShaped
	odd.Actor.Username = "système:<admin>&\"quoted\"\\\u2028\x01\xff"
	odd.Actor.Groups = []string{}
	odd.Actor.Impersonator.UID = ""
	odd.Actor.Impersonator.Groups = nil
	odd.Object.Name = "tab\there"
	odd.ChangeTime = metav1.MicroTime{}
	odd.Markers = nil
	noBody := ingestShaped
	noBody.Body = nil
	noBody.Sweep = false

	for name, c := range map[string]Change{"full": full, "ingest-shaped": ingestShaped, "minimal": minimal, "odd strings": odd, "no body": noBody} {
		t.Run(name, func(t *testing.T) {
			got, want := encodings(t, &c)
			if name == "full" {
				// The slow path splices the body last; compare as values.
				var g, w any
				if err := json.Unmarshal(got, &g); err != nil {
					t.Fatalf("Encode output does not decode: %v: %s", err, got)
				}
				_ = json.Unmarshal(want, &w)
				if !reflect.DeepEqual(g, w) {
					t.Errorf("Encode:\n%s\njson.Marshal:\n%s", got, want)
				}
				return
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Encode:\n%s\njson.Marshal:\n%s", got, want)
			}
		})
	}
	if !fastEncodable(&ingestShaped) || fastEncodable(&full) {
		t.Error("fastEncodable does not tell the ingest-shaped change from the full one")
	}
}

// encodings returns c as Encode writes it and as json.Marshal does, in the current version.
func encodings(t *testing.T, c *Change) (got, want []byte) {
	t.Helper()
	got, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	v := *c
	v.V = Version
	if want, err = json.Marshal(&v); err != nil {
		t.Fatal(err)
	}
	return got, want
}

// FuzzEncode holds Encode's fast path to json.Marshal's output for arbitrary strings.
func FuzzEncode(f *testing.F) {
	f.Add("alice", "web", "/api/v1/namespaces/a/configmaps/web?fieldManager=kubectl", "kubectl/v1.36", int64(1764172800123456))
	f.Add("<&>\"\\", "\x00\x7f\u2028", "\xff\xfe", "ü", int64(0))
	f.Fuzz(func(t *testing.T, user, name, uri, agent string, micros int64) {
		c := Change{
			Fields: Fields{
				Object:     Object{Version: "v1", Resource: "configmaps", Namespace: agent, Name: name, UID: user},
				Verb:       Verb(name),
				Actor:      Actor{Username: user, Groups: []string{agent, uri}, Impersonator: &Impersonator{Username: name}, UserAgent: agent, SourceIPs: []string{user}},
				Source:     SourceAudit,
				AuditID:    uri,
				ChangeID:   name,
				RequestURI: uri,
				ChangeTime: metav1.NewMicroTime(time.UnixMicro(micros % (1 << 50))),
				Markers:    []Marker{Marker(agent)},
			},
			Destination: DestinationRef{Namespace: user, Name: agent},
			Body:        json.RawMessage(`{"a":1}`),
		}
		got, want := encodings(t, &c)
		if !bytes.Equal(got, want) {
			t.Errorf("Encode:\n%s\njson.Marshal:\n%s", got, want)
		}
	})
}
