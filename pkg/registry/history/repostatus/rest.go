// Package repostatus is the REST storage of repostatuses: the state of each GitDestination's writer,
// read-only (get, list, watch), from the index, which mirrors the writers' status bucket. A RepoStatus
// is shown only to those who may get its GitDestination.
package repostatus

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/apis/history"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/registry"
)

// REST serves repostatuses, each only to those who may `get` its GitDestination: a RepoStatus shows the
// repository URL, the last error and orphaned paths, which are the destination's business.
type REST struct {
	reader registry.RepoStatusReader
	access Access

	// watchBuffer is how many events a watcher may lag behind before it is ended (tests shorten it).
	watchBuffer int
	// now is the clock of the table's age columns.
	now func() time.Time
}

// Access decides who may see a RepoStatus; access.Mirror implements it.
type Access interface {
	MayGetNamed(ctx context.Context, u user.Info, group, resource, namespace, name string) (bool, error)
}

var (
	_ rest.Storage              = &REST{}
	_ rest.Scoper               = &REST{}
	_ rest.SingularNameProvider = &REST{}
	_ rest.Getter               = &REST{}
	_ rest.Lister               = &REST{}
	_ rest.Watcher              = &REST{}
	_ rest.TableConvertor       = &REST{}
	_ rest.CategoriesProvider   = &REST{}
)

// defaultWatchBuffer: statuses change at most once per commit window and destination.
const defaultWatchBuffer = 256

// New returns the storage of repostatuses.
func New(reader registry.RepoStatusReader, access Access) *REST {
	return &REST{reader: reader, access: access, watchBuffer: defaultWatchBuffer, now: time.Now}
}

// visible says whether the requester may get the GitDestination of the RepoStatus namespace/name.
func (r *REST) visible(ctx context.Context, u user.Info, namespace, name string) (bool, error) {
	allowed, err := r.access.MayGetNamed(ctx, u, configv1alpha1.GroupName, "gitdestinations", namespace, name)
	if err != nil {
		return false, apierrors.NewInternalError(err)
	}
	return allowed, nil
}

func requester(ctx context.Context) (user.Info, error) {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return nil, apierrors.NewUnauthorized("no user in the request")
	}
	return u, nil
}

// New implements rest.Storage.
func (r *REST) New() runtime.Object { return &history.RepoStatus{} }

// Destroy implements rest.Storage.
func (r *REST) Destroy() {}

// NamespaceScoped implements rest.Scoper.
func (r *REST) NamespaceScoped() bool { return true }

// GetSingularName implements rest.SingularNameProvider.
func (r *REST) GetSingularName() string { return "repostatus" }

// Categories implements rest.CategoriesProvider.
func (r *REST) Categories() []string { return []string{"kubehistory"} }

// NewList implements rest.Lister.
func (r *REST) NewList() runtime.Object { return &history.RepoStatusList{} }

// Get implements rest.Getter.
func (r *REST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	u, err := requester(ctx)
	if err != nil {
		return nil, err
	}
	e, found, err := r.reader.GetRepoStatus(genericapirequest.NamespaceValue(ctx), name)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err))
	}
	if !found {
		return nil, apierrors.NewNotFound(history.Resource("repostatuses"), name)
	}
	if ok, err := r.visible(ctx, u, e.Namespace, e.Name); err != nil {
		return nil, err
	} else if !ok {
		// As if it did not exist: its existence is the destination's business too.
		return nil, apierrors.NewNotFound(history.Resource("repostatuses"), name)
	}
	return ToInternal(e), nil
}

// List implements rest.Lister. The list is small (one item per GitDestination): limit is not applied
// and no continue token is returned, which the API conventions allow.
func (r *REST) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	u, err := requester(ctx)
	if err != nil {
		return nil, err
	}
	match := selection(options)
	items, rev, err := r.reader.ListRepoStatuses(genericapirequest.NamespaceValue(ctx))
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err))
	}
	list := &history.RepoStatusList{}
	for i := range items {
		if !match(&items[i]) {
			continue
		}
		if ok, err := r.visible(ctx, u, items[i].Namespace, items[i].Name); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		list.Items = append(list.Items, *ToInternal(&items[i]))
	}
	list.ResourceVersion = strconv.FormatUint(rev, 10)
	return list, nil
}

// Fields is the field set a RepoStatus is selected by; the names are the field labels registered on the
// versioned kind (apis/history/v1alpha1/fieldlabels.go), which answer 400 for any other.
func Fields(e *index.RepoStatusEntry) fields.Set {
	return fields.Set{
		"metadata.name":      e.Name,
		"metadata.namespace": e.Namespace,
		"status.repository":  e.State.Repository,
		"status.branch":      e.State.Branch,
		"status.headCommit":  e.State.HeadCommit,
		"status.writer":      e.State.Writer,
	}
}

