package changes

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/index"
)

var _ rest.Watcher = &REST{}

const (
	// defaultWatchBuffer is how many new entries a watcher may lag behind the index before it is ended
	// with 429 (client-go backs off and resumes from its last resourceVersion, no relist).
	defaultWatchBuffer = 1024
	// defaultBookmarkInterval spaces the bookmarks of watchers that allow them, so a client resuming
	// after a disconnect starts from a recent resourceVersion even when nothing it selects changed.
	defaultBookmarkInterval = time.Minute
	// watchPageSize is the page in which a watcher reads the index before going live, so that a watch
	// from far back does not hold the whole backlog in memory.
	watchPageSize = 500
)

// Watch implements rest.Watcher. Every change is an ADDED event: records are immutable. The watch
// subscribes to the index before reading it, so no change falls between what it reads and what it
// receives live, and drops live entries at or below what it read, so none comes twice.
//
//   - resourceVersion R (sendInitialEvents unset or false): the entries after R, then live ones; R older
//     than the index retention ends the stream with a 410 Expired error event.
//   - resourceVersion "" or "0" with sendInitialEvents unset, or sendInitialEvents=true: ADDED events for
//     every entry (the current state of an append-only history), then live ones; with
//     sendInitialEvents=true, a BOOKMARK annotated k8s.io/initial-events-end marks the end of the
//     initial events (client-go's WatchList).
//   - resourceVersion "" or "0" with sendInitialEvents=false: live entries only.
//   - allowWatchBookmarks: a BOOKMARK with the current resourceVersion every bookmark interval.
func (r *REST) Watch(ctx context.Context, options *metainternalversion.ListOptions) (watch.Interface, error) {
	if options == nil {
		options = &metainternalversion.ListOptions{}
	}
	scope := index.ListOptions{Cluster: r.cluster, Namespace: genericapirequest.NamespaceValue(ctx)}
	narrow(&scope, options)
	rv := options.ResourceVersion
	initial := options.SendInitialEvents != nil && *options.SendInitialEvents ||
		options.SendInitialEvents == nil && (rv == "" || rv == "0")
	resume := !initial && rv != "" && rv != "0"
	var from uint64
	if resume {
		var err error
		if from, err = strconv.ParseUint(rv, 10, 64); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid resourceVersion %q: history resourceVersions are index sequences", rv))
		}
	}
	match, err := r.selection(ctx, options, false)
	if err != nil {
		return nil, err
	}
	sub := r.reader.Subscribe(r.watchBuffer)
	if !initial && !resume {
		// From now: what the index holds already is neither read nor, arriving live, sent.
		if from, err = r.reader.LastSeq(); err != nil {
			sub.Cancel()
			return nil, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err))
		}
	}
	w := &watcher{
		r:         r,
		sub:       sub,
		result:    make(chan watch.Event),
		stop:      make(chan struct{}),
		scope:     scope,
		match:     match,
		from:      from,
		initial:   initial,
		endMarker: options.SendInitialEvents != nil && *options.SendInitialEvents,
		bookmarks: options.AllowWatchBookmarks,
	}
	go w.run(ctx, resume)
	return w, nil
}

// watcher is one watch request.
type watcher struct {
	r        *REST
	sub      *index.Subscription
	result   chan watch.Event
	stop     chan struct{}
	stopOnce sync.Once

	scope     index.ListOptions
	match     func(*index.Entry) (bool, error)
	from      uint64
	initial   bool
	endMarker bool
	bookmarks bool
}

// Stop implements watch.Interface.
func (w *watcher) Stop() { w.stopOnce.Do(func() { close(w.stop) }) }

// ResultChan implements watch.Interface.
func (w *watcher) ResultChan() <-chan watch.Event { return w.result }

// send delivers an event unless the watch ended.
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

// run reads the index after w.from (all of it for initial events), then follows the subscription.
// resume tells that w.from is a client's resourceVersion, which the index retention may have passed.
func (w *watcher) run(ctx context.Context, resume bool) {
	defer close(w.result)
	defer w.sub.Cancel()
	last := w.from
	if w.initial || resume {
		opts := w.scope
		opts.Match, opts.Limit = w.match, watchPageSize
		if w.initial {
			opts.AfterSeq = 0
		} else {
			opts.AfterSeq = w.from
		}
		for {
			res, err := w.r.reader.List(opts)
			if err != nil {
				w.sendError(ctx, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err)))
				return
			}
			if (resume || opts.AfterSeq > 0) && res.Compacted > opts.AfterSeq {
				w.sendError(ctx, apierrors.NewResourceExpired(fmt.Sprintf(
					"resourceVersion %d is older than the index retention (entries through %d are removed): list again", opts.AfterSeq, res.Compacted)))
				return
			}
			// The first page fixes the snapshot; later pages read the same one.
			opts.MaxSeq = res.LastSeq
			for i := range res.Items {
				if !w.sendEntry(ctx, &res.Items[i]) {
					return
				}
			}
			if res.LastSeq > last {
				last = res.LastSeq
			}
			if !res.More {
				break
			}
			opts.AfterSeq = res.Items[len(res.Items)-1].Seq
		}
		if w.endMarker {
			if !w.sendBookmark(ctx, last, true) {
				return
			}
		}
	}

	var tick <-chan time.Time
	if w.bookmarks {
		t := time.NewTicker(w.r.bookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-w.stop:
			return
		case <-ctx.Done():
			return
		case <-tick:
			if !w.sendBookmark(ctx, last, false) {
				return
			}
		case e, ok := <-w.sub.Entries():
			if !ok {
				if err := w.sub.Err(); err != nil {
					klog.V(2).InfoS("Ending a watch that fell behind", "resource", w.r.groupResource(), "resourceVersion", last, "err", err)
					w.sendError(ctx, apierrors.NewTooManyRequests(fmt.Sprintf(
						"the watch fell behind the history index: watch again from resourceVersion %d", last), 1))
				}
				return
			}
			if e.Seq <= last {
				continue // already read from the index
			}
			last = e.Seq
			if !w.scope.Selects(&e) {
				continue
			}
			if w.match != nil {
				ok, err := w.match(&e)
				if err != nil {
					w.sendError(ctx, apierrors.NewInternalError(err))
					return
				}
				if !ok {
					continue
				}
			}
			if !w.sendEntry(ctx, &e) {
				return
			}
		}
	}
}

func (w *watcher) sendEntry(ctx context.Context, e *index.Entry) bool {
	obj, err := w.r.toObject(e)
	if err != nil {
		w.sendError(ctx, apierrors.NewInternalError(err))
		return false
	}
	return w.send(ctx, watch.Event{Type: watch.Added, Object: obj})
}

// sendBookmark sends an empty object of the kind carrying only the resourceVersion (and the
// initial-events-end annotation), as the apiserver's watch cache does.
func (w *watcher) sendBookmark(ctx context.Context, rv uint64, initialEventsEnd bool) bool {
	obj := w.r.New()
	m, err := meta.Accessor(obj)
	if err != nil {
		w.sendError(ctx, apierrors.NewInternalError(err))
		return false
	}
	m.SetResourceVersion(strconv.FormatUint(rv, 10))
	if initialEventsEnd {
		m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	}
	return w.send(ctx, watch.Event{Type: watch.Bookmark, Object: obj})
}
