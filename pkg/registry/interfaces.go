package registry

import (
	"context"

	"k8s.io/apiserver/pkg/authentication/user"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
)

// ChangeReader is what the change resources need from the index.
type ChangeReader interface {
	Get(cluster bool, namespace, name string) (index.Entry, bool, error)
	List(opts index.ListOptions) (index.ListResult, error)
	// LastSeq is the index's last sequence: the resourceVersion "now".
	LastSeq() (uint64, error)
	// Subscribe delivers the entries added from now on (watch).
	Subscribe(buffer int) *index.Subscription
}

// ChangeAccess decides which changes a user may see: the RBAC mirror (pkg/registry/access).
type ChangeAccess interface {
	MayGet(ctx context.Context, u user.Info, rec *change.Record) (bool, error)
}

// RepoStatusReader is what the repostatuses resource needs from the index.
type RepoStatusReader interface {
	GetRepoStatus(namespace, name string) (*historyv1alpha1.RepoStatus, bool, error)
	ListRepoStatuses(namespace string) ([]historyv1alpha1.RepoStatus, error)
}

var (
	_ ChangeReader     = &index.Index{}
	_ RepoStatusReader = &index.Index{}
)
