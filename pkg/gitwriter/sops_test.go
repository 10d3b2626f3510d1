package gitwriter

import (
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"sigs.k8s.io/yaml"

	"github.com/kubehistory/kubehistory/internal/testtools"
)

// A destination with SOPS encryption: the Secret is fetched at write time (the stream holds no value),
// written SOPS-encrypted, and the standard sops CLI with the age identity gives back the Secret with its
// value. A seed of the same state changes nothing (the encrypted file is stable), a new value changes
// the file.
func TestSOPSDestination(t *testing.T) {
	sops, err := testtools.Sops()
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	q := startJetStream(t)
	remote := bareRepo(t)
	value := "sops-writer-value-1"
	f := fakeFetcher{"secrets/team-a/db": `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db","namespace":"team-a","resourceVersion":"5"},"type":"Opaque","data":{"password":"` +
		base64.StdEncoding.EncodeToString([]byte(value)) + `"}}`}
	cfg := testConfig(t, "file://"+remote)
	cfg.SOPSRecipients = []string{id.Recipient().String()}
	startWriter(t, cfg, q, f)
	create := mkChange("alice", "create", "secrets", "team-a", "db", "5", nil)
	publish(t, q, "", create)
	waitRecords(t, q, 1)
	co := checkout(t, remote)
	path := "clusters/dev/team-a/core/secrets/db.yaml"
	file := gitCLI(t, co, "show", "HEAD:"+path)
	if strings.Contains(file, value) || strings.Contains(file, base64.StdEncoding.EncodeToString([]byte(value))) || !strings.Contains(file, "ENC[AES256_GCM,") {
		t.Fatalf("file in Git:\n%s", file)
	}
	tmp := filepath.Join(t.TempDir(), "db.yaml")
	if err := os.WriteFile(tmp, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sops, "--decrypt", "--input-type", "yaml", "--output-type", "yaml", tmp)
	cmd.Env = append(os.Environ(), "SOPS_AGE_KEY="+id.String())
	plain, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sops --decrypt: %v\n%s", err, plain)
	}
	var obj struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(plain, &obj); err != nil || obj.Kind != "Secret" || obj.Data["password"] != base64.StdEncoding.EncodeToString([]byte(value)) {
		t.Fatalf("decrypted: %v\n%s", err, plain)
	}

	// The reconciler's seed of the same state: Git already equal, no commit.
	head := gitCLI(t, co, "ls-remote", remote, "refs/heads/main")
	seed := mkSeed("secrets", "team-a", "db", "5", nil)
	publish(t, q, "", seed)
	waitAcked(t, q)
	if now := gitCLI(t, co, "ls-remote", remote, "refs/heads/main"); now != head {
		t.Fatalf("an unchanged Secret made a commit: %s -> %s", head, now)
	}
	// A new value: a new commit whose file differs.
	f["secrets/team-a/db"] = strings.Replace(f["secrets/team-a/db"], `"resourceVersion":"5"`, `"resourceVersion":"6"`, 1)
	f["secrets/team-a/db"] = strings.Replace(f["secrets/team-a/db"], base64.StdEncoding.EncodeToString([]byte(value)), base64.StdEncoding.EncodeToString([]byte("sops-writer-value-2")), 1)
	publish(t, q, "", mkChange("bob", "update", "secrets", "team-a", "db", "6", nil))
	waitRecords(t, q, 2)
	co2 := checkout(t, remote)
	if next := gitCLI(t, co2, "show", "HEAD:"+path); next == file || strings.Contains(next, "sops-writer-value-2") {
		t.Fatalf("changed Secret: file unchanged or in clear:\n%s", next)
	}
}
