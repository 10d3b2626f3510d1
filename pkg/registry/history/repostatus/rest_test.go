package repostatus

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/utils/ptr"

	"github.com/kubehistory/kubehistory/apis/history"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
)

// hidden lets everyone see every RepoStatus but those named in it.
type hidden map[string]bool

func (h hidden) MayGetNamed(_ context.Context, _ user.Info, _, _, namespace, name string) (bool, error) {
	return !h[namespace+"/"+name], nil
}

func ctxIn(ns string) context.Context {
	return genericapirequest.WithUser(genericapirequest.WithNamespace(context.Background(), ns), &user.DefaultInfo{Name: "viewer"})
}

func openIndex(t *testing.T) *index.Index {
	t.Helper()
	x, err := index.Open(filepath.Join(t.TempDir(), "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = x.Close() })
	return x
}

func put(t *testing.T, x *index.Index, ns, name string, rev uint64, branch, head string) {
	t.Helper()
	if err := x.PutRepoStatus(index.RepoStatusEntry{Namespace: ns, Name: name, Rev: rev,
		State: change.RepoState{Branch: branch, HeadCommit: head, Repository: "https://git.example.com/" + name}}); err != nil {
		t.Fatal(err)
	}
}

func fieldSel(t *testing.T, s string) *metainternalversion.ListOptions {
	t.Helper()
	sel, err := fields.ParseSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return &metainternalversion.ListOptions{FieldSelector: sel}
}

func names(l *history.RepoStatusList) string {
	var out []string
	for _, it := range l.Items {
		out = append(out, it.Namespace+"/"+it.Name)
	}
	return strings.Join(out, ",")
}

func TestListSelectsAndHides(t *testing.T) {
	x := openIndex(t)
	put(t, x, "team-a", "main", 1, "main", "aaa")
	put(t, x, "team-a", "audit", 2, "audit", "bbb")
	put(t, x, "team-a", "secret", 3, "main", "ccc")
	put(t, x, "team-b", "main", 4, "main", "ddd")
	r := New(x, hidden{"team-a/secret": true})
	for _, tc := range []struct {
		name, ns string
		opts     *metainternalversion.ListOptions
		want     string
	}{
		{"namespace", "team-a", nil, "team-a/audit,team-a/main"},
		{"all namespaces", "", nil, "team-a/audit,team-a/main,team-b/main"},
		{"branch", "", fieldSel(t, "status.branch=main"), "team-a/main,team-b/main"},
		{"head", "team-a", fieldSel(t, "status.headCommit=bbb"), "team-a/audit"},
		{"not branch", "team-a", fieldSel(t, "status.branch!=main"), "team-a/audit"},
		{"name", "", fieldSel(t, "metadata.name=main,metadata.namespace=team-b"), "team-b/main"},
		{"label selector: no labels", "", &metainternalversion.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{"a": "b"})}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := r.List(ctxIn(tc.ns), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			l := obj.(*history.RepoStatusList)
			if got := names(l); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if l.ResourceVersion != "4" {
				t.Errorf("list resourceVersion %q, want 4", l.ResourceVersion)
			}
		})
	}
	if _, err := r.Get(ctxIn("team-a"), "secret", nil); !apierrors.IsNotFound(err) {
		t.Errorf("get of a hidden RepoStatus: %v", err)
	}
	obj, err := r.Get(ctxIn("team-a"), "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rs := obj.(*history.RepoStatus); rs.Status.HeadCommit != "aaa" || rs.ResourceVersion != "1" {
		t.Errorf("get: %+v", rs)
	}
}

func TestToInternalBoundsOrphans(t *testing.T) {
	st := change.RepoState{}
	for i := 0; i < 150; i++ {
		st.Orphans = append(st.Orphans, change.RepoOrphan{Path: fmt.Sprintf("f%03d.yaml", i), Reason: "ObjectGone"})
	}
	rs := ToInternal(&index.RepoStatusEntry{Namespace: "a", Name: "b", Rev: 1, State: st})
	if len(rs.Status.Orphans) != history.MaxOrphansListed || rs.Status.OrphanCount != 150 || rs.Status.Orphans[0].Reason != history.OrphanObjectGone {
		t.Errorf("orphans %d, count %d", len(rs.Status.Orphans), rs.Status.OrphanCount)
	}
}

func next(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("watch closed")
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event")
	}
	return watch.Event{}
}

