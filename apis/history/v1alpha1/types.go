package v1alpha1

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
	Group string `json:"group,omitempty" protobuf:"bytes,1,opt,name=group"`
	// version is the API version the change was made through.
	Version string `json:"version" protobuf:"bytes,2,opt,name=version"`
	// resource is the plural resource name, for example "configmaps".
	Resource string `json:"resource" protobuf:"bytes,3,opt,name=resource"`
	// kind is the object's kind, for example "ConfigMap".
	// +optional
	Kind string `json:"kind,omitempty" protobuf:"bytes,4,opt,name=kind"`
	// namespace of the object; empty for cluster-scoped objects.
	// +optional
	Namespace string `json:"namespace,omitempty" protobuf:"bytes,5,opt,name=namespace"`
	// name of the object.
	Name string `json:"name" protobuf:"bytes,6,opt,name=name"`
	// uid of the object, when known.
	// +optional
	UID string `json:"uid,omitempty" protobuf:"bytes,7,opt,name=uid"`
	// resourceVersion of the object after the change (before it, for a delete), when known.
	// +optional
	ResourceVersion string `json:"resourceVersion,omitempty" protobuf:"bytes,8,opt,name=resourceVersion"`
}

// Impersonator is the user who made a request on behalf of the actor (kubectl --as).
type Impersonator struct {
	// username of the impersonating user.
	Username string `json:"username" protobuf:"bytes,1,opt,name=username"`
	// uid of the impersonating user, when known.
	// +optional
	UID string `json:"uid,omitempty" protobuf:"bytes,2,opt,name=uid"`
	// groups of the impersonating user.
	// +optional
	// +listType=atomic
	Groups []string `json:"groups,omitempty" protobuf:"bytes,3,rep,name=groups"`
}

// Actor is the identity that made the change, as kube-apiserver authenticated it.
type Actor struct {
	// username of the actor, for example "alice" or "system:serviceaccount:ci:deployer". Empty when the
	// actor is unknown (see the Gap marker).
	// +optional
	Username string `json:"username,omitempty" protobuf:"bytes,1,opt,name=username"`
	// uid of the actor, when the authenticator provides one.
	// +optional
	UID string `json:"uid,omitempty" protobuf:"bytes,2,opt,name=uid"`
	// groups of the actor.
	// +optional
	// +listType=atomic
	Groups []string `json:"groups,omitempty" protobuf:"bytes,3,rep,name=groups"`
	// impersonator is set when the actor was impersonated by another user.
	// +optional
	Impersonator *Impersonator `json:"impersonator,omitempty" protobuf:"bytes,4,opt,name=impersonator"`
	// userAgent of the client that sent the request, when recorded.
	// +optional
	UserAgent string `json:"userAgent,omitempty" protobuf:"bytes,5,opt,name=userAgent"`
	// sourceIPs of the request, as kube-apiserver recorded them.
	// +optional
	// +listType=atomic
	SourceIPs []string `json:"sourceIPs,omitempty" protobuf:"bytes,6,rep,name=sourceIPs"`
}

// GitLink locates the change in Git.
type GitLink struct {
	// destination is the name of the GitDestination the change was committed to.
	Destination string `json:"destination" protobuf:"bytes,1,opt,name=destination"`
	// destinationNamespace is the namespace of that GitDestination.
	// +optional
	DestinationNamespace string `json:"destinationNamespace,omitempty" protobuf:"bytes,2,opt,name=destinationNamespace"`
	// repository is the URL of the repository, without credentials.
	// +optional
	Repository string `json:"repository,omitempty" protobuf:"bytes,3,opt,name=repository"`
	// branch the commit was pushed to.
	// +optional
	Branch string `json:"branch,omitempty" protobuf:"bytes,4,opt,name=branch"`
	// commit is the full SHA of the commit that recorded the change.
	// +optional
	Commit string `json:"commit,omitempty" protobuf:"bytes,5,opt,name=commit"`
	// path of the object's YAML file in the repository.
	// +optional
	Path string `json:"path,omitempty" protobuf:"bytes,6,opt,name=path"`
	// committedAt is when the commit was made.
	// +optional
	CommittedAt *metav1.Time `json:"committedAt,omitempty" protobuf:"bytes,7,opt,name=committedAt"`
}