// selection is the one predicate of list and watch: the request's label selector (a RepoStatus has no
// labels) and field selector.
func selection(options *metainternalversion.ListOptions) func(*index.RepoStatusEntry) bool {
	label, field := labels.Everything(), fields.Everything()
	if options != nil {
		if options.LabelSelector != nil {
			label = options.LabelSelector
		}
		if options.FieldSelector != nil {
			field = options.FieldSelector
		}
	}
	return func(e *index.RepoStatusEntry) bool {
		return label.Matches(labels.Set{}) && field.Matches(Fields(e))
	}
}

// ToInternal converts the index's entry (the storage format) to the API object.
func ToInternal(e *index.RepoStatusEntry) *history.RepoStatus {
	st := &e.State
	out := &history.RepoStatus{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.Namespace, Name: e.Name, ResourceVersion: strconv.FormatUint(e.Rev, 10)},
		Status: history.RepoStatusStatus{
			Repository:        st.Repository,
			Branch:            st.Branch,
			HeadCommit:        st.HeadCommit,
			LastPushTime:      st.LastPushTime.DeepCopy(),
			LastChangeTime:    st.LastChangeTime.DeepCopy(),
			PendingChanges:    st.PendingChanges,
			OldestPendingTime: st.OldestPendingTime.DeepCopy(),
			CommittedChanges:  st.CommittedChanges,
			LastError:         st.LastError,
			LastErrorTime:     st.LastErrorTime.DeepCopy(),
			Writer:            st.Writer,
			OrphanCount:       st.OrphanCount,
			Conditions:        slices.Clone(st.Conditions),
		},
	}
	// States stored before orphans were bounded list them all and count none.
	if n := int64(len(st.Orphans)); n > out.Status.OrphanCount {
		out.Status.OrphanCount = n
	}
	orphans := st.Orphans
	if len(orphans) > history.MaxOrphansListed {
		orphans = orphans[:history.MaxOrphansListed]
	}
	for _, o := range orphans {
		out.Status.Orphans = append(out.Status.Orphans, history.OrphanFile{Path: o.Path, Reason: history.OrphanReason(o.Reason)})
	}
	return out
}

var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "Name of the GitDestination."},
	{Name: "Branch", Type: "string", Description: "The branch written."},
	{Name: "Head", Type: "string", Description: "Short SHA of the branch head the writer last pushed or read."},
	{Name: "Pending", Type: "integer", Description: "Changes not in Git yet."},
	{Name: "Last Push", Type: "string", Description: "How long ago the writer last pushed."},
	{Name: "Ready", Type: "string", Description: "The Ready condition's status."},
	{Name: "Reason", Type: "string", Description: "The Ready condition's reason."},
	{Name: "Repository", Type: "string", Priority: 1, Description: "The repository URL, without credentials."},
	{Name: "Writer", Type: "string", Priority: 1, Description: "The replica holding the writer lease."},
	{Name: "Orphans", Type: "integer", Priority: 1, Description: "Files in Git whose objects are gone or out of scope."},
	{Name: "Last Error", Type: "string", Priority: 1, Description: "The last error, cleared by the next success."},
}

// ConvertToTable implements rest.TableConvertor.
func (r *REST) ConvertToTable(_ context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{}
	if opts, _ := tableOptions.(*metav1.TableOptions); opts == nil || !opts.NoHeaders {
		table.ColumnDefinitions = columns
	}
	add := func(rs *history.RepoStatus) {
		st := &rs.Status
		head := st.HeadCommit
		if len(head) > 8 {
			head = head[:8]
		}
		push := "<never>"
		if st.LastPushTime != nil {
			push = duration.HumanDuration(r.now().Sub(st.LastPushTime.Time))
		}
		ready, reason := "Unknown", ""
		if c := meta.FindStatusCondition(st.Conditions, "Ready"); c != nil {
			ready, reason = string(c.Status), c.Reason
		}
		table.Rows = append(table.Rows, metav1.TableRow{
			Object: runtime.RawExtension{Object: rs},
			Cells:  []interface{}{rs.Name, st.Branch, head, st.PendingChanges, push, ready, reason, st.Repository, st.Writer, st.OrphanCount, st.LastError},
		})
	}
	switch t := object.(type) {
	case *history.RepoStatus:
		add(t)
		table.ResourceVersion = t.ResourceVersion
	case *history.RepoStatusList:
		for i := range t.Items {
			add(&t.Items[i])
		}
		table.ResourceVersion = t.ResourceVersion
	default:
		return nil, fmt.Errorf("unexpected object %T", object)
	}
	return table, nil
}
