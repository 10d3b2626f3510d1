package destinations

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
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
	nc, err := js.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := queue.NewPublisher(nc, queue.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.EnsureStreams(ctx, pub.JetStream(), 1); err != nil {
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

	newManager := func(replica string) (*Manager, context.CancelFunc, chan struct{}) {
		m := New(Options{DataDir: filepath.Join(dir, replica), Identity: replica, Resync: time.Second, LeaseDuration: 3 * time.Second,
			Key: installkey.ForTest("destinations"), AllowedURLSchemes: []string{"file"}},
			lister, kube, client, pub.JetStream(), nil)
		mctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); m.Run(mctx) }()
		return m, stop, done
	}
	_, stopA, doneA := newManager("replica-a")
	holder := func() string {
		l, err := kube.CoordinationV1().Leases("kubehistory-system").Get(ctx, LeaseName(change.DestinationRef{Namespace: "team-a", Name: "history"}), metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	waitFor(t, func() bool { return holder() == "replica-a" })
	_, stopB, doneB := newManager("replica-b")
	defer func() { stopB(); <-doneB }()

	publish := func(names ...string) {
		t.Helper()
		var cs []change.Change
		for _, n := range names {
			obj := historyv1alpha1.ChangedObject{Version: "v1", Resource: "configmaps", Kind: "ConfigMap", Namespace: "team-a", Name: n, ResourceVersion: "1"}
			dest := change.DestinationRef{Namespace: "team-a", Name: "history"}
			cs = append(cs, change.Change{
				Change: historyv1alpha1.Change{Object: obj, Verb: historyv1alpha1.VerbCreate, Source: historyv1alpha1.SourceAudit,
					Actor: historyv1alpha1.Actor{Username: "alice"}, ChangeID: change.ID(dest, "audit-"+n, obj), ChangeTime: metav1.NowMicro()},
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

	// replica-a stops (releasing its lease); replica-b takes the destination over.
	stopA()
	<-doneA
	waitFor(t, func() bool { return holder() == "replica-b" })
	publish("three")
	waitFor(t, func() bool { return strings.Count(files(), ".yaml") == 3 })

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
		{"scp-style ssh", "git@git.example:x.git", "", ""},
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
