package changes

import (
	"fmt"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
)

// next returns the next event; the deadline only keeps a broken watch from hanging the test.
func next(t *testing.T, w watch.Interface) (watch.Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		return ev, ok
	case <-time.After(30 * time.Second):
		t.Fatal("no event")
	}
	return watch.Event{}, false
}

func rvOf(t *testing.T, ev watch.Event) string {
	t.Helper()
	m, err := meta.Accessor(ev.Object)
	if err != nil {
		t.Fatalf("%s event with %T", ev.Type, ev.Object)
	}
	return m.GetResourceVersion()
}

// expectAdded reads ADDED events for exactly the sequences from..to.
func expectAdded(t *testing.T, w watch.Interface, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		ev, ok := next(t, w)
		if !ok || ev.Type != watch.Added || rvOf(t, ev) != fmt.Sprint(seq) {
			t.Fatalf("want ADDED %d, got %v %s (open %v)", seq, ev.Type, rvOf(t, ev), ok)
		}
	}
}

func startWatch(t *testing.T, r *REST, opts *metainternalversion.ListOptions) watch.Interface {
	t.Helper()
	w, err := r.Watch(nsCtx("team-a"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

func TestWatchResumesWithoutLossOrDuplicates(t *testing.T) {
	x := newIndex(t, 10)
	r := NewResourceChanges(x, allowAll{})
	w := startWatch(t, r, &metainternalversion.ListOptions{ResourceVersion: "4"})
	expectAdded(t, w, 5, 10)
	for seq := uint64(11); seq <= 12; seq++ {
		add(t, x, seq, record(seq, "", "configmaps", "team-a", "live"))
	}
	expectAdded(t, w, 11, 12)

	// Changes keep arriving while watches start: each one sees every sequence after its
	// resourceVersion once, in order, whether it came from the index read or live.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for seq := uint64(13); seq <= 400; seq++ {
			add(t, x, seq, record(seq, "", "configmaps", "team-a", "busy"))
		}
	}()
	for _, from := range []uint64{12, 50, 100} {
		w := startWatch(t, r, &metainternalversion.ListOptions{ResourceVersion: fmt.Sprint(from)})
		expectAdded(t, w, from+1, 400)
		w.Stop()
	}
	wg.Wait()
}

func TestWatchInitialEvents(t *testing.T) {
	x := newIndex(t, 10)
	add(t, x, 11, record(11, "", "configmaps", "team-b", "elsewhere"))
	r := NewResourceChanges(x, allowAll{})

	// resourceVersion "" (or "0"): the current state as ADDED events, then live ones, no bookmark.
	plain := startWatch(t, r, &metainternalversion.ListOptions{})
	expectAdded(t, plain, 1, 10)

	// WatchList: the state, then the initial-events-end bookmark at the snapshot, then live ones.
	wl := startWatch(t, r, &metainternalversion.ListOptions{
		SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
	})
	expectAdded(t, wl, 1, 10)
	ev, _ := next(t, wl)
	if ev.Type != watch.Bookmark || rvOf(t, ev) != "11" {
		t.Fatalf("want the initial-events-end BOOKMARK at 11, got %v %s", ev.Type, rvOf(t, ev))
	}
	if m, _ := meta.Accessor(ev.Object); m.GetAnnotations()[metav1.InitialEventsAnnotationKey] != "true" {
		t.Errorf("bookmark annotations: %v", m.GetAnnotations())
	}

	// sendInitialEvents=false from "": live changes only.
	live := startWatch(t, r, &metainternalversion.ListOptions{SendInitialEvents: ptr.To(false), ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	add(t, x, 12, record(12, "", "configmaps", "team-a", "live"))
	expectAdded(t, plain, 12, 12)
	expectAdded(t, wl, 12, 12)
	expectAdded(t, live, 12, 12)
}

func TestWatchSelectorsAndBookmarks(t *testing.T) {
	x := newIndex(t, 20)
	r := NewResourceChanges(x, allowAll{})
	r.bookmarkInterval = 5 * time.Millisecond
	w := startWatch(t, r, &metainternalversion.ListOptions{
		ResourceVersion: "0", AllowWatchBookmarks: true, FieldSelector: fields.OneTermEqualSelector("object.name", "cm-3"),
	})
	// cm-3 is at 3, 10 and 17; later at 24 live. Bookmarks come in between, never with the annotation.
	want := []string{"3", "10", "17", "24"}
	added := false
	for len(want) > 0 {
		ev, ok := next(t, w)
		if !ok {
			t.Fatal("watch closed")
		}
		switch ev.Type {
		case watch.Bookmark:
			if m, _ := meta.Accessor(ev.Object); m.GetAnnotations()[metav1.InitialEventsAnnotationKey] != "" {
				t.Errorf("a periodic bookmark carries the initial-events-end annotation")
			}
			if !added {
				for seq := uint64(21); seq <= 24; seq++ {
					add(t, x, seq, record(seq, "", "configmaps", "team-a", fmt.Sprintf("cm-%d", seq%7)))
				}
				added = true
			}
		case watch.Added:
			if got := rvOf(t, ev); got != want[0] {
				t.Fatalf("got change %s, want %s", got, want[0])
			}
			want = want[1:]
		default:
			t.Fatalf("unexpected %v", ev.Type)
		}
	}
}

func TestWatchTooOld(t *testing.T) {
	x := newIndex(t, 10)
	if _, err := x.Compact(5); err != nil {
		t.Fatal(err)
	}
	r := NewResourceChanges(x, allowAll{})
	w := startWatch(t, r, &metainternalversion.ListOptions{ResourceVersion: "3"})
	ev, ok := next(t, w)
	if !ok || ev.Type != watch.Error {
		t.Fatalf("want an error event, got %v", ev.Type)
	}
	if err := apierrors.FromObject(ev.Object); !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Errorf("want 410 Expired, got %v", err)
	}
	if _, ok := next(t, w); ok {
		t.Error("the watch goes on after the 410")
	}
	// At the retention mark the entries after it are all there.
	expectAdded(t, startWatch(t, r, &metainternalversion.ListOptions{ResourceVersion: "5"}), 6, 10)
	if _, err := r.Watch(nsCtx("team-a"), &metainternalversion.ListOptions{ResourceVersion: "abc"}); !apierrors.IsBadRequest(err) {
		t.Errorf("resourceVersion abc: want 400, got %v", err)
	}
}

func TestSlowWatcherIsEndedNotWaitedFor(t *testing.T) {
	x := newIndex(t, 0)
	r := NewResourceChanges(x, allowAll{})
	r.watchBuffer = 2
	w := startWatch(t, r, &metainternalversion.ListOptions{SendInitialEvents: ptr.To(false), ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	// Nobody reads the watch: Add must still return for every change (a blocked Add would hang here).
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := uint64(1); seq <= 50; seq++ {
			add(t, x, seq, record(seq, "", "configmaps", "team-a", "fast"))
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Add blocked on a slow watcher")
	}
	var last watch.Event
	n := 0
	for {
		ev, ok := next(t, w)
		if !ok {
			break
		}
		last = ev
		n++
	}
	if last.Type != watch.Error || !apierrors.IsTooManyRequests(apierrors.FromObject(last.Object)) {
		t.Fatalf("the slow watch ended with %v %v, want a 429 error event", last.Type, last.Object)
	}
	if n < 2 || n > 4 {
		t.Errorf("%d events before the end, want the buffered ones and the error", n)
	}
	// Another watcher is not affected, and the index goes on.
	expectAdded(t, startWatch(t, r, &metainternalversion.ListOptions{ResourceVersion: "48"}), 49, 50)
}
