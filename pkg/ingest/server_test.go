package ingest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-base/metrics/testutil"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/installkey"
	"github.com/kubehistory/kubehistory/pkg/queue"
	"github.com/kubehistory/kubehistory/pkg/sanitize"
)

// jetStreamEnv is an embedded JetStream on a fixed data dir and port, restartable.
type jetStreamEnv struct {
	dir  string
	port int
	e    *queue.Embedded
	q    *queue.Conn
	pub  *queue.Publisher
}

func startJetStream(t testing.TB) *jetStreamEnv {
	t.Helper()
	env := &jetStreamEnv{dir: t.TempDir(), port: -1}
	env.start(t)
	q, err := env.e.Connect("ingest-test")
	if err != nil {
		t.Fatal(err)
	}
	env.q = q
	env.pub, err = queue.NewPublisher(q, queue.PublisherOptions{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(context.Background(), q, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		q.Close()
		if env.e != nil {
			env.e.Shutdown()
		}
	})
	return env
}

func (env *jetStreamEnv) start(t testing.TB) {
	t.Helper()
	e, err := queue.StartEmbedded(queue.EmbeddedOptions{DataDir: env.dir, Port: env.port})
	if err != nil {
		t.Fatal(err)
	}
	env.e, env.port = e, e.Port()
}

func (env *jetStreamEnv) stop() {
	env.e.Shutdown()
	env.e = nil
}

// msgIDs counts the stored messages of KUBEHISTORY_CHANGES by Nats-Msg-Id.
func (env *jetStreamEnv) msgIDs(t testing.TB) map[string]int {
	t.Helper()
	ctx := context.Background()
	st, err := env.q.StreamState(ctx, change.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	err = env.q.Replay(ctx, change.ChangesStream, st.LastSeq, 1000, func(msgs []*queue.Msg) error {
		for _, m := range msgs {
			var c change.Change
			if err := json.Unmarshal(m.Data, &c); err != nil {
				t.Fatal(err)
			}
			if m.MsgID != c.ChangeID || m.Subject != c.Destination.ChangesSubject() {
				t.Errorf("message %d: msg-id %s subject %s for change %s to %v", m.Seq, m.MsgID, m.Subject, c.ChangeID, c.Destination)
			}
			ids[m.MsgID]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func startServer(t testing.TB, pki *testPKI, opts Options, m RuleMatcher, p Publisher) string {
	t.Helper()
	opts.BindAddress, opts.Port = "127.0.0.1", 0
	opts.CertFile, opts.KeyFile, opts.ClientCAFile = pki.certFile, pki.keyFile, pki.caFile
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	s, err := NewServer(opts, m, p)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return "https://" + addr.String() + AuditPath
}

// expectedIDs are the change IDs a fixture must produce.
func expectedIDs(t testing.TB, m RuleMatcher, fixtures ...string) []string {
	var ids []string
	for _, f := range fixtures {
		list, err := DecodeEventList(loadFixture(t, f))
		if err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			cs, _ := EventChanges(&list.Items[i], m)
			for _, c := range cs {
				ids = append(ids, c.ChangeID)
			}
		}
	}
	return ids
}

type response struct {
	code       int
	retryAfter string
	status     metav1.Status
}

func post(t testing.TB, c *http.Client, url string, body []byte) (response, error) {
	t.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := response{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if err := json.Unmarshal(data, &r.status); err != nil {
		t.Errorf("answer %d is not a Status: %q", resp.StatusCode, data)
	}
	return r, nil
}

func mustPost(t testing.TB, c *http.Client, url string, body []byte, wantCode int) response {
	t.Helper()
	r, err := post(t, c, url, body)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	if r.code != wantCode {
		t.Fatalf("POST answered %d (%s), want %d", r.code, r.status.Message, wantCode)
	}
	return r
}

func TestServerEndToEnd(t *testing.T) {
	pki := newTestPKI(t)
	js := startJetStream(t)
	url := startServer(t, pki, Options{AllowedNames: []string{"kube-apiserver"}, MaxBodyBytes: 1 << 20}, teamAMatcher, js.pub)
	apiserver := pki.client(t, "kube-apiserver", pki.ca, pki.caKey)

	assertStored := func(t *testing.T, want []string) {
		t.Helper()
		got := js.msgIDs(t)
		if len(got) != len(want) {
			t.Errorf("stream holds %d distinct changes, want %d", len(got), len(want))
		}
		for _, id := range want {
			if got[id] != 1 {
				t.Errorf("change %s stored %d times", id, got[id])
			}
		}
	}

	var stored []string
	t.Run("accepted changes stored once, re-sent batch deduplicated", func(t *testing.T) {
		before, _ := testutil.GetCounterMetricValue(eventsTotal.WithLabelValues("dropped", ReasonStage))
		body := loadFixture(t, "create-configmap.json")
		mustPost(t, apiserver, url, body, http.StatusOK)
		mustPost(t, apiserver, url, body, http.StatusOK)
		stored = append(stored, expectedIDs(t, teamAMatcher, "create-configmap.json")...)
		assertStored(t, stored)
		after, _ := testutil.GetCounterMetricValue(eventsTotal.WithLabelValues("dropped", ReasonStage))
		if after-before != 2 {
			t.Errorf("dropped{reason=stage} grew by %v, want 2", after-before)
		}
	})

	t.Run("batches out of order", func(t *testing.T) {
		mustPost(t, apiserver, url, loadFixture(t, "replace-configmap.json"), http.StatusOK)
		mustPost(t, apiserver, url, loadFixture(t, "apply-configmap.json"), http.StatusOK)
		mustPost(t, apiserver, url, loadFixture(t, "patch-impersonated.json"), http.StatusOK)
		mustPost(t, apiserver, url, loadFixture(t, "apply-configmap.json"), http.StatusOK)
		mustPost(t, apiserver, url, loadFixture(t, "rejected.json"), http.StatusOK) // all dropped
		stored = append(stored, expectedIDs(t, teamAMatcher, "replace-configmap.json", "apply-configmap.json", "patch-impersonated.json")...)
		assertStored(t, stored)
	})

	valid := loadFixture(t, "delete-configmap.json")
	refused := []struct {
		name   string
		client *http.Client
		method string
		body   []byte
		code   int // 0: the TLS handshake must fail
	}{
		{name: "no client certificate", client: pki.client(t, "", nil, nil), body: valid},
		{name: "certificate of another CA", client: func() *http.Client {
			other, otherKey, _ := newCA(t, "other-ca")
			return pki.client(t, "kube-apiserver", other, otherKey)
		}(), body: valid},
		{name: "name not allowed", client: pki.client(t, "mallory", pki.ca, pki.caKey), body: valid, code: http.StatusForbidden},
		{name: "malformed JSON", client: apiserver, body: []byte(`{"kind":"EventList","items":[`), code: http.StatusBadRequest},
		{name: "not an EventList", client: apiserver, body: []byte(`{"kind":"ConfigMap","apiVersion":"v1"}`), code: http.StatusBadRequest},
		{name: "wrong apiVersion", client: apiserver, body: bytes.Replace(valid, []byte(`"audit.k8s.io/v1"`), []byte(`"audit.k8s.io/v1beta1"`), 1), code: http.StatusBadRequest},
		{name: "oversized", client: apiserver, body: append(valid[:len(valid)-2:len(valid)-2], []byte(`,"pad":"`+strings.Repeat("x", 2<<20)+`"}`)...), code: http.StatusRequestEntityTooLarge},
		{name: "GET", client: apiserver, method: http.MethodGet, code: http.StatusMethodNotAllowed},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequest(method, url, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tc.client.Do(req)
			if tc.code == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("request without a valid client certificate answered %d", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st metav1.Status
			_ = json.NewDecoder(resp.Body).Decode(&st)
			if resp.StatusCode != tc.code || st.Message == "" {
				t.Errorf("answered %d %q, want %d with a message", resp.StatusCode, st.Message, tc.code)
			}
			assertStored(t, stored)
		})
	}

	t.Run("JetStream down: 503, then retried batch stored after restart", func(t *testing.T) {
		js.stop()
		waitFor(t, "NATS disconnect", func() bool { return js.q.Connected() != nil })
		body := loadFixture(t, "special.json")
		r := mustPost(t, apiserver, url, body, http.StatusServiceUnavailable)
		if r.retryAfter == "" || r.status.Message == "" {
			t.Errorf("503 without Retry-After or message: %+v", r)
		}
		js.start(t)
		waitFor(t, "NATS reconnect", func() bool { return js.q.Connected() == nil })
		mustPost(t, apiserver, url, body, http.StatusOK)
		mustPost(t, apiserver, url, loadFixture(t, "deletecollection-list.json"), http.StatusOK)
		stored = append(stored, expectedIDs(t, teamAMatcher, "special.json", "deletecollection-list.json")...)
		assertStored(t, stored)
	})
}

func TestNewServerErrors(t *testing.T) {
	pki := newTestPKI(t)
	good := Options{BindAddress: "127.0.0.1", CertFile: pki.certFile, KeyFile: pki.keyFile, ClientCAFile: pki.caFile, MaxBodyBytes: 1}
	pub := publisherFunc(func(context.Context, []queue.Message) error { return nil })
	tests := []struct {
		name   string
		mutate func(*Options)
	}{
		{name: "missing CA", mutate: func(o *Options) { o.ClientCAFile = "" }},
		{name: "unreadable CA", mutate: func(o *Options) { o.ClientCAFile = "/nonexistent" }},
		{name: "CA not PEM", mutate: func(o *Options) { o.ClientCAFile = pki.keyFile }},
		{name: "bad key", mutate: func(o *Options) { o.KeyFile = pki.caFile }},
		{name: "bad bind address", mutate: func(o *Options) { o.BindAddress = "localhost" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mutate(&o)
			if _, err := NewServer(o, teamAMatcher, pub); err == nil {
				t.Error("NewServer accepted bad options")
			}
		})
	}
	if _, err := NewServer(good, teamAMatcher, pub); err != nil {
		t.Errorf("good options: %v", err)
	}
}

type publisherFunc func(context.Context, []queue.Message) error

func (f publisherFunc) PublishSeq(ctx context.Context, seq iter.Seq2[queue.Message, error]) error {
	var msgs []queue.Message
	for m, err := range seq {
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	return f(ctx, msgs)
}

func TestPublishFailureAnswers503(t *testing.T) {
	pki := newTestPKI(t)
	url := startServer(t, pki, Options{}, teamAMatcher, publisherFunc(func(context.Context, []queue.Message) error {
		return errors.New("stream full")
	}))
	r := mustPost(t, pki.client(t, "any-name", pki.ca, pki.caKey), url, loadFixture(t, "create-configmap.json"), http.StatusServiceUnavailable)
	if r.retryAfter != fmt.Sprint(RetryAfterSeconds) || !strings.Contains(r.status.Message, "stream full") {
		t.Errorf("got %+v", r)
	}
}

func TestOptions(t *testing.T) {
	o := NewOptions()
	if errs := o.Validate(); len(errs) != 2 {
		t.Errorf("defaults without files: want 2 errors (cert/key, CA), got %v", errs)
	}
	o.CertFile, o.KeyFile, o.ClientCAFile = "c", "k", "ca"
	if errs := o.Validate(); len(errs) != 0 {
		t.Errorf("complete options: %v", errs)
	}
	fs := pflag.NewFlagSet(FlagSetName, pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse([]string{"--audit-port=9443", "--audit-allowed-names=kube-apiserver,front-proxy", "--audit-max-body-bytes=1024", "--audit-bind-address=0.0.0.0"}); err != nil {
		t.Fatal(err)
	}
	if o.Port != 9443 || len(o.AllowedNames) != 2 || o.MaxBodyBytes != 1024 || o.BindAddress != "0.0.0.0" {
		t.Errorf("flags not applied: %+v", o)
	}
	o.Port, o.MaxBodyBytes, o.BindAddress = 70000, 0, "nope"
	if errs := o.Validate(); len(errs) != 3 {
		t.Errorf("want 3 errors, got %v", errs)
	}
}

// A Secret audited at RequestResponse (an operator's own policy may do it): its values and the
// last-applied copy never reach the publisher; without a policy (no key) the body is dropped instead.
func TestSecretBodyRedactedBeforePublishing(t *testing.T) {
	value := "ingest-s3cr3t-value"
	b64 := base64.StdEncoding.EncodeToString([]byte(value))
	lastApplied := strings.ReplaceAll(fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","stringData":{"password":%q}}`, value), `"`, `\"`)
	secret := fmt.Sprintf(`{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","namespace":"team-a","uid":"u1","resourceVersion":"9",
		"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"%s"}},"data":{"password":%q},"type":"Opaque"}`, lastApplied, b64)
	batch := []byte(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[{"level":"RequestResponse","auditID":"a-1",
		"stage":"ResponseComplete","requestURI":"/api/v1/namespaces/team-a/secrets","verb":"create","user":{"username":"alice"},
		"objectRef":{"resource":"secrets","namespace":"team-a","name":"db","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},
		"responseObject":` + secret + `,"stageTimestamp":"2026-05-04T10:00:00.100000Z"}]}`)
	key := installkey.ForTest("ingest")
	for _, tc := range []struct {
		name   string
		policy change.Policy
	}{
		{"redacted under the key", func(change.DestinationRef) sanitize.Options { return sanitize.Options{Key: key} }},
		{"dropped without a policy", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pki := newTestPKI(t)
			var got []queue.Message
			url := startServer(t, pki, Options{Policy: tc.policy}, teamAMatcher, publisherFunc(func(_ context.Context, m []queue.Message) error {
				got = append(got, m...)
				return nil
			}))
			mustPost(t, pki.client(t, "any-name", pki.ca, pki.caKey), url, batch, http.StatusOK)
			if len(got) != 1 {
				t.Fatalf("%d messages", len(got))
			}
			for _, n := range []string{value, b64} {
				if strings.Contains(string(got[0].Data), n) {
					t.Fatalf("%q published: %s", n, got[0].Data)
				}
			}
			var c change.Change
			if err := json.Unmarshal(got[0].Data, &c); err != nil {
				t.Fatal(err)
			}
			if tc.policy != nil && (!c.Redacted || !strings.Contains(string(c.Body), key.Fingerprint([]byte(value)))) {
				t.Fatalf("body not redacted under the key: %s", c.Body)
			}
			if tc.policy == nil && (len(c.Body) != 0 || !c.HasMarker(change.MarkerNoBody)) {
				t.Fatalf("body kept without a policy: %s (markers %v)", c.Body, c.Markers)
			}
		})
	}
}
