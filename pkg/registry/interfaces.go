package registry

import (
	"context"

	"k8s.io/apiserver/pkg/authentication/user"

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
	GetRepoStatus(namespace, name string) (*index.RepoStatusEntry, bool, error)
	// ListRepoStatuses returns the statuses and the revision they are current at.
	ListRepoStatuses(namespace string) ([]index.RepoStatusEntry, uint64, error)
	// WatchRepoStatuses delivers the status events from now on (watch).
	WatchRepoStatuses(buffer int) *index.RepoStatusWatch
	// WatchRepoStatusesAfter also returns the kept events after rev (a watch resuming).
	WatchRepoStatusesAfter(rev uint64, buffer int) (*index.RepoStatusWatch, []index.RepoStatusEvent, error)
}

var (
	_ ChangeReader     = &index.Index{}
	_ RepoStatusReader = &index.Index{}
)
