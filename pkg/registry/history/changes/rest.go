// Package changes is the REST storage of resourcechanges (namespaced) and clusterresourcechanges
// (cluster-scoped): read-only get, list and watch over the index, with a table for kubectl. Lists page
// through exact snapshots (paging.go); every item is shown only to a user who may get the changed
// object (the RBAC mirror, pkg/registry/access).
package changes

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/kubehistory/kubehistory/apis/history"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/registry"
)

// REST serves one of the two change resources.
type REST struct {
	reader  registry.ChangeReader
	access  registry.ChangeAccess
	cluster bool

	// watchBuffer and bookmarkInterval tune watches (tests shorten them).
	watchBuffer      int
	bookmarkInterval time.Duration
}

var (
	_ rest.Storage              = &REST{}
	_ rest.Scoper               = &REST{}
	_ rest.SingularNameProvider = &REST{}
	_ rest.Getter               = &REST{}
	_ rest.Lister               = &REST{}
	_ rest.TableConvertor       = &REST{}
	_ rest.ShortNamesProvider   = &REST{}
	_ rest.CategoriesProvider   = &REST{}
)

// NewResourceChanges returns the storage of the namespaced resourcechanges; access decides which
// changes each user sees.
func NewResourceChanges(reader registry.ChangeReader, access registry.ChangeAccess) *REST {
	return &REST{reader: reader, access: access, watchBuffer: defaultWatchBuffer, bookmarkInterval: defaultBookmarkInterval}
}

// NewClusterResourceChanges returns the storage of the cluster-scoped clusterresourcechanges.
func NewClusterResourceChanges(reader registry.ChangeReader, access registry.ChangeAccess) *REST {
	return &REST{reader: reader, access: access, cluster: true, watchBuffer: defaultWatchBuffer, bookmarkInterval: defaultBookmarkInterval}
}

// New implements rest.Storage.
func (r *REST) New() runtime.Object {
	if r.cluster {
		return &history.ClusterResourceChange{}
	}
	return &history.ResourceChange{}
}

// Destroy implements rest.Storage. The index is closed by its owner.
func (r *REST) Destroy() {}

// NamespaceScoped implements rest.Scoper.
func (r *REST) NamespaceScoped() bool { return !r.cluster }

// GetSingularName implements rest.SingularNameProvider.
func (r *REST) GetSingularName() string {
	if r.cluster {
		return "clusterresourcechange"
	}
	return "resourcechange"
}

// ShortNames implements rest.ShortNamesProvider.
func (r *REST) ShortNames() []string {
	if r.cluster {
		return []string{"crchg"}
	}
	return []string{"rchg"}
}

// Categories implements rest.CategoriesProvider: `kubectl get history` lists both change kinds.
func (r *REST) Categories() []string { return []string{"history", "kubehistory"} }

// NewList implements rest.Lister.
func (r *REST) NewList() runtime.Object {
	if r.cluster {
		return &history.ClusterResourceChangeList{}
	}
	return &history.ResourceChangeList{}
}

// Get implements rest.Getter.
func (r *REST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	namespace := genericapirequest.NamespaceValue(ctx)
	e, found, err := r.reader.Get(r.cluster, namespace, name)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err))
	}
	if !found {
		return nil, apierrors.NewNotFound(r.groupResource(), name)
	}
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return nil, apierrors.NewInternalError(errNoUser)
	}
	allowed, err := r.access.MayGet(ctx, u, &e.Record)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if !allowed {
		// The same answer as for a change that does not exist: a hidden change does not leak that it is.
		return nil, apierrors.NewNotFound(r.groupResource(), name)
	}
	return r.toObject(&e)
}

