// Package repostatus is the REST storage of repostatuses: the state of each GitDestination's writer,
// read-only, from the index (which mirrors the writers' status bucket).
package repostatus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/apis/history"
	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/registry"
)

// REST serves repostatuses, each only to those who may `get` its GitDestination: a RepoStatus shows the
// repository URL, the last error and orphaned paths, which are the destination's business.
type REST struct {
	reader registry.RepoStatusReader
	access Access
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
	_ rest.TableConvertor       = &REST{}
	_ rest.CategoriesProvider   = &REST{}
)

// New returns the storage of repostatuses.
func New(reader registry.RepoStatusReader, access Access) *REST {
	return &REST{reader: reader, access: access}
}

// visible says whether the requester may get the GitDestination of the RepoStatus namespace/name.
func (r *REST) visible(ctx context.Context, namespace, name string) (bool, error) {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return false, apierrors.NewUnauthorized("no user in the request")
	}
	allowed, err := r.access.MayGetNamed(ctx, u, configv1alpha1.GroupName, "gitdestinations", namespace, name)
	if err != nil {
		return false, apierrors.NewInternalError(err)
	}
	return allowed, nil
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
	rs, found, err := r.reader.GetRepoStatus(genericapirequest.NamespaceValue(ctx), name)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err))
	}
	if !found {
		return nil, apierrors.NewNotFound(history.Resource("repostatuses"), name)
	}
	if ok, err := r.visible(ctx, rs.Namespace, rs.Name); err != nil {
		return nil, err
	} else if !ok {
		// As if it did not exist: its existence is the destination's business too.
		return nil, apierrors.NewNotFound(history.Resource("repostatuses"), name)
	}
	return toInternal(rs)
}

// List implements rest.Lister.
func (r *REST) List(ctx context.Context, _ *metainternalversion.ListOptions) (runtime.Object, error) {
	items, err := r.reader.ListRepoStatuses(genericapirequest.NamespaceValue(ctx))
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("reading index: %w", err))
	}
	list := &history.RepoStatusList{}
	var maxRV uint64
	for i := range items {
		if ok, err := r.visible(ctx, items[i].Namespace, items[i].Name); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		obj, err := toInternal(&items[i])
		if err != nil {
			return nil, err
		}
		if rv, err := strconv.ParseUint(obj.ResourceVersion, 10, 64); err == nil && rv > maxRV {
			maxRV = rv
		}
		list.Items = append(list.Items, *obj)
	}
	list.ResourceVersion = strconv.FormatUint(maxRV, 10)
	return list, nil
}

func toInternal(rs *historyv1alpha1.RepoStatus) (*history.RepoStatus, error) {
	out := &history.RepoStatus{}
	if err := historyv1alpha1.Convert_v1alpha1_RepoStatus_To_history_RepoStatus(rs, out, nil); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("converting repostatus: %w", err))
	}
	return out, nil
}

var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "Name of the GitDestination."},
	{Name: "Branch", Type: "string", Description: "The branch written."},
	{Name: "Head", Type: "string", Description: "Short SHA of the last pushed commit."},
	{Name: "Pending", Type: "integer", Description: "Changes waiting to be committed."},
	{Name: "Last-Push", Type: "string", Description: "When the writer last pushed."},
	{Name: "Ready", Type: "string", Description: "The Ready condition."},
	{Name: "Repository", Type: "string", Priority: 1, Description: "The repository URL."},
	{Name: "Writer", Type: "string", Priority: 1, Description: "The replica holding the writer lease."},
	{Name: "Last-Error", Type: "string", Priority: 1, Description: "The last error."},
}

// ConvertToTable implements rest.TableConvertor.
func (r *REST) ConvertToTable(_ context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{}
	if opts, _ := tableOptions.(*metav1.TableOptions); opts == nil || !opts.NoHeaders {
		table.ColumnDefinitions = columns
	}
	add := func(rs *history.RepoStatus) {
		head := rs.HeadCommit
		if len(head) > 8 {
			head = head[:8]
		}
		push := "<never>"
		if rs.LastPushTime != nil {
			push = rs.LastPushTime.UTC().Format(time.RFC3339)
		}
		ready := "Unknown"
		if c := meta.FindStatusCondition(rs.Conditions, "Ready"); c != nil {
			ready = string(c.Status)
		}
		table.Rows = append(table.Rows, metav1.TableRow{
			Object: runtime.RawExtension{Object: rs},
			Cells:  []interface{}{rs.Name, rs.Branch, head, rs.PendingChanges, push, ready, rs.Repository, rs.Writer, rs.LastError},
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
