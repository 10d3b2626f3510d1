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

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
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

func reportEventsPerSecond(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N*benchBatch)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkIngest400 is the whole path: TLS POST, decode, filter, map, publish, wait for every ack.
func BenchmarkIngest400(b *testing.B) {
	pki := newTestPKI(b)
	js := startJetStream(b)
	url := startServer(b, pki, Options{AllowedNames: []string{"kube-apiserver"}}, benchMatcher, js.pub)
	client := pki.client(b, "kube-apiserver", pki.ca, pki.caKey)
	tmpl := benchBody()
	b.SetBytes(int64(len(tmpl)))
	mustPost(b, client, url, iterBody(tmpl, 99999999), http.StatusOK) // warm up the connection

	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		body := iterBody(tmpl, i)
		b.StartTimer()
		start := time.Now()
		mustPost(b, client, url, body, http.StatusOK)
		elapsed += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchBatch)/elapsed.Seconds(), "events/s")
	// Every change of every batch has its own ID: the count shows none lost and none doubled.
	if got := js.storedCount(b); got != (b.N+1)*benchBatch {
		b.Fatalf("stream holds %d changes, want %d", got, (b.N+1)*benchBatch)
	}
}

// BenchmarkRawJetStreamPublish400 publishes the messages BenchmarkIngest400 produces, straight with async
// publish and one wait for all acks: the ceiling ingest is measured against.
func BenchmarkRawJetStreamPublish400(b *testing.B) {
	js := startJetStream(b)
	list, err := DecodeEventList(iterBody(benchBody(), 0))
	if err != nil {
		b.Fatal(err)
	}
	type msg struct {
		subject, id string
		data        []byte
	}
	var msgs []msg
	for i := range list.Items {
		cs, _ := EventChanges(&list.Items[i], benchMatcher)
		for _, c := range cs {
			data, err := json.Marshal(c)
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, msg{subject: c.Destination.ChangesSubject(), id: c.ChangeID, data: data})
		}
	}
	if len(msgs) != benchBatch {
		b.Fatalf("%d messages", len(msgs))
	}
	var size int
	for _, m := range msgs {
		size += len(m.data)
	}
	b.SetBytes(int64(size))
	pub, err := jetstream.New(js.nc)
	if err != nil {
		b.Fatal(err)
	}

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		suffix := fmt.Sprintf("-%d", i)
		for _, m := range msgs {
			if _, err := pub.PublishMsgAsync(&nats.Msg{Subject: m.subject, Data: m.data, Header: nats.Header{}}, jetstream.WithMsgID(m.id+suffix)); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-pub.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			b.Fatal("acks timed out")
		}
	}
	b.StopTimer()
	reportEventsPerSecond(b, start)
	if got := js.storedCount(b); got != b.N*benchBatch {
		b.Fatalf("stream holds %d changes, want %d", got, b.N*benchBatch)
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

func BenchmarkMapAndEncode400(b *testing.B) {
	list, err := DecodeEventList(iterBody(benchBody(), 0))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		for j := range list.Items {
			cs, _ := EventChanges(&list.Items[j], benchMatcher)
			for k := range cs {
				if _, err := change.Encode(&cs[k]); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}

func (env *jetStreamEnv) storedCount(b *testing.B) int {
	info, err := env.pub.JetStream().Stream(context.Background(), change.ChangesStream)
	if err != nil {
		b.Fatal(err)
	}
	return int(info.CachedInfo().State.Msgs)
}
