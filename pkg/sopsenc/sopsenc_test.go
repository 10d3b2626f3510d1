package sopsenc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"sigs.k8s.io/yaml"

	"github.com/kubehistory/kubehistory/internal/testtools"
)

func secretObject(t *testing.T, password, token string) map[string]interface{} {
	t.Helper()
	doc := `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"team-a","labels":{"app":"db","data":"x"}},
		"type":"Opaque","data":{"password":"` + base64.StdEncoding.EncodeToString([]byte(password)) + `"},"stringData":{"token":"` + token + `","empty":""},
		"spec":{"n":3,"f":1.5,"b":true,"list":[{"k":"v"},"s",2],"none":null,"emptyMap":{},"emptyList":[]}}`
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var m map[string]interface{}
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

var testDataKey = bytes.Repeat([]byte{7}, 32)

func identity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// decrypt is an independent reader of what Encrypt wrote: the data key from the age stanza, each
// value under data/stringData with its path as additional data.
func decrypt(t *testing.T, file []byte, id *age.X25519Identity) map[string]interface{} {
	t.Helper()
	var doc map[string]interface{}
	if err := yaml.Unmarshal(file, &doc); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, file)
	}
	meta := doc["sops"].(map[string]interface{})
	enc := meta["age"].([]interface{})[0].(map[string]interface{})["enc"].(string)
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(enc)), id)
	if err != nil {
		t.Fatalf("age stanza: %v", err)
	}
	key, _ := io.ReadAll(r)
	out := map[string]interface{}{}
	for _, field := range []string{"data", "stringData"} {
		for k, v := range doc[field].(map[string]interface{}) {
			s := v.(string)
			if s == "" {
				out[field+"."+k] = ""
				continue
			}
			plain, err := decryptValue(s, key, field+":"+k+":")
			if err != nil {
				t.Fatalf("%s.%s: %v", field, k, err)
			}
			out[field+"."+k] = plain
		}
	}
	return out
}

func TestEncryptRoundTrip(t *testing.T) {
	id := identity(t)
	obj := secretObject(t, "hunter2-pass", "tok-123456")
	out, err := Encrypt(obj, Options{Recipients: []string{id.Recipient().String()}, DataKey: testDataKey, Now: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range []string{"hunter2-pass", base64.StdEncoding.EncodeToString([]byte("hunter2-pass")), "tok-123456"} {
		if bytes.Contains(out, []byte(plain)) {
			t.Fatalf("%q in the encrypted file:\n%s", plain, out)
		}
	}
	got := decrypt(t, out, id)
	if got["data.password"] != base64.StdEncoding.EncodeToString([]byte("hunter2-pass")) || got["stringData.token"] != "tok-123456" || got["stringData.empty"] != "" {
		t.Fatalf("decrypted %v", got)
	}
	if !bytes.Contains(out, []byte(`"name": "db"`)) {
		t.Fatalf("metadata not in clear:\n%s", out)
	}
}

// An unchanged object gives the same bytes (kept lastmodified and age stanzas); a changed value changes
// only that value's ciphertext, the MAC and lastmodified.
func TestEncryptIsStable(t *testing.T) {
	id := identity(t)
	o := Options{Recipients: []string{id.Recipient().String()}, DataKey: testDataKey, Now: time.Unix(1700000000, 0)}
	first, err := Encrypt(secretObject(t, "p1-value", "t1-value"), o)
	if err != nil {
		t.Fatal(err)
	}
	o.Previous, o.Now = first, time.Unix(1800000000, 0)
	again, err := Encrypt(secretObject(t, "p1-value", "t1-value"), o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again) {
		t.Fatalf("unchanged object, new bytes:\n%s\n%s", first, again)
	}
	changed, err := Encrypt(secretObject(t, "p2-value", "t1-value"), o)
	if err != nil {
		t.Fatal(err)
	}
	line := func(b []byte, key string) string {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, key) {
				return l
			}
		}
		return ""
	}
	if line(first, `"token":`) != line(changed, `"token":`) || line(first, `"password":`) == line(changed, `"password":`) {
		t.Fatalf("a change of password did not change (only) its ciphertext:\n%s\n%s", first, changed)
	}
	if line(changed, "lastmodified") == line(first, "lastmodified") {
		t.Fatal("lastmodified kept for a changed file")
	}
	// Another recipient list: new stanzas.
	o.Recipients = append(o.Recipients, identity(t).Recipient().String())
	two, err := Encrypt(secretObject(t, "p1-value", "t1-value"), o)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(two, first) || strings.Count(string(two), "recipient:") != 2 {
		t.Fatalf("recipients not followed:\n%s", two)
	}
}

func TestValidateRecipients(t *testing.T) {
	if err := ValidateRecipients(nil); err == nil {
		t.Error("no recipient accepted")
	}
	if err := ValidateRecipients([]string{"age1notakey"}); err == nil {
		t.Error("a malformed recipient accepted")
	}
	if err := ValidateRecipients([]string{identity(t).Recipient().String()}); err != nil {
		t.Error(err)
	}
}

// SopsBinary is the sops CLI that hack/sops.sh builds.
func SopsBinary(t *testing.T) string {
	t.Helper()
	p, err := testtools.Sops()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The standard sops CLI decrypts the file (checking its MAC) with the age identity, and gives back the
// object with its values.
func TestSopsCLIDecrypts(t *testing.T) {
	sops := SopsBinary(t)
	id := identity(t)
	dir := t.TempDir()
	out, err := Encrypt(secretObject(t, "cli-pass-1", "cli-tok-2"), Options{Recipients: []string{id.Recipient().String()}, DataKey: testDataKey, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "secret.yaml")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sops, "--decrypt", "--input-type", "yaml", "--output-type", "yaml", file)
	cmd.Env = append(os.Environ(), "SOPS_AGE_KEY="+id.String())
	plain, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sops --decrypt: %v\n%s\nfile:\n%s", err, plain, out)
	}
	var obj map[string]interface{}
	if err := yaml.Unmarshal(plain, &obj); err != nil {
		t.Fatal(err)
	}
	data := obj["data"].(map[string]interface{})
	sd := obj["stringData"].(map[string]interface{})
	if data["password"] != base64.StdEncoding.EncodeToString([]byte("cli-pass-1")) || sd["token"] != "cli-tok-2" {
		t.Fatalf("sops decrypted to:\n%s", plain)
	}
	spec := obj["spec"].(map[string]interface{})
	if spec["n"] != float64(3) || spec["f"] != 1.5 || spec["b"] != true {
		t.Fatalf("types changed:\n%s", plain)
	}
}
