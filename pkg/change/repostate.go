package change

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RepoStatusBucket is the JetStream KV bucket holding one RepoState per destination (key
// RepoStateKey), written by the destination's writer and read by every replica's index.
const RepoStatusBucket = "KUBEHISTORY_REPOSTATUS"

// RepoStateKey is the RepoStatusBucket key of a destination. A namespace has no dot, so the first dot
// separates it from the name (which may have some).
func (d DestinationRef) RepoStateKey() string { return d.Namespace + "." + d.Name }

// RepoState is a Git writer's state of one destination, as stored in RepoStatusBucket and in every
// replica's index: the storage format of the history API's RepoStatus, which serves it under .status.
// Its JSON names are those of the first, flat RepoStatus, so values stored by earlier versions read
// unchanged.
type RepoState struct {
	Repository        string       `json:"repository,omitempty"`
	Branch            string       `json:"branch,omitempty"`
	HeadCommit        string       `json:"headCommit,omitempty"`
	LastPushTime      *metav1.Time `json:"lastPushTime,omitempty"`
	LastChangeTime    *metav1.Time `json:"lastChangeTime,omitempty"`
	PendingChanges    int64        `json:"pendingChanges"`
	OldestPendingTime *metav1.Time `json:"oldestPendingTime,omitempty"`
	CommittedChanges  int64        `json:"committedChanges"`
	LastError         string       `json:"lastError,omitempty"`
	LastErrorTime     *metav1.Time `json:"lastErrorTime,omitempty"`
	Writer            string       `json:"writer,omitempty"`
	// Orphans are at most MaxOrphans of the orphans found, by path; OrphanCount counts them all.
	Orphans     []RepoOrphan `json:"orphans,omitempty"`
	OrphanCount int64        `json:"orphanCount,omitempty"`
	// Conditions: Ready and Synced, with the reasons of the API's RepoStatus.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Reasons of RepoOrphan.
const (
	OrphanObjectGone = "ObjectGone"
	OrphanOutOfScope = "OutOfScope"
)

// RepoOrphan is a file in Git whose object no longer exists or left the tracked scope.
type RepoOrphan struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// MaxOrphans bounds RepoState.Orphans, so that a status stays small whatever a pass finds.
const MaxOrphans = 100
