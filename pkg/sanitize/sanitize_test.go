package sanitize

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kubehistory/kubehistory/pkg/installkey"
)

var testKey = installkey.ForTest("sanitize")

func sha(s string) string { return testKey.Fingerprint([]byte(s)) }

func TestSanitize(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name    string
		in      interface{}
		opts    Options
		want    string
		wantErr bool
	}{
		{
			name: "configmap loses server-set noise",
			in: `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"web","namespace":"team-a",
				"uid":"u1","resourceVersion":"42","generation":3,"creationTimestamp":"2024-01-01T00:00:00Z",
				"selfLink":"/api/v1/x","managedFields":[{"manager":"kubectl"}],
				"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"},"labels":{}},
				"data":{"b":"2","a":"1"},"status":{"x":1}}`,
			want: "apiVersion: v1\ndata:\n  a: \"1\"\n  b: \"2\"\nkind: ConfigMap\nmetadata:\n  name: web\n  namespace: team-a\n",
		},
		{
			name: "status kept on request, labels kept",
			in: map[string]interface{}{"apiVersion": "apps/v1", "kind": "Deployment",
				"metadata": map[string]interface{}{"name": "d", "labels": map[string]interface{}{"app": "d"}, "deletionGracePeriodSeconds": 30},
				"status":   map[string]interface{}{"replicas": 2}},
			opts: Options{Key: testKey, KeepStatus: true},
			want: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  labels:\n    app: d\n  name: d\nstatus:\n  replicas: 2\n",
		},
		{
			name: "secret data and stringData hashed",
			in: `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"team-a"},
				"data":{"password":"` + b64("hunter2") + `"},"stringData":{"token":"s3cr3t"},"type":"Opaque"}`,
			want: "apiVersion: v1\ndata:\n  password: " + sha("hunter2") + "\nkind: Secret\nmetadata:\n  name: db\n  namespace: team-a\nstringData:\n  token: " + sha("s3cr3t") + "\ntype: Opaque\n",
		},
		{
			name: "secret recognised by resource",
			in:   `{"apiVersion":"v1","kind":"Whatever","metadata":{"name":"db"},"data":{"k":"` + b64("v") + `"}}`,
			opts: Options{Key: testKey, Resource: "secrets"},
			want: "apiVersion: v1\ndata:\n  k: " + sha("v") + "\nkind: Whatever\nmetadata:\n  name: db\n",
		},
		{
			name: "secret-like kind of another group is not a secret",
			in:   `{"apiVersion":"example.com/v1","kind":"Secret","metadata":{"name":"x"},"data":{"k":"v"}}`,
			want: "apiVersion: example.com/v1\ndata:\n  k: v\nkind: Secret\nmetadata:\n  name: x\n",
		},
		{
			name: "configured sensitive resource hashed as plain text",
			in:   `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"v"},"binaryData":{"b":"` + b64("bin") + `"}}`,
			opts: Options{Key: testKey, Resource: "configmaps", SensitiveResources: []string{"configmaps"}},
			want: "apiVersion: v1\nbinaryData:\n  b: " + sha("bin") + "\ndata:\n  k: " + sha("v") + "\nkind: ConfigMap\nmetadata:\n  name: c\n",
		},
		{
			name: "sensitive custom resource by kind, nested value hashed",
			in:   `{"apiVersion":"vault.example.com/v1","kind":"Credential","metadata":{"name":"c"},"data":{"k":{"nested":"v"}}}`,
			opts: Options{Key: testKey, SensitiveResources: []string{"credentials.vault.example.com"}},
			want: "apiVersion: vault.example.com/v1\ndata:\n  k: " + sha(`{"nested":"v"}`) + "\nkind: Credential\nmetadata:\n  name: c\n",
		},
		{
			name: "non-map data of a secret is hashed whole",
			in:   `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":"plain"}`,
			want: "apiVersion: v1\ndata: " + sha(`"plain"`) + "\nkind: Secret\nmetadata:\n  name: s\n",
		},
		{
			name: "invalid base64 hashed as is",
			in:   `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"k":"not base64!"}}`,
			want: "apiVersion: v1\ndata:\n  k: " + sha("not base64!") + "\nkind: Secret\nmetadata:\n  name: s\n",
		},
		{
			name: "large integers stay exact",
			in:   `{"apiVersion":"v1","kind":"X","metadata":{"name":"big"},"spec":{"big":9007199254740993}}`,
			want: "apiVersion: v1\nkind: X\nmetadata:\n  name: big\nspec:\n  big: 9007199254740993\n",
		},
		{
			name: "sensitive path of a custom resource, wildcard over a list",
			in:   `{"apiVersion":"db.example.com/v1","kind":"Database","metadata":{"name":"d"},"spec":{"password":"hunter2","size":3,"users":[{"name":"a","token":"t1"},{"name":"b","token":"t2"}]}}`,
			opts: Options{SensitivePaths: []string{"databases.db.example.com:spec.password", "databases.db.example.com:spec.users.*.token", "other.example.com:spec.size"}},
			want: "apiVersion: db.example.com/v1\nkind: Database\nmetadata:\n  name: d\nspec:\n  password: " + sha("hunter2") + "\n  size: 3\n  users:\n  - name: a\n    token: " + sha("t1") + "\n  - name: b\n    token: " + sha("t2") + "\n",
		},
		{
			name: "configured annotation stripped",
			in:   `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","annotations":{"copy.example.com/object":"{}","keep":"x"}}}`,
			opts: Options{StripAnnotations: []string{"copy.example.com/object"}},
			want: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  annotations:\n    keep: x\n  name: c\n",
		},
		{name: "array is an error", in: `[1,2]`, wantErr: true},
		{name: "scalar is an error", in: `"x"`, wantErr: true},
		{name: "garbage is an error", in: []byte(`{"a":`), wantErr: true},
		{name: "trailing data is an error", in: `{"a":1} {"b":2}`, wantErr: true},
		{name: "nil is an error", in: nil, wantErr: true},
		{name: "unsupported type is an error", in: 42, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if s, ok := in.(string); ok {
				in = []byte(s)
			}
			opts := tc.opts
			opts.Key = testKey
			got, err := Sanitize(in, opts)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want error, got %q", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			// The output must parse back and be stable when sanitized again (the reconciler compares).
			var back map[string]interface{}
			if err := yaml.Unmarshal(got, &back); err != nil {
				t.Fatalf("output does not parse: %v", err)
			}
			if _, ok := back["kind"]; !ok {
				t.Errorf("kind lost")
			}
		})
	}
}

