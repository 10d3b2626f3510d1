package gitwriter

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/installkey"
)

// startJetStream runs an embedded nats-server with JetStream on loopback and creates the two streams
// the way pkg/queue does (with a duplicate window).
func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, prefix := range map[string]string{change.ChangesStream: change.ChangesSubjectPrefix, change.HistoryStream: change.HistorySubjectPrefix} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ">"}, Duplicates: 10 * time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	return js
}

// gitCLI runs the git CLI in dir and returns its trimmed output.
func gitCLI(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=someone", "GIT_AUTHOR_EMAIL=someone@example.com",
		"GIT_COMMITTER_NAME=someone", "GIT_COMMITTER_EMAIL=someone@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// bareRepo makes an empty bare repository (no branch yet) and returns its path.
func bareRepo(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "remote.git")
	gitCLI(t, filepath.Dir(dir), "init", "-q", "--bare", "--initial-branch=main", dir)
	return dir
}

var dest = change.DestinationRef{Namespace: "kubehistory", Name: "audit.repo"}

func testConfig(t testing.TB, url string) Config {
	return Config{
		Destination:  dest,
		URL:          url,
		Branch:       "main",
		PathPrefix:   "clusters/dev",
		CommitWindow: 300 * time.Millisecond,
		DataDir:      t.TempDir(),
		Identity:     "test-replica",
		RetryInitial: 50 * time.Millisecond,
		RetryMax:     500 * time.Millisecond,
		Key:          testKey,
		KeyID:        testKey.ID(),
		GapGrace:     -1, // TestGapHeldForAuditChange tests the hold
	}
}

// testKey is the installation key of the writer tests.
var testKey = installkey.ForTest("gitwriter")

var changeClock = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
var changeSeq int

// mkChange builds a change; body (an object's fields besides apiVersion/kind/metadata) nil for a
// delete or a change without body.
func mkChange(user, verb, resource, ns, name, rv string, body map[string]interface{}) change.Change {
	changeSeq++
	obj := change.Object{Version: "v1", Resource: resource, Namespace: ns, Name: name, ResourceVersion: rv}
	kind := map[string]string{"configmaps": "ConfigMap", "secrets": "Secret", "namespaces": "Namespace"}[resource]
	obj.Kind = kind
	token := fmt.Sprintf("audit-%d", changeSeq)
	ch := change.Change{
		Fields: change.Fields{
			Object:     obj,
			Verb:       change.Verb(verb),
			Actor:      change.Actor{Username: user, Groups: []string{"system:authenticated", "team-" + user}},
			Source:     change.SourceAudit,
			AuditID:    token,
			ChangeID:   change.ID(dest, token, obj),
			ChangeTime: metav1.NewMicroTime(changeClock.Add(time.Duration(changeSeq) * time.Millisecond)),
		},
		Destination: dest,
	}
	if body != nil {
		o := map[string]interface{}{"apiVersion": "v1", "kind": kind,
			"metadata": map[string]interface{}{"name": name, "namespace": ns, "resourceVersion": rv, "uid": "uid-" + name,
				"managedFields": []interface{}{map[string]interface{}{"manager": "kubectl"}}}}
		for k, v := range body {
			o[k] = v
		}
		if ns == "" {
			delete(o["metadata"].(map[string]interface{}), "namespace")
		}
		ch.Body, _ = json.Marshal(o)
	}
	return ch
}

func publish(t testing.TB, js jetstream.JetStream, msgID string, chs ...change.Change) {
	t.Helper()
	for _, ch := range chs {
		data, err := json.Marshal(ch)
		if err != nil {
			t.Fatal(err)
		}
		id := ch.ChangeID
		if msgID != "" {
			id = msgID + id
		}
		if _, err := js.Publish(context.Background(), ch.Destination.ChangesSubject(), data, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
}

// running is a writer started in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
	w      *Writer
}

func startWriter(t testing.TB, cfg Config, js jetstream.JetStream, f ObjectFetcher) *running {
	t.Helper()
	w, err := New(cfg, js, f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), w: w}
	go func() { r.done <- w.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { r.stop(t) }) })
	return r
}

func (r *running) stop(t testing.TB) {
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Logf("writer returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writer did not stop")
	}
	r.done <- nil // a second stop returns at once
}

// eventually polls cond until it holds; a generous deadline only guards against hanging forever.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// records reads every record of the destination on KUBEHISTORY_HISTORY.
func records(t testing.TB, js jetstream.JetStream) []change.Record {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, change.HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []change.Record
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if m.Subject != dest.HistorySubject() {
			t.Fatalf("record on subject %s", m.Subject)
		}
		var r change.Record
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) != r.ChangeID {
			t.Fatalf("record %s published with Nats-Msg-Id %q", r.ChangeID, m.Header.Get(jetstream.MsgIDHeader))
		}
		out = append(out, r)
	}
	return out
}

func waitRecords(t testing.TB, js jetstream.JetStream, n int) []change.Record {
	t.Helper()
	var recs []change.Record
	eventually(t, fmt.Sprintf("%d records", n), func() bool { recs = records(t, js); return len(recs) >= n })
	return recs
}

// waitAcked waits until the writer's consumer has nothing pending or unacked.
func waitAcked(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	eventually(t, "all changes acked", func() bool {
		c, err := js.Consumer(context.Background(), change.ChangesStream, ConsumerName(dest))
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

// checkout clones the bare repository to inspect it with the git CLI.
func checkout(t testing.TB, remote string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "checkout")
	gitCLI(t, filepath.Dir(dir), "clone", "-q", remote, dir)
	return dir
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func gitCLIAllowFail(dir string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, _ := cmd.CombinedOutput()
	return strings.TrimSpace(string(out))
}

func historyCount(t testing.TB, js jetstream.JetStream) uint64 {
	s, err := js.Stream(context.Background(), change.HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}
