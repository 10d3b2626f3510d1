package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

const benchBatch = 400

var benchMatcher = StaticMatcher{
	Rules:       []configv1alpha1.ResourceRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}}},
	Destination: testDest,
}

// benchBody is a 400-event EventList of RequestResponse-level ConfigMap patches of about 2 KiB each, as
// kube-apiserver's batching webhook sends it. "ITER0000" in every auditID is replaced per iteration, so
// that no batch is a duplicate of an earlier one.
func benchBody() []byte {
	pad := strings.Repeat("x", 560)
	var b bytes.Buffer
	b.WriteString(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[`)
	for i := 0; i < benchBatch; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"level":"RequestResponse","auditID":"ITER0000-6d3b-4c1e-9d1a-%012d","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/team-a/configmaps/cm-%d?fieldManager=kubectl-patch","verb":"patch","user":{"username":"alice","uid":"u-alice","groups":["developers","system:authenticated"]},"sourceIPs":["10.0.0.12"],"userAgent":"kubectl/v1.36.3 (linux/amd64) kubernetes/abcdef0","objectRef":{"resource":"configmaps","namespace":"team-a","name":"cm-%d","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestObject":{"data":{"PAYLOAD":"%s"}},"responseObject":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-%d","namespace":"team-a","uid":"0c6f9d1e-7b9e-4a55-8a31-%012d","resourceVersion":"%d","creationTimestamp":"2026-05-04T10:00:00Z","labels":{"app":"web"}},"data":{"LOG_LEVEL":"debug","PAYLOAD":"%s"}},"requestReceivedTimestamp":"2026-05-04T10:02:00.000000Z","stageTimestamp":"2026-05-04T10:02:00.009000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by RoleBinding \"dev/team-a\" of ClusterRole \"edit\" to Group \"developers\""}}`,
			i, i, i, pad, i, i, 1000+i, pad)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func iterBody(tmpl []byte, i int) []byte {
	return bytes.ReplaceAll(tmpl, []byte("ITER0000"), []byte(fmt.Sprintf("%08d", i)))
}

// BenchmarkIngest400 is the whole path: TLS POST, decode, filter, map, publish, wait for every ack.
func BenchmarkIngest400(b *testing.B) {
	r := newIngestRig(b)
	runRig(b, r, len(r.body))
}

// rig is one side of the ingest benchmarks: it sends batch i and checks that n batches arrived.
type rig interface {
	batch(b *testing.B, i int) time.Duration
	check(b *testing.B, n int)
}

// runRig times b.N batches of r, each of size bytes, and reports the event rate.
func runRig(b *testing.B, r rig, size int) {
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		elapsed += r.batch(b, i)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchBatch)/elapsed.Seconds(), "events/s")
	r.check(b, b.N)
}

// BenchmarkRawJetStreamPublish400 publishes the messages BenchmarkIngest400 produces, straight with async
// publish and one wait for all acks: the ceiling ingest is measured against.
func BenchmarkRawJetStreamPublish400(b *testing.B) {
	r := newRawRig(b)
	runRig(b, r, r.size)
}

// BenchmarkIngestVsRaw400 runs both side by side, one batch of each in turn on two embedded JetStream
// servers, so that the noise of a shared machine falls on both alike; it reports both rates and their
// ratio (the target is ingest >= 0.5 x raw).
func BenchmarkIngestVsRaw400(b *testing.B) {
	in, raw := newIngestRig(b), newRawRig(b)
	b.ResetTimer()
	var inElapsed, rawElapsed time.Duration
	for i := 0; i < b.N; i++ {
		inElapsed += in.batch(b, i)
		rawElapsed += raw.batch(b, i)
	}
	b.StopTimer()
	inRate := float64(b.N*benchBatch) / inElapsed.Seconds()
	rawRate := float64(b.N*benchBatch) / rawElapsed.Seconds()
	b.ReportMetric(inRate, "ingest-events/s")
	b.ReportMetric(rawRate, "raw-events/s")
	b.ReportMetric(inRate/rawRate, "ratio")
	in.check(b, b.N)
	raw.check(b, b.N)
}

// ingestRig posts benchmark batches to a webhook in front of its own embedded JetStream.
type ingestRig struct {
	js     *jetStreamEnv
	client *http.Client
	url    string
	body   []byte
	at     []int // offsets of the audit ID prefixes in body
}