func TestSanitizeDoesNotModifyInput(t *testing.T) {
	in := map[string]interface{}{"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]interface{}{"name": "s", "uid": "u"},
		"data":     map[string]interface{}{"k": "dg=="}}
	before, _ := json.Marshal(in)
	if _, err := Sanitize(in, Options{Key: testKey}); err != nil {
		t.Fatal(err)
	}
	after, _ := json.Marshal(in)
	if string(before) != string(after) {
		t.Fatalf("input modified: %s -> %s", before, after)
	}
}

func TestSanitizeIdempotent(t *testing.T) {
	in := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"web","resourceVersion":"1","annotations":{"a":"b"}},"data":{"x":"y"}}`
	once, err := Sanitize([]byte(in), Options{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(once)
	if err != nil {
		t.Fatal(err)
	}
	twice, err := Sanitize(j, Options{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if string(once) != string(twice) {
		t.Fatalf("not stable:\n%s\n%s", once, twice)
	}
	if strings.Contains(string(once), "resourceVersion") {
		t.Fatal("resourceVersion kept")
	}
}

// Found by FuzzSanitize: a key YAML cannot hold. The object is written as JSON (valid YAML) instead of
// being refused, and stays parseable.
func TestControlCharacterFallsBackToJSON(t *testing.T) {
	out, err := Sanitize([]byte("{\"apiVersion\":\"example.com/v1\",\"kind\":\"Thing\",\"metadata\":{\"name\":\"a\"},\"spec\":{\"\x7f\":\"v\"}}"), Options{Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]interface{}
	if err := json.Unmarshal(out, &back); err != nil || back["kind"] != "Thing" {
		t.Fatalf("output is not the object as JSON: %v\n%s", err, out)
	}
}

func TestSensitiveNeedsKey(t *testing.T) {
	_, err := Sanitize([]byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"data":{"k":"dg=="}}`), Options{})
	if err != ErrNoKey {
		t.Fatalf("a Secret sanitized without the key: err=%v", err)
	}
	// Nothing sensitive: no key needed.
	if _, err := Sanitize([]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}`), Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestFingerprintsAreKeyed(t *testing.T) {
	in := []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"stringData":{"k":"app-user"}}`)
	a, err := Sanitize(in, Options{Key: installkey.ForTest("a")})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Sanitize(in, Options{Key: installkey.ForTest("b")})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("app-user"))
	if strings.Contains(string(a), hex.EncodeToString(sum[:])) {
		t.Fatalf("unkeyed SHA-256 of the value in the output:\n%s", a)
	}
	if string(a) == string(b) {
		t.Fatal("two installation keys give the same fingerprint")
	}
	if !strings.Contains(string(a), "hmac-sha256:"+installkey.ForTest("a").ID()+":") {
		t.Fatalf("fingerprint does not name its key:\n%s", a)
	}
}

// Redact is what ingest and the reconciler publish: values fingerprinted, last-applied gone, metadata
// (resourceVersion, labels) kept; Sanitize of the redacted body with Redacted set gives the same YAML
// as Sanitize of the original.
func TestRedactThenSanitize(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("hunter2"))
	in := []byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","resourceVersion":"7","labels":{"tracked":"true"},
		"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"stringData\":{\"p\":\"hunter2\"}}"}},
		"data":{"p":"` + b64 + `"}}`)
	opts := Options{Key: testKey}
	red, sensitive, err := Redact(in, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !sensitive {
		t.Error("a Secret not reported as redacted")
	}
	for _, plain := range []string{"hunter2", b64} {
		if strings.Contains(string(red), plain) {
			t.Fatalf("%q survives Redact: %s", plain, red)
		}
	}
	var back struct {
		Metadata struct {
			ResourceVersion string            `json:"resourceVersion"`
			Labels          map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(red, &back); err != nil || back.Metadata.ResourceVersion != "7" || back.Metadata.Labels["tracked"] != "true" {
		t.Fatalf("metadata lost: %v %s", err, red)
	}
	direct, err := Sanitize(in, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Redacted = true
	via, err := Sanitize(red, opts)
	if err != nil {
		t.Fatal(err)
	}
	if string(direct) != string(via) {
		t.Fatalf("redacted then sanitized differs:\n%s\n%s", direct, via)
	}
	if _, _, err := Redact([]byte(`[1]`), Options{Key: testKey}); err == nil {
		t.Fatal("a non-object body redacted")
	}
}

func TestValidatePath(t *testing.T) {
	for _, ok := range []string{"*:spec.password", "databases.db.example.com:spec.users.*.token", "configmaps:data.k"} {
		if err := ValidatePath(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"spec.password", ":spec", "x:", "x:a..b", "*:metadata.name", "*:kind"} {
		if err := ValidatePath(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
