package repostatus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/apis/history"
	"github.com/kubehistory/kubehistory/pkg/index"
)

// Watch implements rest.Watcher over the index's RepoStatus events; resourceVersions are revisions of
// the writers' status bucket. The watch subscribes before it reads, so no event falls between the
// state it sends and the events it follows, and drops events at or below what it read.
//
//   - resourceVersion R (sendInitialEvents unset or false): the events after R, then live ones; R older
//     than the events the index keeps (it keeps the recent ones since it opened) ends the stream with a
//     410 Expired error event, and the client lists again.
//   - resourceVersion "" or "0" with sendInitialEvents unset, or sendInitialEvents=true: ADDED for
//     every current RepoStatus, then live events; with sendInitialEvents=true a BOOKMARK annotated
//     k8s.io/initial-events-end ends the initial events (client-go's WatchList).
//   - resourceVersion "" or "0" with sendInitialEvents=false: live events only.
//
// An event is MODIFIED when the status changed and matches the selectors before and after, ADDED when
// it starts matching (or is new), DELETED when it stops matching or its GitDestination was deleted.
func (r *REST) Watch(ctx context.Context, options *metainternalversion.ListOptions) (watch.Interface, error) {
	if options == nil {
		options = &metainternalversion.ListOptions{}
	}
	u, err := requester(ctx)
	if err != nil {
		return nil, err
	}
	rv := options.ResourceVersion
	initial := options.SendInitialEvents != nil && *options.SendInitialEvents ||
		options.SendInitialEvents == nil && (rv == "" || rv == "0")
	resume := !initial && rv != "" && rv != "0"
	w := &watcher{
		r:         r,
		user:      u,
		namespace: genericapirequest.NamespaceValue(ctx),
		match:     selection(options),
		result:    make(chan watch.Event),
		stop:      make(chan struct{}),
		initial:   initial,
		endMarker: options.SendInitialEvents != nil && *options.SendInitialEvents,
	}
	switch {
	case resume:
		if w.from, err = strconv.ParseUint(rv, 10, 64); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid resourceVersion %q: RepoStatus resourceVersions are revisions of the status bucket", rv))
		}
		w.sub, w.backlog, err = r.reader.WatchRepoStatusesAfter(w.from, r.watchBuffer)
		if errors.Is(err, index.ErrRepoStatusRevisionGone) {
			w.expired = err
		} else if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
	case initial:
		w.sub = r.reader.WatchRepoStatuses(r.watchBuffer)
	default:
		// From now: what the index holds already is neither sent nor, arriving late, followed.
		w.sub = r.reader.WatchRepoStatuses(r.watchBuffer)
		if _, w.from, err = r.reader.ListRepoStatuses(w.namespace); err != nil {
			w.sub.Cancel()
			return nil, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err))
		}
	}
	go w.run(ctx)
	return w, nil
}

type watcher struct {
	r         *REST
	user      user.Info
	namespace string
	match     func(*index.RepoStatusEntry) bool

	sub     *index.RepoStatusWatch
	backlog []index.RepoStatusEvent
	expired error
	from    uint64

	initial   bool
	endMarker bool

	result   chan watch.Event
	stop     chan struct{}
	stopOnce sync.Once
}

// Stop implements watch.Interface.
func (w *watcher) Stop() { w.stopOnce.Do(func() { close(w.stop) }) }

// ResultChan implements watch.Interface.
func (w *watcher) ResultChan() <-chan watch.Event { return w.result }

func (w *watcher) send(ctx context.Context, ev watch.Event) bool {
	select {
	case w.result <- ev:
		return true
	case <-w.stop:
	case <-ctx.Done():
	}
	return false
}

func (w *watcher) sendError(ctx context.Context, err *apierrors.StatusError) {
	w.send(ctx, watch.Event{Type: watch.Error, Object: &err.ErrStatus})
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.result)
	if w.sub != nil {
		defer w.sub.Cancel()
	}
	if w.expired != nil {
		w.sendError(ctx, apierrors.NewResourceExpired(fmt.Sprintf("resourceVersion %d is too old: %v; list again", w.from, w.expired)))
		return
	}
	if w.initial {
		items, rev, err := w.r.reader.ListRepoStatuses(w.namespace)
		if err != nil {
			w.sendError(ctx, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err)))
			return
		}
		for i := range items {
			if ok, err := w.shows(ctx, &items[i]); err != nil {
				w.sendError(ctx, apierrors.NewInternalError(err))
				return
			} else if ok && !w.send(ctx, watch.Event{Type: watch.Added, Object: ToInternal(&items[i])}) {
				return
			}
		}
		w.from = rev
		if w.endMarker && !w.send(ctx, bookmark(rev)) {
			return
		}
	}
	for i := range w.backlog {
		if !w.handle(ctx, &w.backlog[i]) {
			return
		}
	}
	for {
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		case ev, ok := <-w.sub.Events():
			if !ok {
				if err := w.sub.Err(); err != nil {
					klog.V(2).InfoS("Ending a RepoStatus watch that fell behind", "resourceVersion", w.from, "err", err)
					w.sendError(ctx, apierrors.NewTooManyRequests(fmt.Sprintf(
						"the watch fell behind the index: watch again from resourceVersion %d", w.from), 1))
				}
				return
			}
			if !w.handle(ctx, &ev) {
				return
			}
		}
	}
}

// shows says whether the watcher sees a state: in its namespace, selected, and visible to its user.
func (w *watcher) shows(ctx context.Context, e *index.RepoStatusEntry) (bool, error) {
	if w.namespace != "" && e.Namespace != w.namespace || !w.match(e) {
		return false, nil
	}
	return w.r.visible(ctx, w.user, e.Namespace, e.Name)
}

// handle sends the watch event an index event is for this watcher, if any; false ends the watch.
func (w *watcher) handle(ctx context.Context, ev *index.RepoStatusEvent) bool {
	if ev.Entry.Rev <= w.from {
		return true // already in what was sent
	}
	w.from = ev.Entry.Rev
	var before, after bool
	var err error
	if ev.Prev != nil {
		last := *ev.Prev
		if ev.Deleted {
			last = ev.Entry
		}
		if before, err = w.shows(ctx, &last); err != nil {
			w.sendError(ctx, apierrors.NewInternalError(err))
			return false
		}
	}
	if !ev.Deleted {
		if after, err = w.shows(ctx, &ev.Entry); err != nil {
			w.sendError(ctx, apierrors.NewInternalError(err))
			return false
		}
	}
	var typ watch.EventType
	switch {
	case after && before:
		typ = watch.Modified
	case after:
		typ = watch.Added
	case before:
		typ = watch.Deleted
	default:
		return true
	}
	obj := ToInternal(&ev.Entry)
	if typ == watch.Deleted && !ev.Deleted {
		// It stopped matching: the last state it matched in, at this revision.
		obj = ToInternal(ev.Prev)
		obj.ResourceVersion = strconv.FormatUint(ev.Entry.Rev, 10)
	}
	return w.send(ctx, watch.Event{Type: typ, Object: obj})
}

// bookmark is the initial-events-end bookmark: an empty RepoStatus carrying the resourceVersion.
func bookmark(rev uint64) watch.Event {
	obj := &history.RepoStatus{}
	obj.ResourceVersion = strconv.FormatUint(rev, 10)
	obj.Annotations = map[string]string{metav1.InitialEventsAnnotationKey: "true"}
	return watch.Event{Type: watch.Bookmark, Object: obj}
}
