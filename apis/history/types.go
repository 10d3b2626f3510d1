package history

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ChangeVerb says what happened to the object.
type ChangeVerb string

const (
	// VerbCreate is an object created through the API.
	VerbCreate ChangeVerb = "create"
	// VerbUpdate is an object replaced through the API (PUT), including a delete that only set
	// deletionTimestamp because finalizers remain.
	VerbUpdate ChangeVerb = "update"
	// VerbPatch is an object patched through the API (including server-side apply).
	VerbPatch ChangeVerb = "patch"
	// VerbDelete is an object removed from the API, alone or as one item of a deletecollection.
	VerbDelete ChangeVerb = "delete"
	// VerbSeed is the state of an object recorded by the reconciler because Git did not hold it yet.
	VerbSeed ChangeVerb = "seed"
	// VerbOrphanDelete is a file removed from Git by the reconciler because its object no longer exists
	// or left the tracked scope.
	VerbOrphanDelete ChangeVerb = "orphan-delete"
)

// ChangeSource says which part of kubehistory recorded the change.
type ChangeSource string

const (
	// SourceAudit is a change received from kube-apiserver's audit webhook.
	SourceAudit ChangeSource = "audit"
	// SourceReconcile is a change found by the reconciler comparing the cluster with Git.
	SourceReconcile ChangeSource = "reconcile"
)

// ChangeMarker flags a record that is incomplete or was built differently from the normal path.
type ChangeMarker string

const (
	// MarkerNoBody means the audit event carried no object body (Metadata audit level, or an aggregated
	// API); the object was fetched from the API server at write time instead.
	MarkerNoBody ChangeMarker = "NoBody"
	// MarkerFetchedAtWriteTime means the recorded state was read from the API server when the Git writer
	// handled the change, so it may include later changes by others.
	MarkerFetchedAtWriteTime ChangeMarker = "FetchedAtWriteTime"
	// MarkerObjectGone means the object no longer existed when its state was to be fetched.
	MarkerObjectGone ChangeMarker = "ObjectGone"
	// MarkerGap means the reconciler found Git behind the cluster without a recorded change: one or more
	// changes were missed (audit batch lost, webhook down) and are collapsed into this record. The actor
	// is unknown.
	MarkerGap ChangeMarker = "Gap"
	// MarkerTruncatedEvent means kube-apiserver truncated the audit event, so parts of it are missing.
	MarkerTruncatedEvent ChangeMarker = "TruncatedEvent"
	// MarkerCollectionSweep means a deletecollection whose response did not list the deleted objects;
	// the reconciler swept the scope to find them.
	MarkerCollectionSweep ChangeMarker = "CollectionSweep"
)