// List implements rest.Lister.
func (r *REST) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	w, err := listWindow(options)
	if err != nil {
		return nil, err
	}
	w.opts.Cluster = r.cluster
	w.opts.Namespace = genericapirequest.NamespaceValue(ctx)
	narrow(&w.opts, options)
	if w.opts.Match, err = r.selection(ctx, options, true); err != nil {
		return nil, err
	}
	res, err := r.reader.List(w.opts)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err))
	}
	if err := w.check(res); err != nil {
		return nil, err
	}
	lm := metav1.ListMeta{ResourceVersion: strconv.FormatUint(res.LastSeq, 10)}
	// RemainingItemCount stays nil: counting would read the rest of the snapshot through the selector.
	if res.More && len(res.Items) > 0 {
		if lm.Continue, err = encodeContinue(res.Items[len(res.Items)-1].Seq, res.LastSeq); err != nil {
			return nil, apierrors.NewInternalError(fmt.Errorf("encoding continue token: %w", err))
		}
	}
	if r.cluster {
		list := &history.ClusterResourceChangeList{ListMeta: lm, Items: make([]history.ClusterResourceChange, len(res.Items))}
		for i := range res.Items {
			if err := fillObject(&res.Items[i], &list.Items[i].ObjectMeta, &list.Items[i].Change); err != nil {
				return nil, err
			}
		}
		return list, nil
	}
	list := &history.ResourceChangeList{ListMeta: lm, Items: make([]history.ResourceChange, len(res.Items))}
	for i := range res.Items {
		if err := fillObject(&res.Items[i], &list.Items[i].ObjectMeta, &list.Items[i].Change); err != nil {
			return nil, err
		}
	}
	return list, nil
}

var errNoUser = errors.New("no user in the request context")

// selection is what list and watch keep of the entries in scope: those the request's label and field
// selectors match and that the requesting user may see (the RBAC mirror), checked in that order so
// that the authorizer is asked only about changes the request wants. With once (a list, which reads
// one snapshot), each decision — per resource and namespace — is asked of the mirror once and reused
// for the rest of the request; a watch asks every time, so that a revoked permission takes effect
// within the mirror's TTL.
func (r *REST) selection(ctx context.Context, options *metainternalversion.ListOptions, once bool) (func(*index.Entry) (bool, error), error) {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return nil, apierrors.NewInternalError(errNoUser)
	}
	m := matcher(options)
	var decided map[accessKey]bool
	if once {
		decided = map[accessKey]bool{}
	}
	return func(e *index.Entry) (bool, error) {
		if m != nil && !m(e) {
			return false, nil
		}
		if decided == nil {
			return r.access.MayGet(ctx, u, &e.Record)
		}
		k := keyOf(&e.Record)
		if allowed, ok := decided[k]; ok {
			return allowed, nil
		}
		allowed, err := r.access.MayGet(ctx, u, &e.Record)
		if err == nil {
			decided[k] = allowed
		}
		return allowed, err
	}, nil
}

// accessKey is what the RBAC mirror's decision about one user depends on.
type accessKey struct {
	group, resource, namespace string
	cluster                    bool
}

func keyOf(rec *change.Record) accessKey {
	k := accessKey{group: rec.Object.Group, resource: rec.Object.Resource, cluster: rec.Cluster}
	if !rec.Cluster {
		k.namespace = rec.Object.Namespace
	}
	return k
}

func (r *REST) groupResource() schema.GroupResource {
	if r.cluster {
		return history.Resource("clusterresourcechanges")
	}
	return history.Resource("resourcechanges")
}

// toObject builds the internal API object of an entry.
func (r *REST) toObject(e *index.Entry) (runtime.Object, error) {
	if r.cluster {
		obj := &history.ClusterResourceChange{}
		return obj, fillObject(e, &obj.ObjectMeta, &obj.Change)
	}
	obj := &history.ResourceChange{}
	return obj, fillObject(e, &obj.ObjectMeta, &obj.Change)
}

// fillObject writes the metadata and change of an entry's object in place (a list fills its items
// where they are).
func fillObject(e *index.Entry, meta *metav1.ObjectMeta, c *history.Change) error {
	convertChange(&e.Record.Fields, c)
	*meta = metav1.ObjectMeta{
		Name:              e.Name,
		Namespace:         e.Namespace(),
		ResourceVersion:   strconv.FormatUint(e.Seq, 10),
		UID:               types.UID(e.Record.ChangeID),
		CreationTimestamp: metav1.NewTime(e.Record.ChangeTime.Time),
		Labels:            Labels(&e.Record),
	}
	return nil
}
