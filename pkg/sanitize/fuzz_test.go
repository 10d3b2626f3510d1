package sanitize

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

var hashes = regexp.MustCompile(`hmac-sha256:[0-9a-f]{8}:[0-9a-f]{64}`)

// FuzzSanitize feeds arbitrary JSON (the body of an audit event is outside input) and an arbitrary
// secret value: Sanitize must never panic, and once the object is made a Secret carrying the value in
// data and stringData, neither the value nor its base64 may appear in the output.
func FuzzSanitize(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}`), "hunter2-password")
	f.Add([]byte(`{"metadata":{"annotations":null,"labels":"x"},"data":[1,2]}`), "s3cr3t-token")
	f.Add([]byte(`[]`), "")
	f.Fuzz(func(t *testing.T, doc []byte, secret string) {
		_, _ = Sanitize(doc, Options{Key: testKey})
		_, _ = Sanitize(doc, Options{Key: testKey, Resource: "secrets", SensitiveResources: []string{"configmaps"}})
		_, _, _ = Redact(doc, Options{Key: testKey, SensitivePaths: []string{"*:spec.*", "*:a.*.b"}})

		var obj map[string]interface{}
		if json.Unmarshal(doc, &obj) != nil || obj == nil {
			obj = map[string]interface{}{}
		}
		obj["apiVersion"], obj["kind"] = "v1", "Secret"
		// The document's own fields (its name, labels, ...) may contain the value by chance: only
		// check values that the output of the same object without the secret does not contain.
		obj["data"] = map[string]interface{}{"k": "cGxhY2Vob2xkZXI="}
		obj["stringData"] = map[string]interface{}{"s": "placeholder"}
		base, err := Sanitize(obj, Options{Key: testKey})
		if err != nil {
			t.Fatalf("sanitizing a secret: %v", err)
		}
		baseRaw, _ := json.Marshal(obj)
		baseRed, _, err := Redact(baseRaw, Options{Key: testKey})
		if err != nil {
			t.Fatalf("redacting a secret: %v", err)
		}
		base = append(base, baseRed...)
		enc := base64.StdEncoding.EncodeToString([]byte(secret))
		obj["data"] = map[string]interface{}{"k": enc}
		obj["stringData"] = map[string]interface{}{"s": secret}
		out, err := Sanitize(obj, Options{Key: testKey})
		if err != nil {
			t.Fatalf("sanitizing a secret: %v", err)
		}
		raw, _ := json.Marshal(obj)
		red, _, err := Redact(raw, Options{Key: testKey})
		if err != nil {
			t.Fatalf("redacting a secret: %v", err)
		}
		out = append(out, red...)
		// Hashes are what Sanitize writes instead of values: a short value may occur inside one by chance.
		baseText := hashes.ReplaceAllString(string(base), "#")
		outText := hashes.ReplaceAllString(string(out), "#")
		for _, plain := range []string{secret, enc} {
			if len(plain) < 8 || strings.Contains(baseText, plain) {
				continue
			}
			if strings.Contains(outText, plain) {
				t.Fatalf("secret value %q appears in output:\n%s", plain, out)
			}
		}
	})
}