// ChangedObject identifies the Kubernetes object that changed.
type ChangedObject struct {
	// group is the API group of the object; empty for the core group.
	// +optional
	Group string `json:"group,omitempty"`
	// version is the API version the change was made through.
	Version string `json:"version"`
	// resource is the plural resource name, for example "configmaps".
	Resource string `json:"resource"`
	// kind is the object's kind, for example "ConfigMap".
	// +optional
	Kind string `json:"kind,omitempty"`
	// namespace of the object; empty for cluster-scoped objects.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// name of the object.
	Name string `json:"name"`
	// uid of the object, when known.
	// +optional
	UID string `json:"uid,omitempty"`
	// resourceVersion of the object after the change (before it, for a delete), when known.
	// +optional
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// Impersonator is the user who made a request on behalf of the actor (kubectl --as).
type Impersonator struct {
	// username of the impersonating user.
	Username string `json:"username"`
	// uid of the impersonating user, when known.
	// +optional
	UID string `json:"uid,omitempty"`
	// groups of the impersonating user.
	// +optional
	// +listType=atomic
	Groups []string `json:"groups,omitempty"`
}

// Actor is the identity that made the change, as kube-apiserver authenticated it.
type Actor struct {
	// username of the actor, for example "alice" or "system:serviceaccount:ci:deployer". Empty when the
	// actor is unknown (see the Gap marker).
	// +optional
	Username string `json:"username,omitempty"`
	// uid of the actor, when the authenticator provides one.
	// +optional
	UID string `json:"uid,omitempty"`
	// groups of the actor.
	// +optional
	// +listType=atomic
	Groups []string `json:"groups,omitempty"`
	// impersonator is set when the actor was impersonated by another user.
	// +optional
	Impersonator *Impersonator `json:"impersonator,omitempty"`
	// userAgent of the client that sent the request, when recorded.
	// +optional
	UserAgent string `json:"userAgent,omitempty"`
	// sourceIPs of the request, as kube-apiserver recorded them.
	// +optional
	// +listType=atomic
	SourceIPs []string `json:"sourceIPs,omitempty"`
}

// GitLink locates the change in Git.
type GitLink struct {
	// destination is the name of the GitDestination the change was committed to.
	Destination string `json:"destination"`
	// destinationNamespace is the namespace of that GitDestination.
	// +optional
	DestinationNamespace string `json:"destinationNamespace,omitempty"`
	// repository is the URL of the repository, without credentials.
	// +optional
	Repository string `json:"repository,omitempty"`
	// branch the commit was pushed to.
	// +optional
	Branch string `json:"branch,omitempty"`
	// commit is the full SHA of the commit that recorded the change.
	// +optional
	Commit string `json:"commit,omitempty"`
	// path of the object's YAML file in the repository.
	// +optional
	Path string `json:"path,omitempty"`
	// committedAt is when the commit was made.
	// +optional
	CommittedAt *metav1.Time `json:"committedAt,omitempty"`
}

// Change is the content shared by ResourceChange and ClusterResourceChange.
type Change struct {
	// object is the changed object.
	Object ChangedObject `json:"object"`
	// verb is what happened: create, update, patch or delete through the API, or seed and orphan-delete
	// from the reconciler.
	Verb ChangeVerb `json:"verb"`
	// actor is who made the change.
	Actor Actor `json:"actor"`
	// source is audit (from the audit webhook) or reconcile (found by comparing cluster and Git).
	Source ChangeSource `json:"source"`
	// auditID is the audit event's ID (the request's Audit-Id header); empty for reconcile changes.
	// +optional
	AuditID string `json:"auditID,omitempty"`
	// changeID is kubehistory's stable identifier of the change, carried in the Git commit's trailers.
	ChangeID string `json:"changeID"`
	// requestURI is the request's URI, for example to tell a write through a subresource.
	// +optional
	RequestURI string `json:"requestURI,omitempty"`
	// changeTime is when kube-apiserver completed the request (or when the reconciler observed the
	// state).
	ChangeTime metav1.MicroTime `json:"changeTime"`
	// git locates the commit and file that recorded the change.
	// +optional
	Git GitLink `json:"git,omitempty"`
	// diff is a unified diff of the sanitized YAML against the previous version of the file.
	// +optional
	Diff string `json:"diff,omitempty"`
	// diffTruncated is true when the diff was cut to the configured size limit.
	// +optional
	DiffTruncated bool `json:"diffTruncated,omitempty"`
	// markers flag an incomplete record: NoBody, FetchedAtWriteTime, ObjectGone, Gap, TruncatedEvent,
	// CollectionSweep.
	// +optional
	// +listType=atomic
	Markers []ChangeMarker `json:"markers,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ResourceChange is one persisted change of a tracked namespaced object: who changed what, when and how,
// with the Git commit that recorded it. Read-only; names sort by time. Visible only to users who may get
// the changed object's resource in its namespace.
type ResourceChange struct {
	metav1.TypeMeta `json:",inline"`
	// metadata of the record. Its resourceVersion is the index sequence number.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// change is the recorded change.
	Change `json:",inline"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ResourceChangeList is a list of ResourceChange.
type ResourceChangeList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the changes, oldest first.
	Items []ResourceChange `json:"items"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterResourceChange is one persisted change of a tracked cluster-scoped object (a Namespace, a
// ClusterRole, a CRD, ...). Read-only; names sort by time.
type ClusterResourceChange struct {
	metav1.TypeMeta `json:",inline"`
	// metadata of the record. Its resourceVersion is the index sequence number.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// change is the recorded change.
	Change `json:",inline"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterResourceChangeList is a list of ClusterResourceChange.
type ClusterResourceChangeList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the changes, oldest first.
	Items []ClusterResourceChange `json:"items"`
}

// OrphanReason says why a file in Git is an orphan.
type OrphanReason string

const (
	// OrphanObjectGone: the file's object no longer exists in the cluster.
	OrphanObjectGone OrphanReason = "ObjectGone"
	// OrphanOutOfScope: the object exists but no rule of the destination tracks it any more.
	OrphanOutOfScope OrphanReason = "OutOfScope"
)

// MaxOrphansListed bounds RepoStatus status.orphans; status.orphanCount counts them all.
const MaxOrphansListed = 100

// OrphanFile is a file in Git whose object no longer exists in the cluster or left the tracked scope.
type OrphanFile struct {
	// path of the file in the repository.
	Path string `json:"path"`
	// reason is why the file is an orphan: ObjectGone or OutOfScope.
	Reason OrphanReason `json:"reason"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// RepoStatus is the state of the Git writer of one GitDestination: the head it pushed, how far behind it
// is and the last error. It has the same name and namespace as its GitDestination and goes away with
// it. Read-only. Its resourceVersion is the revision of the writers' status bucket.
type RepoStatus struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// status is the writer's observed state.
	// +optional
	Status RepoStatusStatus `json:"status"`
}

// RepoStatusStatus is the observed state of a GitDestination's writer.
type RepoStatusStatus struct {
	// repository is the destination's repository URL, without credentials.
	// +optional
	Repository string `json:"repository,omitempty"`
	// branch the writer pushes to.
	// +optional
	Branch string `json:"branch,omitempty"`
	// headCommit is the SHA of the branch head as the writer last pushed or read it.
	// +optional
	HeadCommit string `json:"headCommit,omitempty"`
	// lastPushTime is when the writer last pushed successfully.
	// +optional
	LastPushTime *metav1.Time `json:"lastPushTime,omitempty"`
	// lastChangeTime is the change time of the newest change committed.
	// +optional
	LastChangeTime *metav1.Time `json:"lastChangeTime,omitempty"`
	// pendingChanges is how many accepted changes are not in Git yet (queued or being committed).
	// +optional
	PendingChanges int64 `json:"pendingChanges"`
	// oldestPendingTime is when the oldest change not in Git yet was accepted: the writer's lag is now
	// minus this time. Absent when nothing waits.
	// +optional
	OldestPendingTime *metav1.Time `json:"oldestPendingTime,omitempty"`
	// committedChanges is how many changes the writer committed since the destination was created.
	// +optional
	CommittedChanges int64 `json:"committedChanges"`
	// lastError is the last error the writer met (push refused, authentication failed, ...), without
	// credentials; cleared by the next success.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// lastErrorTime is when lastError happened.
	// +optional
	LastErrorTime *metav1.Time `json:"lastErrorTime,omitempty"`
	// writer is the replica that holds the writer lease for this destination.
	// +optional
	Writer string `json:"writer,omitempty"`
	// orphans are files whose objects no longer exist or left the scope, when the destination's orphan
	// policy is Report: at most 100 (MaxOrphansListed), by path.
	// +optional
	// +listType=atomic
	Orphans []OrphanFile `json:"orphans,omitempty"`
	// orphanCount is how many orphans the last orphan check found, listed or not.
	// +optional
	OrphanCount int64 `json:"orphanCount"`
	// conditions: Ready (True while the last push succeeded or, before any push was needed, while the
	// branch could be read; False with PushFailed, CredentialsMissing, AuthenticationFailed,
	// RepositoryUnreachable or WriteFailed), Synced (Git equals the cluster for the tracked scope after
	// the last orphan check).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// RepoStatusList is a list of RepoStatus.
type RepoStatusList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty"`
	// items are the repository statuses.
	Items []RepoStatus `json:"items"`
}
