package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	versioned "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned"
	"github.com/kubehistory/kubehistory/pkg/generated/informers/externalversions"
	"github.com/kubehistory/kubehistory/test/framework"
)

// historyNS is the namespace of the history API tests: its ConfigMaps and Secrets are tracked into a
// bare repository of its own, and it holds at least minHistory ConfigMap changes.
const (
	historyNS  = "history-e2e"
	minHistory = 100
)

var historySetup struct {
	once sync.Once
	err  error
}

// setupHistory prepares historyNS once for the tests of this file.
func setupHistory(t *testing.T) {
	t.Helper()
	historySetup.once.Do(func() { historySetup.err = makeHistory(t) })
	if historySetup.err != nil {
		t.Fatal(historySetup.err)
	}
}

func makeHistory(t *testing.T) error {
	ctx := context.Background()
	admin := env.plane.AdminKubeconfig
	repo := filepath.Join(env.plane.Dir, "history-e2e.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", "-b", "main", repo).CombinedOutput(); err != nil {
		return fmt.Errorf("git init: %v: %s", err, out)
	}
	setup := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: main, namespace: %[1]s}
spec:
  url: file://%[2]s
---
apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: configmaps-and-secrets, namespace: %[1]s}
spec:
  destinationRef: {name: main}
  rules: [{apiGroups: [""], resources: ["configmaps", "secrets"]}]
