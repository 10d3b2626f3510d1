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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/installkey"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// startJetStream runs JetStream embedded (pkg/queue, loopback) with the two streams and returns a
// connection to it.
func startJetStream(t testing.TB) *queue.Conn {
	t.Helper()
	e, err := queue.StartEmbedded(queue.EmbeddedOptions{DataDir: t.TempDir(), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	q, err := e.Connect("gitwriter-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	if err := queue.EnsureStreams(context.Background(), q, 1); err != nil {
		t.Fatal(err)
	}
	return q
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

// publish publishes changes with their change ID as message ID, prefixed by msgID when set (so that
// JetStream does not deduplicate a change sent again).
func publish(t testing.TB, q *queue.Conn, msgID string, chs ...change.Change) {
	t.Helper()
	for _, ch := range chs {
		data, err := json.Marshal(ch)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Publish(context.Background(), []queue.Message{{Subject: ch.Destination.ChangesSubject(), ID: msgID + ch.ChangeID, Data: data}}); err != nil {
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

func startWriter(t testing.TB, cfg Config, q Queue, f ObjectFetcher) *running {
	t.Helper()
	w, err := New(cfg, q, f)
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
func records(t testing.TB, q *queue.Conn) []change.Record {
	t.Helper()
	ctx := context.Background()
	st, err := q.StreamState(ctx, change.HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	var out []change.Record
	err = q.Replay(ctx, change.HistoryStream, st.LastSeq, 1000, func(msgs []*queue.Msg) error {
		for _, m := range msgs {
			if m.Subject != dest.HistorySubject() {
				t.Fatalf("record on subject %s", m.Subject)
			}
			var r change.Record
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatal(err)
			}
			if m.MsgID != r.ChangeID {
				t.Fatalf("record %s published with Nats-Msg-Id %q", r.ChangeID, m.MsgID)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitRecords(t testing.TB, q *queue.Conn, n int) []change.Record {
	t.Helper()
	var recs []change.Record
	eventually(t, fmt.Sprintf("%d records", n), func() bool { recs = records(t, q); return len(recs) >= n })
	return recs
}

// waitAcked waits until the writer's consumer has nothing pending or unacked.
func waitAcked(t testing.TB, q *queue.Conn) {
	t.Helper()
	eventually(t, "all changes acked", func() bool {
		b, err := writerBacklog(q)
		return err == nil && b.Pending == 0 && b.AckPending == 0
	})
}

// writerBacklog is the state of the test destination's writer consumer.
func writerBacklog(q *queue.Conn) (queue.Backlog, error) {
	return q.ConsumerBacklog(context.Background(), change.ChangesStream, queue.ChangesConsumerName(dest))
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

func historyCount(t testing.TB, q *queue.Conn) uint64 {
	st, err := q.StreamState(context.Background(), change.HistoryStream)
	if err != nil {
		t.Fatal(err)
	}
	return st.Msgs
}
