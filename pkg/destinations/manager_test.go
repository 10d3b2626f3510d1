package destinations

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	configfake "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned/fake"
	configlisters "github.com/kubehistory/kubehistory/pkg/generated/listers/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/gitwriter"
	"github.com/kubehistory/kubehistory/pkg/installkey"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"--git-dir", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v: %s", args, err, out)
	}
	return string(out)
}

// Two replicas' managers share one destination: only the lease holder writes, and when it stops the
// other one takes over; every change is committed exactly once.
func TestOneWriterPerDestinationAndFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	repo := filepath.Join(dir, "history.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	js, err := queue.StartEmbedded(queue.EmbeddedOptions{DataDir: filepath.Join(dir, "nats"), InProcessOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer js.Shutdown()
	q, err := js.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pub, err := queue.NewPublisher(q, queue.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(ctx, q, 1); err != nil {
		t.Fatal(err)
	}

	gd := &configv1alpha1.GitDestination{
		ObjectMeta: metav1.ObjectMeta{Name: "history", Namespace: "team-a", Generation: 1},
		Spec:       configv1alpha1.GitDestinationSpec{URL: "file://" + repo, Branch: "main", CommitWindow: &metav1.Duration{Duration: 200 * time.Millisecond}},
	}
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	if err := indexer.Add(gd); err != nil {
		t.Fatal(err)
	}
	lister := configlisters.NewGitDestinationLister(indexer)
	kube := kubefake.NewSimpleClientset() // the Lease lives here, shared by both replicas
	client := configfake.NewSimpleClientset(gd)
	holder := func() string {
		l, err := kube.CoordinationV1().Leases("kubehistory-system").Get(ctx, LeaseName(change.DestinationRef{Namespace: "team-a", Name: "history"}), metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	// Only the lease holder writes the status; the informer follows the writes.
	var wrongWriter atomic.Value
	client.PrependReactor("update", "gitdestinations", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "status" {
			return false, nil, nil
		}
		u := a.(k8stesting.UpdateAction).GetObject().(*configv1alpha1.GitDestination)
		if h := holder(); u.Status.Writer != h {
			wrongWriter.Store(fmt.Sprintf("status written by %q while %q holds the lease", u.Status.Writer, h))
		}
		_ = indexer.Update(u.DeepCopy())
		return false, nil, nil
	})
	status := func() configv1alpha1.GitDestinationStatus {
		g, err := client.ConfigV1alpha1().GitDestinations("team-a").Get(ctx, "history", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return g.Status
	}
	readyBy := func(writer, reason string) func() bool {
		return func() bool {
			st := status()
			c := meta.FindStatusCondition(st.Conditions, configv1alpha1.ConditionReady)
			return c != nil && c.Status == metav1.ConditionTrue && c.Reason == reason && c.ObservedGeneration == 1 &&
				st.ObservedGeneration == 1 && st.Writer == writer
		}
	}

	newManager := func(replica string) (*Manager, context.CancelFunc, chan struct{}) {
		m := New(Options{DataDir: filepath.Join(dir, replica), Identity: replica, Resync: time.Second, LeaseDuration: 3 * time.Second,
			Key: installkey.ForTest("destinations"), AllowedURLSchemes: []string{"file"}},
			lister, kube, client, q, nil)
		mctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); m.Run(mctx) }()
		return m, stop, done
	}
	_, stopA, doneA := newManager("replica-a")
	waitFor(t, func() bool { return holder() == "replica-a" })
	// Ready before any change: the writer read the (empty) branch.
	waitFor(t, readyBy("replica-a", configv1alpha1.ReasonRepositoryReachable))
	_, stopB, doneB := newManager("replica-b")
	defer func() { stopB(); <-doneB }()

	publish := func(names ...string) {
		t.Helper()
		var cs []change.Change
		for _, n := range names {
			obj := change.Object{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: "team-a", Name: n, ResourceVersion: "1"}
			dest := change.DestinationRef{Namespace: "team-a", Name: "history"}
			cs = append(cs, change.Change{
				Fields: change.Fields{Object: obj, Verb: change.VerbCreate, Source: change.SourceAudit,
					Actor: change.Actor{Username: "alice"}, ChangeID: change.ID(dest, "audit-"+n, obj), ChangeTime: metav1.NowMicro()},
				Destination: dest,
				Body:        []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q,"namespace":"team-a","resourceVersion":"1"},"data":{"k":"v"}}`, n)),
			})
		}
		if err := pub.Publish(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	files := func() string {
		out, err := exec.Command("git", "--git-dir", repo, "ls-tree", "-r", "--name-only", "main").CombinedOutput()
		if err != nil {
			return ""
		}
		return string(out)
	}
	publish("one", "two")
	waitFor(t, func() bool { return strings.Count(files(), ".yaml") == 2 })
	if h := holder(); h != "replica-a" {
		t.Fatalf("lease holder %q while replica-a runs", h)
	}
	waitFor(t, readyBy("replica-a", configv1alpha1.ReasonPushed))
	head := strings.TrimSpace(git(t, repo, "rev-parse", "main"))
	waitFor(t, func() bool {
		st := status()
		return st.HeadCommit == head && st.LastPushTime != nil && st.PendingChanges == 0
	})

	// replica-a stops (releasing its lease); replica-b takes the destination over.
	stopA()
	<-doneA
	waitFor(t, func() bool { return holder() == "replica-b" })
	publish("three")
	waitFor(t, func() bool { return strings.Count(files(), ".yaml") == 3 })
	waitFor(t, readyBy("replica-b", configv1alpha1.ReasonPushed))
	if w, _ := wrongWriter.Load().(string); w != "" {
		t.Error(w)
	}

	ids := map[string]int{}
	for _, line := range strings.Split(git(t, repo, "log", "--format=%(trailers:key=Kubehistory-Change-Id,valueonly)", "main"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			ids[line]++
		}
	}
	if len(ids) != 3 {
		t.Errorf("change IDs in Git: %v, want 3", ids)
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("change %s committed %d times", id, n)
		}
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestConfigHashSeesChanges(t *testing.T) {
	a := gitwriter.Config{URL: "https://example.com/a.git", Hooks: gitwriter.Hooks{AfterPush: func() error { return nil }}}
	b := a
	b.URL = "https://example.com/b.git"
	if configHash(a) == configHash(b) {
		t.Fatal("two configs with different URLs hash the same: writers would not restart on a change")
	}
	c := a
	c.SensitivePaths = []string{"*:spec.password"}
	if configHash(a) == configHash(c) {
		t.Fatal("a new sensitive path does not restart the writer")
	}
}

// A tenant's GitDestination cannot make kubehistory send credentials over a scheme the operator did not
// allow (the URL is refused before the Secret is read), nor read a Secret that did not opt in as Git
// credentials; a labelled Secret is used.
func TestConfigRefusesUnsafeDestinations(t *testing.T) {
	kube := kubefake.NewSimpleClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "sa-token"}, Data: map[string][]byte{"token": []byte("x")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "git", Labels: map[string]string{CredentialsLabel: "true"}},
			Data: map[string][]byte{"username": []byte("u"), "password": []byte("p")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ssh"}, Type: CredentialsSecretType,
			Data: map[string][]byte{"ssh-privatekey": []byte("key"), "known_hosts": []byte("git.example ssh-ed25519 AAAA")}},
	)
	m := New(Options{Key: installkey.ForTest("destinations")}, nil, kube, nil, nil, nil)
	gd := func(url, secret string) *configv1alpha1.GitDestination {
		g := &configv1alpha1.GitDestination{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "d"},
			Spec: configv1alpha1.GitDestinationSpec{URL: url, Branch: "main"}}
		if secret != "" {
			g.Spec.CredentialsSecretRef = &configv1alpha1.SecretReference{Name: secret}
		}
		return g
	}
	for _, tc := range []struct {
		name, url, secret, reason string
	}{
		{"http is not allowed by default", "http://attacker.example/x.git", "git", configv1alpha1.ReasonURLSchemeNotAllowed},
		{"file reaches the server's disk", "file:///var/lib/kubehistory/git/other/d", "", configv1alpha1.ReasonURLSchemeNotAllowed},
		{"unknown scheme", "ftp://x/y", "", configv1alpha1.ReasonURLSchemeNotAllowed},
		{"a Secret that did not opt in", "https://git.example/x.git", "sa-token", configv1alpha1.ReasonCredentialsNotOptedIn},
		{"opted-in credentials over https", "https://git.example/x.git", "git", ""},
		{"scp-style ssh without credentials", "git@git.example:x.git", "", configv1alpha1.ReasonCredentialsMissing},
		{"ssh with a Secret lacking known_hosts", "ssh://git@git.example/x.git", "git", configv1alpha1.ReasonCredentialsMissing},
		{"scp-style ssh with key and known_hosts", "git@git.example:x.git", "ssh", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kube.ClearActions()
			cfg, reason, err := m.config(context.Background(), gd(tc.url, tc.secret))
			if reason != tc.reason {
				t.Fatalf("reason %q (err %v), want %q", reason, err, tc.reason)
			}
			if tc.reason == configv1alpha1.ReasonURLSchemeNotAllowed && len(kube.Actions()) > 0 {
				t.Errorf("the credentials Secret was read for a refused URL: %v", kube.Actions())
			}
			if tc.reason == "" && (cfg.Key.IsZero() || cfg.KeyID == "") {
				t.Error("writer config without the installation key")
			}
		})
	}
}

// The lease holder reports why a destination cannot be written (a missing credentials Secret) and a
// remote that refuses pushes (PushFailed with the pending change); when the GitDestination is deleted
// its RepoStatus is removed from the status bucket.
func TestStatusReportsFailuresAndDeletion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	repo := filepath.Join(dir, "frozen.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(repo, "hooks", "pre-receive"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	js, err := queue.StartEmbedded(queue.EmbeddedOptions{DataDir: filepath.Join(dir, "nats"), InProcessOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer js.Shutdown()
	q, err := js.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pub, err := queue.NewPublisher(q, queue.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(ctx, q, 1); err != nil {
		t.Fatal(err)
	}
	frozen := &configv1alpha1.GitDestination{
		ObjectMeta: metav1.ObjectMeta{Name: "frozen", Namespace: "team-a", Generation: 2},
		Spec:       configv1alpha1.GitDestinationSpec{URL: "file://" + repo, Branch: "main", CommitWindow: &metav1.Duration{Duration: 100 * time.Millisecond}},
	}
	nocreds := &configv1alpha1.GitDestination{
		ObjectMeta: metav1.ObjectMeta{Name: "nocreds", Namespace: "team-a", Generation: 1},
		Spec: configv1alpha1.GitDestinationSpec{URL: "https://git.example.invalid/x.git", Branch: "main",
			CredentialsSecretRef: &configv1alpha1.SecretReference{Name: "missing"}},
	}
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, gd := range []*configv1alpha1.GitDestination{frozen, nocreds} {
		if err := indexer.Add(gd); err != nil {
			t.Fatal(err)
		}
	}
	client := configfake.NewSimpleClientset(frozen, nocreds)
	client.PrependReactor("update", "gitdestinations", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			_ = indexer.Update(a.(k8stesting.UpdateAction).GetObject().DeepCopyObject())
		}
		return false, nil, nil
	})
	m := New(Options{DataDir: filepath.Join(dir, "data"), Identity: "replica-a", Resync: time.Second, LeaseDuration: 3 * time.Second,
		Key: installkey.ForTest("destinations"), AllowedURLSchemes: []string{"file", "https"}},
		configlisters.NewGitDestinationLister(indexer), kubefake.NewSimpleClientset(), client, q, nil)
	mctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(mctx) }()
	defer func() { stop(); <-done }()

	ready := func(name string) (*metav1.Condition, configv1alpha1.GitDestinationStatus) {
		g, err := client.ConfigV1alpha1().GitDestinations("team-a").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return meta.FindStatusCondition(g.Status.Conditions, configv1alpha1.ConditionReady), g.Status
	}
	waitFor(t, func() bool {
		c, st := ready("nocreds")
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == configv1alpha1.ReasonCredentialsMissing &&
			strings.Contains(c.Message, "team-a/missing not found") && st.ObservedGeneration == 1 && st.Writer == "replica-a"
	})

	// Its RepoStatus says the same.
	kv, err := q.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		st, err := kv.Get(ctx, change.DestinationRef{Namespace: "team-a", Name: "nocreds"})
		c := meta.FindStatusCondition(st.Conditions, configv1alpha1.ConditionReady)
		return err == nil && c != nil && c.Status == metav1.ConditionFalse && c.Reason == configv1alpha1.ReasonCredentialsMissing
	})

	dest := change.DestinationRef{Namespace: "team-a", Name: "frozen"}
	obj := change.Object{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: "team-a", Name: "web", ResourceVersion: "1"}
	if err := pub.Publish(ctx, []change.Change{{
		Fields: change.Fields{Object: obj, Verb: change.VerbCreate, Source: change.SourceAudit,
			Actor: change.Actor{Username: "alice"}, ChangeID: change.ID(dest, "audit-web", obj), ChangeTime: metav1.NowMicro()},
		Destination: dest,
		Body:        []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"web","namespace":"team-a","resourceVersion":"1"}}`),
	}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		c, st := ready("frozen")
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == configv1alpha1.ReasonPushFailed && c.ObservedGeneration == 2 &&
			strings.Contains(c.Message, "refused the push") && st.PendingChanges == 1 && st.OldestPendingTime != nil
	})

	if _, err := kv.Get(ctx, dest); err != nil {
		t.Fatalf("no RepoStatus for a running writer: %v", err)
	}
	if err := client.ConfigV1alpha1().GitDestinations("team-a").Delete(ctx, "frozen", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := indexer.Delete(frozen); err != nil {
		t.Fatal(err)
	}
	m.Trigger()
	waitFor(t, func() bool {
		_, err := kv.Get(ctx, dest)
		return errors.Is(err, queue.ErrStatusNotFound)
	})
}