// Change is the content shared by ResourceChange and ClusterResourceChange.
type Change struct {
	// object is the changed object.
	Object ChangedObject `json:"object" protobuf:"bytes,1,opt,name=object"`
	// verb is what happened: create, update, patch or delete through the API, or seed and orphan-delete
	// from the reconciler.
	Verb ChangeVerb `json:"verb" protobuf:"bytes,2,opt,name=verb,casttype=ChangeVerb"`
	// actor is who made the change.
	Actor Actor `json:"actor" protobuf:"bytes,3,opt,name=actor"`
	// source is audit (from the audit webhook) or reconcile (found by comparing cluster and Git).
	Source ChangeSource `json:"source" protobuf:"bytes,4,opt,name=source,casttype=ChangeSource"`
	// auditID is the audit event's ID (the request's Audit-Id header); empty for reconcile changes.
	// +optional
	AuditID string `json:"auditID,omitempty" protobuf:"bytes,5,opt,name=auditID"`
	// changeID is kubehistory's stable identifier of the change, carried in the Git commit's trailers.
	ChangeID string `json:"changeID" protobuf:"bytes,6,opt,name=changeID"`
	// requestURI is the request's URI, for example to tell a write through a subresource.
	// +optional
	RequestURI string `json:"requestURI,omitempty" protobuf:"bytes,7,opt,name=requestURI"`
	// changeTime is when kube-apiserver completed the request (or when the reconciler observed the
	// state).
	ChangeTime metav1.MicroTime `json:"changeTime" protobuf:"bytes,8,opt,name=changeTime"`
	// git locates the commit and file that recorded the change.
	// +optional
	Git GitLink `json:"git,omitempty" protobuf:"bytes,9,opt,name=git"`
	// diff is a unified diff of the sanitized YAML against the previous version of the file.
	// +optional
	Diff string `json:"diff,omitempty" protobuf:"bytes,10,opt,name=diff"`
	// diffTruncated is true when the diff was cut to the configured size limit.
	// +optional
	DiffTruncated bool `json:"diffTruncated,omitempty" protobuf:"varint,11,opt,name=diffTruncated"`
	// markers flag an incomplete record: NoBody, FetchedAtWriteTime, ObjectGone, Gap, TruncatedEvent,
	// CollectionSweep.
	// +optional
	// +listType=atomic
	Markers []ChangeMarker `json:"markers,omitempty" protobuf:"bytes,12,rep,name=markers,casttype=ChangeMarker"`
}

// +genclient
// +genclient:onlyVerbs=get,list,watch
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ResourceChange is one persisted change of a tracked namespaced object: who changed what, when and how,
// with the Git commit that recorded it. Read-only; names sort by time. Visible only to users who may get
// the changed object's resource in its namespace.
type ResourceChange struct {
	metav1.TypeMeta `json:",inline"`
	// metadata of the record. Its resourceVersion is the index sequence number.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`

	// change is the recorded change.
	Change `json:",inline" protobuf:"bytes,2,opt,name=change"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ResourceChangeList is a list of ResourceChange.
type ResourceChangeList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`
	// items are the changes, oldest first.
	Items []ResourceChange `json:"items" protobuf:"bytes,2,rep,name=items"`
}

