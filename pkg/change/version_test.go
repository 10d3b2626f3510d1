package change

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"
)

// The fixtures in testdata were written by main at dd32f05, before the storage format had a version
// (change.Encode for the changes, json.Marshal of a Record as the Git writer published it): they are
// version 1 without a "v". Every version this build reads has a test here; a new version adds its
// fixtures, written by the build that introduces it.

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withVersion is data written as version v: "v" first, as this package writes it.
func withVersion(data []byte, v string) []byte {
	return append([]byte(`{"v":`+v+`,`), data[1:]...)
}

func TestDecodeChangeVersion1(t *testing.T) {
	for _, tc := range []struct {
		name, fixture, version string
	}{
		{"unversioned audit change", "change-v1-main.json", ""},
		{"unversioned orphan check", "change-v1-orphancheck-main.json", ""},
		{"audit change v1", "change-v1-main.json", "1"},
		{"orphan check v1", "change-v1-orphancheck-main.json", "1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := readFixture(t, tc.fixture)
			if tc.version != "" {
				data = withVersion(data, tc.version)
			}
			var c Change
			if err := DecodeChange(data, &c); err != nil {
				t.Fatal(err)
			}
			if c.V != Version {
				t.Errorf("V = %d after decoding, want %d", c.V, Version)
			}
			if c.Destination != (DestinationRef{Namespace: "team-a", Name: "main"}) || !c.ChangeTime.Time.Equal(time.Date(2026, 11, 26, 16, 4, 5, 123456000, time.UTC)) {
				t.Errorf("decoded %+v", c)
			}
			// Written again, the change is what main wrote, with the version first.
			got, err := Encode(&c)
			if err != nil {
				t.Fatal(err)
			}
			if want := withVersion(readFixture(t, tc.fixture), "1"); !bytes.Equal(got, want) {
				t.Errorf("re-encoded:\n%s\nwant:\n%s", got, want)
			}
		})
	}
	var c Change
	if err := DecodeChange(readFixture(t, "change-v1-main.json"), &c); err != nil {
		t.Fatal(err)
	}
	if c.Object != (Object{Group: "apps", Version: "v1", Resource: "deployments", Kind: "Deployment", Namespace: "team-a", Name: "web", UID: "5b7f0c1e-7d1a-4d6e-9a57-0f3c2d9b1a11", ResourceVersion: "4711"}) ||
		c.Verb != VerbPatch || c.Source != SourceAudit || c.Actor.Impersonator == nil || c.Actor.Impersonator.Username != "admin" ||
		len(c.Markers) != 1 || c.Markers[0] != MarkerFetchedAtWriteTime || len(c.Body) == 0 || c.ChangeID != "0011d4d27dfe03c18db9500644d0ca55" {
		t.Errorf("decoded %+v", c)
	}
	if err := DecodeChange(readFixture(t, "change-v1-orphancheck-main.json"), &c); err != nil {
		t.Fatal(err)
	}
	if oc := c.OrphanCheck; oc == nil || oc.Pass != "pass-1" || len(oc.Expected) != 1 || oc.GraceSeconds != 60 {
		t.Errorf("decoded orphan check %+v", c.OrphanCheck)
	}
}

func TestDecodeRecordVersion1(t *testing.T) {
	for _, version := range []string{"", "1"} {
		t.Run("v="+version, func(t *testing.T) {
			data := readFixture(t, "record-v1-main.json")
			if version != "" {
				data = withVersion(data, version)
			}
			var r Record
			if err := DecodeRecord(data, &r); err != nil {
				t.Fatal(err)
			}
			if r.V != Version || r.Cluster || r.Git.Commit != "3f786850e387550fdab836ed7e6dc881de23001b" || r.Git.CommittedAt == nil ||
				r.Diff == "" || r.Actor.Username != "alice" || r.Object.Name != "web" {
				t.Errorf("decoded %+v", r)
			}
			got, err := EncodeRecord(&r)
			if err != nil {
				t.Fatal(err)
			}
			if want := withVersion(readFixture(t, "record-v1-main.json"), "1"); !bytes.Equal(got, want) {
				t.Errorf("re-encoded:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// A version this build does not know is refused as such, not as undecodable JSON, whether its fields
// fit the current types or not and wherever "v" is.
func TestDecodeUnknownVersion(t *testing.T) {
	for _, tc := range []struct {
		name string
		data string
	}{
		{"leading, reshaped", `{"v":2,"actor":"alice","object":["x"]}`},
		{"leading, same shape", `{"v":2,"verb":"create","changeID":"x"}`},
		{"not leading", `{"verb":"create","changeID":"x","v":3}`},
		{"not leading, a field reshaped", `{"object":{"name":"x"},"v":2,"verb":["create"],"changeID":"x"}`},
		{"space after the colon, a field reshaped", `{"v": 2,"verb":{"kind":"create"},"changeID":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Change
			if err := DecodeChange([]byte(tc.data), &c); !errors.Is(err, ErrUnknownVersion) {
				t.Errorf("DecodeChange: %v, want ErrUnknownVersion", err)
			}
			var r Record
			if err := DecodeRecord([]byte(tc.data), &r); !errors.Is(err, ErrUnknownVersion) {
				t.Errorf("DecodeRecord: %v, want ErrUnknownVersion", err)
			}
		})
	}
	// A message that does not decode and names no newer version stays a decode error (it is dropped as
	// undecodable, not left for a newer build forever).
	for _, data := range []string{`{"verb":["create"],"changeID":"x"}`, `{"v":1,"verb":["create"]}`, `{"v":"x","verb":["create"]}`, `not json`} {
		var c Change
		if err := DecodeChange([]byte(data), &c); err == nil || errors.Is(err, ErrUnknownVersion) {
			t.Errorf("DecodeChange(%s) = %v, want a decode error", data, err)
		}
		var r Record
		if err := DecodeRecord([]byte(data), &r); err == nil || errors.Is(err, ErrUnknownVersion) {
			t.Errorf("DecodeRecord(%s) = %v, want a decode error", data, err)
		}
	}
	r := Record{V: 2}
	if err := r.Upgrade(); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("Upgrade of version 2: %v", err)
	}
}

// Encode writes the version first, so that a reader finds it before it decodes the fields.
func TestEncodeWritesVersionFirst(t *testing.T) {
	fast := Change{Fields: Fields{Verb: VerbCreate, ChangeID: "id"}, Destination: DestinationRef{Namespace: "a", Name: "b"}}
	slow := fast
	slow.OrphanCheck = &OrphanCheck{Pass: "p", Chunks: 1}
	for _, c := range []Change{fast, slow} {
		b, err := Encode(&c)
		if err != nil {
			t.Fatal(err)
		}
		if leadingVersion(b) != Version {
			t.Errorf("Encode wrote %s", b)
		}
	}
	b, err := EncodeRecord(&Record{Fields: Fields{ChangeID: "id"}})
	if err != nil {
		t.Fatal(err)
	}
	if leadingVersion(b) != Version {
		t.Errorf("EncodeRecord wrote %s", b)
	}
}
