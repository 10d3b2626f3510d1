package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kubehistory/kubehistory/pkg/change"
)

func startEmbedded(t *testing.T, opts EmbeddedOptions) *Embedded {
	t.Helper()
	e, err := StartEmbedded(opts)
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	return e
}

func testChanges(token string, n int) []change.Change {
	dest := change.DestinationRef{Namespace: "team-a", Name: "repo.main"}
	out := make([]change.Change, n)
	for i := range out {
		obj := change.Object{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: "team-a", Name: fmt.Sprintf("cm-%d", i)}
		out[i] = change.Change{
			Fields: change.Fields{
				Object: obj, Verb: change.VerbCreate, Source: change.SourceAudit,
				AuditID: token, ChangeID: change.ID(dest, token, obj),
			},
			Destination: dest,
			Body:        json.RawMessage(`{"kind":"ConfigMap"}`),
		}
	}
	return out
}

func streamMsgIDs(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, change.ChangesStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		ids[m.Header.Get(jetstream.MsgIDHeader)]++
	}
	return ids
}

func TestEnsureStreams(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{DataDir: t.TempDir(), InProcessOnly: true})
	defer e.Shutdown()
	c, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	js := c.js
	ctx := context.Background()

	tests := []struct {
		name    string
		opts    []StreamOption
		wantDup time.Duration
		wantErr bool
	}{
		{name: "default window", wantDup: DefaultDuplicateWindow},
		{name: "custom window", opts: []StreamOption{WithDuplicateWindow(7 * time.Minute)}, wantDup: 7 * time.Minute},
		{name: "too short", opts: []StreamOption{WithDuplicateWindow(time.Minute)}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := EnsureStreams(ctx, c, 1, tc.opts...)
			if tc.wantErr {
				if err == nil {
					t.Fatal("expected an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{change.ChangesStream, change.HistoryStream} {
				s, err := js.Stream(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				cfg := s.CachedInfo().Config
				if cfg.Duplicates != tc.wantDup || cfg.Storage != jetstream.FileStorage || cfg.Replicas != 1 {
					t.Errorf("%s: duplicates %s storage %s replicas %d", name, cfg.Duplicates, cfg.Storage, cfg.Replicas)
				}
			}
		})
	}
	if err := EnsureStreams(ctx, c, 0); err == nil {
		t.Error("replicas 0 accepted")
	}
}

func TestPublishDedupAndRestart(t *testing.T) {
	dir := t.TempDir()
	e := startEmbedded(t, EmbeddedOptions{DataDir: dir, Port: -1, SyncAlways: true})
	port := e.Port()
	if port == 0 {
		t.Fatal("no port")
	}
	c, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := NewPublisher(c, PublisherOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := EnsureStreams(ctx, c, 1); err != nil {
		t.Fatal(err)
	}

	batch := testChanges("audit-1", 50)
	for i := 0; i < 2; i++ { // a re-sent batch must not add messages
		if err := p.Publish(ctx, batch); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	ids := streamMsgIDs(t, c.js)
	if len(ids) != 50 {
		t.Fatalf("want 50 distinct messages, got %d", len(ids))
	}
	for _, c := range batch {
		if ids[c.ChangeID] != 1 {
			t.Errorf("change %s stored %d times", c.ChangeID, ids[c.ChangeID])
		}
	}

	if err := p.Publish(ctx, []change.Change{{Destination: batch[0].Destination}}); err == nil {
		t.Error("change without ID accepted")
	}

	e.Shutdown()
	deadline := time.Now().Add(5 * time.Second)
	for c.nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Publish(ctx, testChanges("audit-2", 3)); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("publish with server down: want ErrNotConnected, got %v", err)
	}

	e2 := startEmbedded(t, EmbeddedOptions{DataDir: dir, Port: port})
	defer e2.Shutdown()
	deadline = time.Now().Add(10 * time.Second)
	for !c.nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Publish(ctx, testChanges("audit-2", 3)); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	ids = streamMsgIDs(t, c.js)
	if len(ids) != 53 {
		t.Fatalf("after restart want 53 messages, got %d", len(ids))
	}
}

func TestPublishFailsWithoutStream(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{DataDir: t.TempDir(), InProcessOnly: true})
	defer e.Shutdown()
	c, err := e.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := NewPublisher(c, PublisherOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), testChanges("audit-1", 2)); err == nil {
		t.Fatal("publish without stream succeeded")
	}
}

func TestConnectOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    ConnectOptions
		errs int
	}{
		{name: "url only", o: ConnectOptions{URL: "nats://127.0.0.1:4222"}},
		{name: "missing url", o: ConnectOptions{}, errs: 1},
		{name: "cert without key", o: ConnectOptions{URL: "x", CertFile: "c"}, errs: 1},
		{name: "creds and user", o: ConnectOptions{URL: "x", CredsFile: "f", User: "u"}, errs: 1},
		{name: "password without user", o: ConnectOptions{URL: "x", Password: "p"}, errs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := len(tc.o.Validate()); got != tc.errs {
				t.Errorf("want %d errors, got %d", tc.errs, got)
			}
		})
	}
}

func TestConnectExternal(t *testing.T) {
	e := startEmbedded(t, EmbeddedOptions{DataDir: t.TempDir(), Port: -1})
	defer e.Shutdown()
	c, err := Connect(ConnectOptions{URL: e.ClientURL(), Name: "external"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.nc.Status() != nats.CONNECTED || c.Connected() != nil {
		t.Fatalf("status %v", c.nc.Status())
	}
	if _, err := Connect(ConnectOptions{URL: e.ClientURL(), CredsFile: "/nonexistent/creds"}); err == nil {
		t.Error("missing creds file accepted")
	}
}

func TestStartEmbeddedNeedsDataDir(t *testing.T) {
	if _, err := StartEmbedded(EmbeddedOptions{}); err == nil {
		t.Fatal("started without data dir")
	}
}