// +genclient
// +genclient:nonNamespaced
// +genclient:onlyVerbs=get,list,watch
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterResourceChange is one persisted change of a tracked cluster-scoped object (a Namespace, a
// ClusterRole, a CRD, ...). Read-only; names sort by time.
type ClusterResourceChange struct {
	metav1.TypeMeta `json:",inline"`
	// metadata of the record. Its resourceVersion is the index sequence number.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`

	// change is the recorded change.
	Change `json:",inline" protobuf:"bytes,2,opt,name=change"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// ClusterResourceChangeList is a list of ClusterResourceChange.
type ClusterResourceChangeList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`
	// items are the changes, oldest first.
	Items []ClusterResourceChange `json:"items" protobuf:"bytes,2,rep,name=items"`
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
	Path string `json:"path" protobuf:"bytes,1,opt,name=path"`
	// reason is why the file is an orphan: ObjectGone or OutOfScope.
	Reason OrphanReason `json:"reason" protobuf:"bytes,2,opt,name=reason,casttype=OrphanReason"`
}

// +genclient
// +genclient:onlyVerbs=get,list,watch
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// RepoStatus is the state of the Git writer of one GitDestination: the head it pushed, how far behind it
// is and the last error. It has the same name and namespace as its GitDestination and goes away with
// it. Read-only. Its resourceVersion is the revision of the writers' status bucket.
type RepoStatus struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`

	// Protobuf field 14: 2 to 13 held the fields of the first, flat RepoStatus (now under status) and
	// are never reused.

	// status is the writer's observed state.
	// +optional
	Status RepoStatusStatus `json:"status" protobuf:"bytes,14,opt,name=status"`
}

// RepoStatusStatus is the observed state of a GitDestination's writer.
type RepoStatusStatus struct {
	// repository is the destination's repository URL, without credentials.
	// +optional
	Repository string `json:"repository,omitempty" protobuf:"bytes,1,opt,name=repository"`
	// branch the writer pushes to.
	// +optional
	Branch string `json:"branch,omitempty" protobuf:"bytes,2,opt,name=branch"`
	// headCommit is the SHA of the branch head as the writer last pushed or read it.
	// +optional
	HeadCommit string `json:"headCommit,omitempty" protobuf:"bytes,3,opt,name=headCommit"`
	// lastPushTime is when the writer last pushed successfully.
	// +optional
	LastPushTime *metav1.Time `json:"lastPushTime,omitempty" protobuf:"bytes,4,opt,name=lastPushTime"`
	// lastChangeTime is the change time of the newest change committed.
	// +optional
	LastChangeTime *metav1.Time `json:"lastChangeTime,omitempty" protobuf:"bytes,5,opt,name=lastChangeTime"`
	// pendingChanges is how many accepted changes are not in Git yet (queued or being committed).
	// +optional
	PendingChanges int64 `json:"pendingChanges" protobuf:"varint,6,opt,name=pendingChanges"`
	// oldestPendingTime is when the oldest change not in Git yet was accepted: the writer's lag is now
	// minus this time. Absent when nothing waits.
	// +optional
	OldestPendingTime *metav1.Time `json:"oldestPendingTime,omitempty" protobuf:"bytes,14,opt,name=oldestPendingTime"`
	// committedChanges is how many changes the writer committed since the destination was created.
	// +optional
	CommittedChanges int64 `json:"committedChanges" protobuf:"varint,7,opt,name=committedChanges"`
	// lastError is the last error the writer met (push refused, authentication failed, ...), without
	// credentials; cleared by the next success.
	// +optional
	LastError string `json:"lastError,omitempty" protobuf:"bytes,8,opt,name=lastError"`
	// lastErrorTime is when lastError happened.
	// +optional
	LastErrorTime *metav1.Time `json:"lastErrorTime,omitempty" protobuf:"bytes,9,opt,name=lastErrorTime"`
	// writer is the replica that holds the writer lease for this destination.
	// +optional
	Writer string `json:"writer,omitempty" protobuf:"bytes,10,opt,name=writer"`
	// orphans are files whose objects no longer exist or left the scope, when the destination's orphan
	// policy is Report: at most 100 (MaxOrphansListed), by path.
	// +optional
	// +listType=atomic
	Orphans []OrphanFile `json:"orphans,omitempty" protobuf:"bytes,11,rep,name=orphans"`
	// orphanCount is how many orphans the last orphan check found, listed or not.
	// +optional
	OrphanCount int64 `json:"orphanCount" protobuf:"varint,13,opt,name=orphanCount"`
	// conditions: Ready (True while the last push succeeded or, before any push was needed, while the
	// branch could be read; False with PushFailed, CredentialsMissing, AuthenticationFailed,
	// RepositoryUnreachable or WriteFailed), Synced (Git equals the cluster for the tracked scope after
	// the last orphan check).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" protobuf:"bytes,12,rep,name=conditions"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// RepoStatusList is a list of RepoStatus.
type RepoStatusList struct {
	metav1.TypeMeta `json:",inline"`
	// +optional
	metav1.ListMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`
	// items are the repository statuses.
	Items []RepoStatus `json:"items" protobuf:"bytes,2,rep,name=items"`
}