// expect reads the next event and checks its type, name, resourceVersion and head.
func expect(t *testing.T, w watch.Interface, typ watch.EventType, name, rv, head string) {
	t.Helper()
	ev := next(t, w)
	rs, ok := ev.Object.(*history.RepoStatus)
	if !ok || ev.Type != typ || rs.Name != name || rs.ResourceVersion != rv || rs.Status.HeadCommit != head {
		t.Fatalf("got %s %+v, want %s %s rv %s head %s", ev.Type, ev.Object, typ, name, rv, head)
	}
}

func startWatch(t *testing.T, r *REST, ns string, opts *metainternalversion.ListOptions) watch.Interface {
	t.Helper()
	w, err := r.Watch(ctxIn(ns), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// TestWatch: initial events then updates, a delete, the end-of-initial-events bookmark, a field
// selector's ADDED/DELETED as a status starts or stops matching, resuming from a list's
// resourceVersion, and 410 for a revision the index no longer keeps events after.
func TestWatch(t *testing.T) {
	x := openIndex(t)
	put(t, x, "team-a", "main", 1, "main", "h1")
	put(t, x, "team-b", "other", 2, "main", "o1")
	r := New(x, hidden{"team-a/hidden": true})

	w := startWatch(t, r, "team-a", &metainternalversion.ListOptions{SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true})
	expect(t, w, watch.Added, "main", "1", "h1")
	if ev := next(t, w); ev.Type != watch.Bookmark || ev.Object.(*history.RepoStatus).Annotations[metav1.InitialEventsAnnotationKey] != "true" ||
		ev.Object.(*history.RepoStatus).ResourceVersion != "2" {
		t.Fatalf("want the initial-events-end bookmark at 2, got %s %+v", ev.Type, ev.Object)
	}
	put(t, x, "team-b", "other", 3, "main", "o2") // another namespace: not seen
	put(t, x, "team-a", "hidden", 4, "main", "x") // not visible: not seen
	put(t, x, "team-a", "main", 5, "main", "h2")
	expect(t, w, watch.Modified, "main", "5", "h2")
	put(t, x, "team-a", "audit", 6, "audit", "a1")
	expect(t, w, watch.Added, "audit", "6", "a1")
	if err := x.DeleteRepoStatus("team-a", "audit", 7); err != nil {
		t.Fatal(err)
	}
	expect(t, w, watch.Deleted, "audit", "7", "a1")

	// A field selector: leaving it is a DELETED, entering it an ADDED.
	sel := fieldSel(t, "status.branch=main")
	sel.ResourceVersion = "7"
	ws := startWatch(t, r, "team-a", sel)
	put(t, x, "team-a", "main", 8, "elsewhere", "h3")
	expect(t, ws, watch.Deleted, "main", "8", "h2")
	put(t, x, "team-a", "main", 9, "main", "h4")
	expect(t, ws, watch.Added, "main", "9", "h4")

	// Resuming from an older revision replays what happened since, once.
	wr := startWatch(t, r, "team-a", &metainternalversion.ListOptions{ResourceVersion: "5"})
	expect(t, wr, watch.Added, "audit", "6", "a1")
	expect(t, wr, watch.Deleted, "audit", "7", "a1")
	expect(t, wr, watch.Modified, "main", "8", "h3")
	expect(t, wr, watch.Modified, "main", "9", "h4")

	// From now: nothing already there.
	wn := startWatch(t, r, "team-a", &metainternalversion.ListOptions{SendInitialEvents: ptr.To(false)})
	put(t, x, "team-a", "main", 10, "main", "h5")
	expect(t, wn, watch.Modified, "main", "10", "h5")

	// A status new to the watcher's revision is ADDED.
	put(t, x, "team-a", "fresh", 11, "main", "f1")
	expect(t, wn, watch.Added, "fresh", "11", "f1")

	if _, err := r.Watch(ctxIn("team-a"), &metainternalversion.ListOptions{ResourceVersion: "abc"}); !apierrors.IsBadRequest(err) {
		t.Errorf("a malformed resourceVersion: %v", err)
	}
}

// TestWatchExpired: after a reopen the index keeps no events from before; resuming there is a 410.
func TestWatchExpired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.db")
	x, err := index.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	put(t, x, "team-a", "main", 1, "main", "h1")
	put(t, x, "team-a", "main", 2, "main", "h2")
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if x, err = index.Open(path); err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	w := startWatch(t, New(x, hidden{}), "team-a", &metainternalversion.ListOptions{ResourceVersion: "1"})
	ev := next(t, w)
	if st, ok := ev.Object.(*metav1.Status); ev.Type != watch.Error || !ok || st.Code != 410 {
		t.Fatalf("want a 410 error event, got %s %+v", ev.Type, ev.Object)
	}
}
