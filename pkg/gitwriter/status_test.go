package gitwriter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// statusLog keeps every status a writer hands to OnStatus.
type statusLog struct {
	mu   sync.Mutex
	seen []change.RepoState
}

func (l *statusLog) add(st change.RepoState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, st)
}

func (l *statusLog) last() (change.RepoState, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seen) == 0 {
		return change.RepoState{}, false
	}
	return l.seen[len(l.seen)-1], true
}

func (l *statusLog) ready() *metav1.Condition {
	st, ok := l.last()
	if !ok {
		return nil
	}
	return meta.FindStatusCondition(st.Conditions, ConditionReady)
}

// startWriterWithStatus starts a writer like startWriter, with its OnStatus feeding a log.
func startWriterWithStatus(t *testing.T, cfg Config, l *statusLog) *running {
	t.Helper()
	q := startJetStream(t)
	w, err := New(cfg, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.OnStatus(l.add)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), w: w}
	go func() { r.done <- w.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { r.stop(t) }) })
	return r
}

// TestReadyFollowsPushes: Ready is True (RepositoryReachable) once the writer read an empty remote
// with nothing to push; a remote whose pre-receive hook refuses every push makes it False with reason
// PushFailed, the hook's words, the pending change and its age; it stays False across retries (no
// flapping to True between attempts); when the remote accepts again the push makes it True (Pushed)
// and clears the error.
func TestReadyFollowsPushes(t *testing.T) {
	remote := bareRepo(t)
	var l statusLog
	r := startWriterWithStatus(t, testConfig(t, "file://"+remote), &l)
	eventually(t, "Ready True before any change", func() bool {
		c := l.ready()
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == configv1alpha1.ReasonRepositoryReachable
	})

	hook := filepath.Join(remote, "hooks", "pre-receive")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho 'pushes are frozen' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	publish(t, r.w.q.(*queue.Conn), "", mkChange("alice", "create", "configmaps", "team-a", "web", "1", map[string]interface{}{"data": map[string]interface{}{"a": "1"}}))
	eventually(t, "Ready False PushFailed", func() bool {
		c := l.ready()
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == configv1alpha1.ReasonPushFailed
	})
	st, _ := l.last()
	if c := l.ready(); !strings.Contains(c.Message, "refused the push") || st.LastError != c.Message || st.LastErrorTime == nil {
		t.Errorf("condition %+v, lastError %q", c, st.LastError)
	}
	if st.PendingChanges != 1 || st.OldestPendingTime == nil {
		t.Errorf("pending %d since %v, want 1 change with its time", st.PendingChanges, st.OldestPendingTime)
	}
	// Let it retry a few times: never True meanwhile.
	n := func() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.seen) }
	from := n()
	eventually(t, "three more attempts", func() bool { return n() >= from+3 })
	l.mu.Lock()
	for _, s := range l.seen[from:] {
		if meta.IsStatusConditionTrue(s.Conditions, ConditionReady) {
			t.Errorf("Ready True between failed pushes: %+v", s.Conditions)
		}
	}
	l.mu.Unlock()

	if err := os.Remove(hook); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Ready True Pushed", func() bool {
		c := l.ready()
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == configv1alpha1.ReasonPushed
	})
	st, _ = l.last()
	if st.LastError != "" || st.PendingChanges != 0 || st.OldestPendingTime != nil || st.HeadCommit != gitCLI(t, remote, "rev-parse", "main") {
		t.Errorf("status after the push: %+v", st)
	}
}

// TestReadyUnreachable: a repository that does not exist is RepositoryUnreachable before any change;
// once it exists the idle writer finds it (no change needed) and turns Ready.
func TestReadyUnreachable(t *testing.T) {
	var l statusLog
	dir := filepath.Join(t.TempDir(), "later.git")
	startWriterWithStatus(t, testConfig(t, "file://"+dir), &l)
	eventually(t, "Ready False RepositoryUnreachable", func() bool {
		c := l.ready()
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == configv1alpha1.ReasonRepositoryUnreachable
	})
	gitCLI(t, filepath.Dir(dir), "init", "-q", "--bare", "--initial-branch=main", dir)
	eventually(t, "Ready True once the repository exists", func() bool {
		c := l.ready()
		return c != nil && c.Status == metav1.ConditionTrue && c.Reason == configv1alpha1.ReasonRepositoryReachable
	})
}

func TestFailureReason(t *testing.T) {
	none := &Writer{cfg: Config{}}
	withPassword := &Writer{cfg: Config{Credentials: Credentials{Username: "u", Password: "hunter22"}}}
	for _, tc := range []struct {
		name string
		w    *Writer
		err  error
		want string
	}{
		{"auth required without credentials", none, none.readError(fmt.Errorf("listing: %w", transport.ErrAuthenticationRequired)), configv1alpha1.ReasonCredentialsMissing},
		{"auth required with credentials", withPassword, withPassword.readError(fmt.Errorf("listing: %w", transport.ErrAuthenticationRequired)), configv1alpha1.ReasonAuthenticationFailed},
		{"authorization failed on push", withPassword, withPassword.pushError(transport.ErrAuthorizationFailed), configv1alpha1.ReasonAuthenticationFailed},
		{"ssh key refused", none, none.readError(errors.New("ssh: handshake failed: ssh: unable to authenticate, attempted methods [none publickey]")), configv1alpha1.ReasonAuthenticationFailed},
		{"host key refused", none, none.readError(fmt.Errorf("ssh: handshake failed: %w", &hostKeyError{host: "h", keyType: "ssh-ed25519", fingerprint: "SHA256:x", err: errors.New("key mismatch")})), configv1alpha1.ReasonAuthenticationFailed},
		{"not found", none, none.readError(transport.ErrRepositoryNotFound), configv1alpha1.ReasonRepositoryUnreachable},
		{"connection refused", none, none.readError(errors.New("dial tcp 127.0.0.1:1: connect: connection refused")), configv1alpha1.ReasonRepositoryUnreachable},
		{"hook refused", none, none.pushError(errors.New("the remote refused the push to main: pre-receive hook declined")), configv1alpha1.ReasonPushFailed},
		{"stale push retried out", none, fmt.Errorf("%w: main moved", errStale), configv1alpha1.ReasonPushFailed},
		{"publish failed", none, errors.New("publishing record: timeout"), configv1alpha1.ReasonWriteFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := failureReason(fmt.Errorf("attempt: %w", tc.err)); got != tc.want {
				t.Errorf("reason %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	w := &Writer{cfg: Config{Credentials: Credentials{Password: "hunter22", Token: "ghp_secrettoken"}}}
	got := w.redact("pushing to https://bob:hunter22@git.example.com/x.git: auth ghp_secrettoken refused; hunter22")
	if strings.Contains(got, "hunter22") || strings.Contains(got, "ghp_secrettoken") || strings.Contains(got, "bob:") {
		t.Errorf("redact left credentials: %q", got)
	}
	if !strings.Contains(got, "https://git.example.com/x.git") {
		t.Errorf("redact broke the URL: %q", got)
	}
}