func newIngestRig(b *testing.B) *ingestRig {
	pki := newTestPKI(b)
	js := startJetStream(b)
	r := &ingestRig{
		js:     js,
		url:    startServer(b, pki, Options{AllowedNames: []string{"kube-apiserver"}}, benchMatcher, js.pub),
		client: pki.client(b, "kube-apiserver", pki.ca, pki.caKey),
		body:   benchBody(),
	}
	// One body, its audit IDs rewritten in place before each POST: the benchmark's own garbage would
	// otherwise count in the server's garbage collection.
	for off := 0; ; {
		j := bytes.Index(r.body[off:], []byte("ITER0000"))
		if j < 0 {
			break
		}
		r.at = append(r.at, off+j)
		off += j + 8
	}
	r.batch(b, 99999999) // warm up the connection
	return r
}

// batch posts batch i and returns how long the POST took.
func (r *ingestRig) batch(b *testing.B, i int) time.Duration {
	iter := fmt.Appendf(nil, "%08d", i)
	for _, off := range r.at {
		copy(r.body[off:], iter)
	}
	start := time.Now()
	mustPost(b, r.client, r.url, r.body, http.StatusOK)
	return time.Since(start)
}

// check verifies that n batches (and the warm-up) are stored: every change has its own ID, so the count
// shows none lost and none doubled.
func (r *ingestRig) check(b *testing.B, n int) {
	if got := r.js.storedCount(b); got != (n+1)*benchBatch {
		b.Fatalf("stream holds %d changes, want %d", got, (n+1)*benchBatch)
	}
}

// rawRig publishes the messages of a benchmark batch with async publish and one wait for all acks.
type rawRig struct {
	js   *jetStreamEnv
	pub  jetstream.JetStream
	msgs []queue.Message
	size int
}

func newRawRig(b *testing.B) *rawRig {
	r := &rawRig{js: startJetStream(b)}
	list, err := DecodeEventList(iterBody(benchBody(), 0))
	if err != nil {
		b.Fatal(err)
	}
	for i := range list.Items {
		cs, _ := EventChanges(&list.Items[i], benchMatcher)
		for _, c := range cs {
			data, err := json.Marshal(c)
			if err != nil {
				b.Fatal(err)
			}
			r.msgs = append(r.msgs, queue.Message{Subject: c.Destination.ChangesSubject(), ID: c.ChangeID, Data: data})
			r.size += len(data)
		}
	}
	if len(r.msgs) != benchBatch {
		b.Fatalf("%d messages", len(r.msgs))
	}
	// A plain NATS client of its own: the baseline is JetStream without pkg/queue.
	nc, err := nats.Connect(r.js.e.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	if r.pub, err = jetstream.New(nc); err != nil {
		b.Fatal(err)
	}
	return r
}

func (r *rawRig) batch(b *testing.B, i int) time.Duration {
	suffix := fmt.Sprintf("-%d", i)
	start := time.Now()
	for _, m := range r.msgs {
		if _, err := r.pub.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}, jetstream.WithMsgID(m.ID+suffix)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-r.pub.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("acks timed out")
	}
	return time.Since(start)
}

func (r *rawRig) check(b *testing.B, n int) {
	if got := r.js.storedCount(b); got != n*benchBatch {
		b.Fatalf("stream holds %d changes, want %d", got, n*benchBatch)
	}
}

// BenchmarkDecodeEventList400 and BenchmarkMapAndEncode400 split BenchmarkIngest400's CPU work into its
// two halves, without TLS and JetStream.
func BenchmarkDecodeEventList400(b *testing.B) {
	body := iterBody(benchBody(), 0)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := DecodeEventList(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEventList400Reference decodes the same body by reflection into auditv1.EventList, with
// encoding/json and with sigs.k8s.io/json (kube-apiserver's decoder, FuzzDecodeEventList's reference):
// what DecodeEventList is measured against (docs/decisions.md). Run both with
// -bench BenchmarkDecodeEventList400.
func BenchmarkDecodeEventList400Reference(b *testing.B) {
	body := iterBody(benchBody(), 0)
	for _, tc := range []struct {
		name      string
		unmarshal func([]byte, any) error
	}{
		{"encoding-json", json.Unmarshal},
		{"sigs.k8s.io-json", referenceJSON},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var list auditv1.EventList
				if err := tc.unmarshal(body, &list); err != nil {
					b.Fatal(err)
				}
				if len(list.Items) != benchBatch {
					b.Fatalf("%d items", len(list.Items))
				}
			}
		})
	}
}

func BenchmarkMapAndEncode400(b *testing.B) {
	decoded, err := decodeEvents(iterBody(benchBody(), 0))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for j := range decoded {
			cs, _ := eventChanges(&decoded[j].Event, decoded[j].head, benchMatcher, nil)
			for k := range cs {
				if _, err := change.Encode(&cs[k]); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

func (env *jetStreamEnv) storedCount(b *testing.B) int {
	st, err := env.q.StreamState(context.Background(), change.ChangesStream)
	if err != nil {
		b.Fatal(err)
	}
	return int(st.Msgs)
}