`, historyNS, repo)
	if _, err := kubectlAs(admin, setup, "apply", "-f", "-"); err != nil {
		return err
	}
	if err := framework.WaitFor(ctx, 30*time.Second, func() error {
		out, err := kubectlAs(admin, "", "get", "gitdestination", "main", "-n", historyNS, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
		if err == nil && out != "True" {
			err = fmt.Errorf("GitDestination Ready=%q", out)
		}
		return err
	}); err != nil {
		return err
	}
	if err := env.kh.WaitForRules(ctx, framework.Rule{Namespace: historyNS, Name: "configmaps-and-secrets"}); err != nil {
		return err
	}
	var objs bytes.Buffer
	for i := 0; i < minHistory; i++ {
		fmt.Fprintf(&objs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%03d, namespace: %s}\ndata: {i: \"%d\"}\n", i, historyNS, i)
	}
	if _, err := kubectlAs(admin, objs.String(), "apply", "-f", "-"); err != nil {
		return err
	}
	return framework.WaitFor(ctx, 120*time.Second, func() error {
		if n := len(historyNames(t, admin, "")); n < minHistory {
			return fmt.Errorf("%d of %d changes recorded so far", n, minHistory)
		}
		return nil
	})
}

// historyNames lists the change names of historyNS in one request.
func historyNames(t *testing.T, kubeconfig string, fieldSelector string) []string {
	t.Helper()
	args := []string{"get", "resourcechanges", "-n", historyNS, "-o", "name"}
	if fieldSelector != "" {
		args = append(args, "--field-selector", fieldSelector)
	}
	out, err := kubectlAs(kubeconfig, "", args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

// waitForChange waits until admin lists a change of the object.
func waitForChange(t *testing.T, resource, name string) historyv1alpha1.ResourceChange {
	t.Helper()
	var found historyv1alpha1.ResourceChange
	if err := framework.WaitFor(context.Background(), 90*time.Second, func() error {
		items := listChanges(t, env.plane.AdminKubeconfig, historyNS, "--field-selector", "object.resource="+resource+",object.name="+name)
		if len(items) == 0 {
			return fmt.Errorf("no change of %s/%s recorded yet", resource, name)
		}
		found = items[len(items)-1]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return found
}

func restConfigFor(t *testing.T, kubeconfig string) *versioned.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := versioned.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestHistoryPaging lists more than 100 changes in pages of 10 while new changes arrive: kubectl's
// --chunk-size, and a page set read by hand that sees a change indexed between two of its pages.
func TestHistoryPaging(t *testing.T) {
	setupHistory(t)
	admin := env.plane.AdminKubeconfig

	// New changes arrive the whole time kubectl pages; the rounds go on until the history grew under
	// them, so at least one round ran while changes were being indexed.
	stop := make(chan struct{})
	var writer sync.WaitGroup
	var created atomic.Int32
	writer.Add(1)
	go func() {
		defer writer.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := kubectlAs(admin, "", "-n", historyNS, "create", "configmap", fmt.Sprintf("during-chunks-%03d", i), "--from-literal=a=b"); err != nil {
				t.Error(err)
				return
			}
			created.Add(1)
		}
	}()
	first, last := 0, 0
	for round := 0; round < 30 && (round < 3 || last <= first); round++ {
		cmd := exec.Command(framework.Kubectl, "--kubeconfig", admin, "get", "resourcechanges", "-n", historyNS, "--chunk-size=10", "-o", "name", "-v=6")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl --chunk-size=10: %v: %s", err, stderr.String())
		}
		names := strings.Fields(stdout.String())
		seen := map[string]int{}
		for _, n := range names {
			seen[n]++
			if seen[n] == 2 {
				t.Errorf("round %d: %s listed twice", round, n)
			}
		}
		if len(names) < minHistory {
			t.Errorf("round %d: %d changes, want at least %d", round, len(names), minHistory)
		}
		if pages := strings.Count(stderr.String(), "continue="); pages < len(names)/10-1 {
			t.Errorf("round %d: kubectl made %d continued requests for %d changes", round, pages, len(names))
		}
		if round == 0 {
			first = len(names)
		}
		last = len(names)
	}
	close(stop)
	writer.Wait()
	if last <= first {
		t.Errorf("the history did not grow while kubectl paged (%d, then %d changes): nothing shows paging under writes", first, last)
	}
	t.Logf("kubectl --chunk-size=10 listed %d changes, then %d while %d ConfigMaps were created", first, last, created.Load())
	if err := framework.WaitFor(context.Background(), 90*time.Second, func() error {
		if n := len(historyNames(t, admin, "object.resource=configmaps")); n < minHistory+int(created.Load()) {
			return fmt.Errorf("%d ConfigMap changes indexed, want %d", n, minHistory+int(created.Load()))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// By hand: the first page fixes the snapshot; a change indexed after it never shows in that page
	// set, and every page says the snapshot's resourceVersion.
	base := "/apis/history.kubehistory.io/v1alpha1/namespaces/" + historyNS + "/resourcechanges?limit=10"
	var list historyv1alpha1.ResourceChangeList
	get := func(path string) {
		t.Helper()
		list = historyv1alpha1.ResourceChangeList{}
		if err := json.Unmarshal([]byte(kubectl(t, "get", "--raw", path)), &list); err != nil {
			t.Fatal(err)
		}
	}
	get(base)
	snapshot := list.ResourceVersion
	seen := map[string]bool{}
	pages := 0
	for {
		pages++
		if list.ResourceVersion != snapshot {
			t.Errorf("page %d at resourceVersion %s, the page set started at %s", pages, list.ResourceVersion, snapshot)
		}
		for _, it := range list.Items {
			if seen[it.Name] {
				t.Errorf("%s listed twice", it.Name)
			}
			seen[it.Name] = true
			if it.Object.Name == "between-pages" {
				t.Errorf("a change made after the first page shows in its page set")
			}
		}
		if pages == 2 {
			kubectl(t, "-n", historyNS, "create", "configmap", "between-pages", "--from-literal=a=b")
			waitForChange(t, "configmaps", "between-pages")
		}
		if list.Continue == "" {
			break
		}
		get(base + "&continue=" + url.QueryEscape(list.Continue))
	}
	if len(seen) < minHistory {
		t.Errorf("the page set holds %d changes, want at least %d", len(seen), minHistory)
	}
	if after := historyNames(t, admin, ""); len(after) != len(seen)+1 {
		t.Errorf("a list after the page set has %d changes, want the %d of the page set and between-pages", len(after), len(seen))
	}

	// A token the server did not make is a 400.
	_, err := kubectlAs(admin, "", "get", "--raw", base+"&continue=bm90LWEtdG9rZW4")
	if err == nil || !strings.Contains(err.Error(), "BadRequest") || !strings.Contains(err.Error(), "continue") {
		t.Errorf("malformed continue token: want 400 BadRequest, got %v", err)
	}
}

// kubectlWatch runs a watching kubectl command until ctx ends or the test is over; its stdout comes
// line by line (closed when kubectl exits), its stderr is collected for failure messages.
func kubectlWatch(ctx context.Context, t *testing.T, kubeconfig string, args ...string) (<-chan string, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, framework.Kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines, stderr
}

// TestHistoryKubectlWatch runs kubectl get -w and makes a change after it started.
func TestHistoryKubectlWatch(t *testing.T) {
	setupHistory(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lines, stderr := kubectlWatch(ctx, t, env.plane.AdminKubeconfig, "get", "resourcechanges", "-n", historyNS, "-w")
	// The list part first: at least the first history entries, then the change made while watching.
	listed := 0
	for listed < minHistory {
		select {
		case _, ok := <-lines:
			if !ok {
				t.Fatalf("kubectl -w ended: %s", stderr.String())
			}
			listed++
		case <-ctx.Done():
			t.Fatalf("kubectl -w printed %d lines: %s", listed, stderr.String())
		}
	}
	kubectl(t, "-n", historyNS, "create", "configmap", "while-watching", "--from-literal=a=b")
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("kubectl -w ended before the change showed: %s", stderr.String())
			}
			if strings.Contains(line, "configmaps/while-watching") {
				if !strings.Contains(line, "create") || !strings.Contains(line, "admin") {
					t.Errorf("watched row: %q", line)
				}
				return
			}
		case <-ctx.Done():
			t.Fatalf("kubectl -w did not print the new change: %s", stderr.String())
		}
	}
}

// TestHistoryInformer runs a generated informer on ResourceChange (client-go v0.36 uses WatchList: the
// initial events and the initial-events-end bookmark) and waits for a new change in its store.
func TestHistoryInformer(t *testing.T) {
	setupHistory(t)
	// client-go clients get the history API as JSON by default and as protobuf when they ask for it,
	// as kube-apiserver's built-in types: the informer (list, then watch) must work with both.
	for _, contentType := range []string{"application/json", "application/vnd.kubernetes.protobuf"} {
		t.Run(contentType, func(t *testing.T) {
			cfg, err := clientcmd.BuildConfigFromFlags("", env.plane.AdminKubeconfig)
			if err != nil {
				t.Fatal(err)
			}
			cfg.ContentType = contentType
			client, err := versioned.NewForConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			testInformer(t, client, "informer-sees-"+strings.TrimPrefix(contentType[strings.LastIndex(contentType, "/")+1:], "vnd.kubernetes."))
		})
	}
}

func testInformer(t *testing.T, client versioned.Interface, name string) {
	factory := externalversions.NewSharedInformerFactoryWithOptions(client, 0, externalversions.WithNamespace(historyNS))
	inf := factory.History().V1alpha1().ResourceChanges()
	informer := inf.Informer()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	factory.Start(ctx.Done())
	defer func() {
		cancel() // Shutdown waits for the informers, which stop with ctx
		factory.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		t.Fatal("the ResourceChange informer did not sync")
	}
	items, err := inf.Lister().ResourceChanges(historyNS).List(labels.Everything())
	if err != nil || len(items) < minHistory {
		t.Fatalf("synced store holds %d changes (%v), want at least %d", len(items), err, minHistory)
	}
	kubectl(t, "-n", historyNS, "create", "configmap", name, "--from-literal=a=b")
	if err := framework.WaitFor(ctx, 90*time.Second, func() error {
		items, err := inf.Lister().ResourceChanges(historyNS).List(labels.Everything())
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.Object.Name == name && it.Verb == historyv1alpha1.VerbCreate && it.Git.Commit != "" && it.Actor.Username != "" {
				return nil
			}
		}
		return fmt.Errorf("the informer's %d changes miss %s", len(items), name)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestHistoryRBACMirror: alice may read ConfigMaps (not Secrets) in historyNS and sees their history
// only, in list, get and watch; bob, with nothing, is refused.
func TestHistoryRBACMirror(t *testing.T) {
	setupHistory(t)
	ctx := context.Background()
	admin := env.plane.AdminKubeconfig
	rbac := fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-reader, namespace: %[1]s}
rules: [{apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list", "watch"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-configmaps, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-history, namespace: %[1]s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubehistory:history-viewer}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
`, historyNS)
	if _, err := kubectlAs(admin, rbac, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	alice, err := env.plane.Kubeconfig("alice", "developers")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := env.plane.Kubeconfig("bob")
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, "-n", historyNS, "create", "secret", "generic", "hidden", "--from-literal=password=x")
	secretChange := waitForChange(t, "secrets", "hidden")

	// list. New bindings reach kube-apiserver's RBAC cache within moments, and a denial cached before
	// (by the delegated authorizer and the mirror) for some seconds more.
	var aliceSees, adminSees []historyv1alpha1.ResourceChange
	configMaps := 0
	if err := framework.WaitFor(ctx, 60*time.Second, func() error {
		out, err := kubectlAs(alice, "", "get", "resourcechanges", "-n", historyNS, "-o", "json")
		if err != nil {
			return err
		}
		var list historyv1alpha1.ResourceChangeList
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return err
		}
		aliceSees, adminSees = list.Items, listChanges(t, admin, historyNS)
		configMaps = 0
		for _, it := range adminSees {
			if it.Object.Resource == "configmaps" {
				configMaps++
			}
		}
		if len(aliceSees) != configMaps {
			return fmt.Errorf("alice lists %d changes, admin %d ConfigMap changes", len(aliceSees), configMaps)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if configMaps < minHistory {
		t.Errorf("admin lists %d ConfigMap changes, want at least %d", configMaps, minHistory)
	}
	for _, it := range aliceSees {
		if it.Object.Resource != "configmaps" {
			t.Errorf("alice lists a change of %s/%s", it.Object.Resource, it.Object.Name)
		}
	}
	if len(adminSees) == configMaps {
		t.Error("admin lists no Secret change: the test shows nothing")
	}
	if hidden := listChanges(t, alice, historyNS, "--field-selector", "object.resource=secrets"); len(hidden) != 0 {
		t.Errorf("alice lists %d Secret changes by selector", len(hidden))
	}

	// get: a Secret change is NotFound for alice, exactly like a change that does not exist.
	if _, err := kubectlAs(alice, "", "get", "resourcechange", aliceSees[0].Name, "-n", historyNS); err != nil {
		t.Errorf("alice gets a ConfigMap change: %v", err)
	}
	if _, err := kubectlAs(alice, "", "get", "resourcechange", secretChange.Name, "-n", historyNS); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("alice gets a Secret change: want NotFound, got %v", err)
	}

	// watch: the initial events and live ones carry ConfigMaps only.
	client := restConfigFor(t, alice)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	w, err := client.HistoryV1alpha1().ResourceChanges(historyNS).Watch(wctx, metav1.ListOptions{
		SendInitialEvents: boolPtr(true), AllowWatchBookmarks: true, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	initial := 0
	check := func(ev watch.Event) *historyv1alpha1.ResourceChange {
		rc, ok := ev.Object.(*historyv1alpha1.ResourceChange)
		if !ok {
			t.Fatalf("%s event with %T: %v", ev.Type, ev.Object, ev.Object)
		}
		if ev.Type == watch.Added && rc.Object.Resource != "configmaps" {
			t.Errorf("alice's watch shows a change of %s/%s", rc.Object.Resource, rc.Object.Name)
		}
		return rc
	}
	for ended := false; !ended; {
		ev, ok := <-w.ResultChan()
		if !ok {
			t.Fatal("alice's watch ended during the initial events")
		}
		rc := check(ev)
		switch {
		case ev.Type == watch.Added:
			initial++
		case ev.Type == watch.Bookmark && rc.Annotations[metav1.InitialEventsAnnotationKey] == "true":
			ended = true
		}
	}
	if initial < len(aliceSees) {
		t.Errorf("alice's watch sent %d initial events, her list had %d", initial, len(aliceSees))
	}
	kubectl(t, "-n", historyNS, "create", "secret", "generic", "hidden-live", "--from-literal=password=y")
	waitForChange(t, "secrets", "hidden-live")
	kubectl(t, "-n", historyNS, "create", "configmap", "visible-live", "--from-literal=a=b")
	for {
		ev, ok := <-w.ResultChan()
		if !ok {
			t.Fatal("alice's watch ended before visible-live")
		}
		if rc := check(ev); ev.Type == watch.Added && rc.Object.Name == "visible-live" {
			break
		}
	}

	// bob may not read history at all.
	bobClient := restConfigFor(t, bob).HistoryV1alpha1().ResourceChanges(historyNS)
	if _, err := bobClient.List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("bob lists: want Forbidden, got %v", err)
	}
	if _, err := bobClient.Get(ctx, aliceSees[0].Name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("bob gets: want Forbidden, got %v", err)
	}
	if _, err := bobClient.Watch(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("bob watches: want Forbidden, got %v", err)
	}
}

func boolPtr(b bool) *bool { return &b }
