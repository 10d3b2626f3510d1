package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons shared by the config kinds.
const (
	// ConditionReady is True when the object is valid and in effect.
	ConditionReady = "Ready"

	ReasonReady              = "Ready"
	ReasonUnknownResource    = "UnknownResource"
	ReasonDestinationMissing = "DestinationMissing"
	ReasonAccessDenied       = "AccessDenied"
	ReasonInvalidSpec        = "InvalidSpec"
	// Reasons of a GitDestination's Ready condition, set by the replica holding its writer lease.
	//
	// ReasonPushed (True): the writer's last push succeeded.
	ReasonPushed = "Pushed"
	// ReasonRepositoryReachable (True): no push was needed since the writer started, and it read the
	// branch from the remote with its credentials (write access is proven by the first push).
	ReasonRepositoryReachable = "RepositoryReachable"
	// ReasonCredentialsMissing (False): the credentials Secret does not exist, or the remote asks for
	// credentials and the destination has none.
	ReasonCredentialsMissing = "CredentialsMissing"
	// ReasonAuthenticationFailed (False): the remote refused the credentials (or, over SSH, the writer
	// refused the host key).
	ReasonAuthenticationFailed = "AuthenticationFailed"
	// ReasonRepositoryUnreachable (False): the writer could not list or fetch the repository (DNS,
	// connection, TLS, repository not found).
	ReasonRepositoryUnreachable = "RepositoryUnreachable"
	// ReasonPushFailed (False): the remote refused the push (a hook, a protected or read-only
	// repository) or the push broke off.
	ReasonPushFailed = "PushFailed"
	// ReasonWriteFailed (False): the writer failed after or beside Git (publishing the records,
	// its local clone).
	ReasonWriteFailed = "WriteFailed"
	// ReasonURLSchemeNotAllowed: the GitDestination's URL uses a scheme the server does not allow (http
	// and file only behind the operator's --allowed-url-schemes).
	ReasonURLSchemeNotAllowed = "URLSchemeNotAllowed"
	// ReasonCredentialsNotOptedIn: the credentials Secret is not marked as Git credentials.
	ReasonCredentialsNotOptedIn = "CredentialsNotOptedIn"
	// ReasonDestinationNotTrusted: a ClusterWatchRule names a GitDestination outside the namespaces the
	// server trusts with cluster-wide history.
	ReasonDestinationNotTrusted = "DestinationNotTrusted"
)

// OrphanPolicy says what the reconciler does with files in Git whose objects no longer exist or left the
// tracked scope.
// +kubebuilder:validation:Enum=Prune;Report
type OrphanPolicy string

const (
	// OrphanPrune deletes orphaned files in a reconcile commit.
	OrphanPrune OrphanPolicy = "Prune"
	// OrphanReport lists orphaned files in the RepoStatus and a condition, and leaves them in Git.
	OrphanReport OrphanPolicy = "Report"
)

// ResourceRule selects resources by API group and plural resource name.
type ResourceRule struct {
	// apiGroups are the API groups of the resources; "" is the core group, "*" any group.
	// +kubebuilder:validation:MinItems=1
	// +listType=set
	APIGroups []string `json:"apiGroups"`
	// resources are plural resource names, for example "configmaps", or "*" for every resource of the
	// groups. Subresources are not tracked on their own: a write through a subresource is recorded for its
	// parent object.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:items:Pattern=`^(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$`
	// +listType=set
	Resources []string `json:"resources"`
}

// LocalDestinationReference names a GitDestination in the same namespace.
type LocalDestinationReference struct {
	// name of the GitDestination.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// DestinationReference names a GitDestination in any namespace.
type DestinationReference struct {
	// name of the GitDestination.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// namespace of the GitDestination.
	// +kubebuilder:validation:MinLength=1
	Namespace string `json:"namespace"`
}

// WatchRuleSpec selects which objects of the rule's namespace are tracked, and where they are written.
type WatchRuleSpec struct {
	// destinationRef is the GitDestination, in the same namespace, that receives the changes.
	DestinationRef LocalDestinationReference `json:"destinationRef"`
	// rules select the tracked resources by group and resource.
	// +kubebuilder:validation:MinItems=1
	// +listType=atomic
	Rules []ResourceRule `json:"rules"`
	// objectSelector limits tracking to objects whose labels match. Empty or absent: every object.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['Exists', 'DoesNotExist'] ? !has(e.values) || size(e.values) == 0 : has(e.values) && size(e.values) > 0)",message="matchExpressions values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist"
	ObjectSelector *metav1.LabelSelector `json:"objectSelector,omitempty"`
	// ignoreUsers are usernames whose changes are not recorded, for example controllers that write
	// status-like data into tracked objects.
	// +optional
	// +listType=set
	IgnoreUsers []string `json:"ignoreUsers,omitempty"`
}

// RuleStatus is the observed state of a WatchRule or ClusterWatchRule.
type RuleStatus struct {
	// observedGeneration is the generation the reconciler last acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// trackedResources are the resources the rule resolved to through discovery, as "resource.group".
	// +optional
	// +listType=atomic
	TrackedResources []string `json:"trackedResources,omitempty"`
	// conditions: Ready, with reasons such as UnknownResource, DestinationMissing or AccessDenied.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=wr,categories=kubehistory
// +kubebuilder:printcolumn:name="Destination",type=string,JSONPath=`.spec.destinationRef.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// WatchRule tracks objects of its own namespace: their changes are recorded in Git and served as
// ResourceChanges.
type WatchRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec selects the tracked objects and their destination.
	Spec WatchRuleSpec `json:"spec"`
	// status is the observed state.
	// +optional
	Status RuleStatus `json:"status,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true

// WatchRuleList is a list of WatchRule.
type WatchRuleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WatchRule `json:"items"`
}

// ResourceScope says which objects of a ClusterWatchRule's resources are tracked.
// +kubebuilder:validation:Enum=Cluster;Namespaced;"*"
type ResourceScope string

const (
	// ScopeCluster tracks only cluster-scoped resources.
	ScopeCluster ResourceScope = "Cluster"
	// ScopeNamespaced tracks only namespaced resources, in the namespaces the namespaceSelector chooses.
	ScopeNamespaced ResourceScope = "Namespaced"
	// ScopeAll tracks both.
	ScopeAll ResourceScope = "*"
)

// ClusterResourceRule selects resources by group, name and scope.
type ClusterResourceRule struct {
	ResourceRule `json:",inline"`
	// scope is Cluster (cluster-scoped objects), Namespaced (objects in the selected namespaces) or "*".
	// +kubebuilder:default="*"
	// +optional
	Scope ResourceScope `json:"scope,omitempty"`
}

// ClusterWatchRuleSpec selects cluster-scoped objects and/or objects in namespaces chosen by a selector.
type ClusterWatchRuleSpec struct {
	// destinationRef is the GitDestination that receives the changes.
	DestinationRef DestinationReference `json:"destinationRef"`
	// rules select the tracked resources by group, resource and scope.
	// +kubebuilder:validation:MinItems=1
	// +listType=atomic
	Rules []ClusterResourceRule `json:"rules"`
	// namespaceSelector chooses the namespaces whose objects of namespaced resources are tracked, by the
	// namespaces' labels. Absent: no namespace; empty ({}): every namespace.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// objectSelector limits tracking to objects whose labels match. Empty or absent: every object.
	// +optional
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"
	ObjectSelector *metav1.LabelSelector `json:"objectSelector,omitempty"`
	// ignoreUsers are usernames whose changes are not recorded.
	// +optional
	// +listType=set
	IgnoreUsers []string `json:"ignoreUsers,omitempty"`
}

// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cwr,categories=kubehistory
// +kubebuilder:printcolumn:name="Destination",type=string,JSONPath=`.spec.destinationRef.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// ClusterWatchRule tracks cluster-scoped objects and/or objects in the namespaces its selector chooses.
type ClusterWatchRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec selects the tracked objects and their destination.
	Spec ClusterWatchRuleSpec `json:"spec"`
	// status is the observed state.
	// +optional
	Status RuleStatus `json:"status,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true

// ClusterWatchRuleList is a list of ClusterWatchRule.
type ClusterWatchRuleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterWatchRule `json:"items"`
}

// SecretReference names a Secret in the GitDestination's namespace.
type SecretReference struct {
	// name of the Secret. Keys read: "username" and "password" or "token" for HTTP(S);
	// "ssh-privatekey" and "known_hosts" (both required: host keys are always verified) for SSH.
	// The Secret must be labelled kubehistory.io/git-credentials: "true" (or be of that type).
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// CommitIdentity sets who appears in the commits.
type CommitIdentity struct {
	// committerName is the committer of every commit (the author is the actor).
	// +kubebuilder:default=kubehistory
	// +optional
	CommitterName string `json:"committerName,omitempty"`
	// committerEmail is the committer's email.
	// +kubebuilder:default="kubehistory@localhost"
	// +optional
	CommitterEmail string `json:"committerEmail,omitempty"`
	// authorEmailPattern builds the author's email from the actor; "{username}" is replaced by the
	// username with characters invalid in an email local part replaced by "-".
	// +kubebuilder:default="{username}@users.kubehistory.local"
	// +optional
	AuthorEmailPattern string `json:"authorEmailPattern,omitempty"`
}

// GitDestinationSpec is a Git repository and branch that receives changes.
type GitDestinationSpec struct {
	// url of the repository: file://, http(s):// or ssh:// (or scp-like user@host:path).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:XValidation:rule="self.startsWith('file://') || self.startsWith('http://') || self.startsWith('https://') || self.startsWith('ssh://') || self.matches('^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:.+$')",message="url must be file://, http(s)://, ssh:// or user@host:path"
	URL string `json:"url"`
	// branch to commit to; created when missing.
	// +kubebuilder:default=main
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._/-]+$`
	// +optional
	Branch string `json:"branch,omitempty"`
	// pathPrefix is the folder in the repository under which files are written:
	// <pathPrefix>/<namespace or _cluster>/<group or core>/<resource>/<name>.yaml.
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$`
	// +optional
	PathPrefix string `json:"pathPrefix,omitempty"`
	// credentialsSecretRef names the Secret with the credentials for the repository.
	// +optional
	CredentialsSecretRef *SecretReference `json:"credentialsSecretRef,omitempty"`
	// commitIdentity sets the committer and how authors' emails are built.
	// +optional
	CommitIdentity CommitIdentity `json:"commitIdentity,omitempty"`
	// commitWindow is how long the writer gathers changes before committing them (one commit per actor
	// per window).
	// +kubebuilder:default="1s"
	// +optional
	CommitWindow *metav1.Duration `json:"commitWindow,omitempty"`
	// orphanPolicy is what the reconciler does with files whose objects no longer exist or left the
	// scope: Prune deletes them in a reconcile commit, Report lists them in the RepoStatus.
	// +kubebuilder:default=Report
	// +optional
	OrphanPolicy OrphanPolicy `json:"orphanPolicy,omitempty"`
	// sensitiveResources are further resources ("resource.group", "configmaps" for the core group) whose
	// data, stringData and binaryData values are replaced by keyed fingerprints
	// (hmac-sha256:<key ID>:<hex>), beside Secrets which always are.
	// +optional
	// +listType=set
	SensitiveResources []string `json:"sensitiveResources,omitempty"`
	// sensitivePaths are further values replaced by keyed fingerprints, as
	// "resource.group:path.to.field" ("*" for any resource; a "*" path segment stands for every key of
	// a map or element of a list), e.g. "databases.db.example.com:spec.password". They are replaced
	// before anything is stored, in JetStream as in Git.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Pattern=`^[^:\s]+:[^.:\s]+(\.[^.:\s]+)*$`
	SensitivePaths []string `json:"sensitivePaths,omitempty"`
	// stripAnnotations are removed from every object written, beside kubectl's
	// last-applied-configuration (always removed: it copies the object, Secret values included).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	StripAnnotations []string `json:"stripAnnotations,omitempty"`
	// encryption, when set, writes Secrets to Git SOPS-encrypted for age recipients instead of
	// fingerprinted, so that the repository can restore them: `sops --decrypt` with an age identity
	// gives back the Secret for `kubectl apply`. Without it (the default) values are keyed fingerprints;
	// plaintext is never an option.
	// +optional
	Encryption *Encryption `json:"encryption,omitempty"`
}

// Encryption of Secret values in Git.
type Encryption struct {
	// provider is the file format; SOPS is the only one.
	// +kubebuilder:validation:Enum=SOPS
	// +kubebuilder:default=SOPS
	// +optional
	Provider string `json:"provider,omitempty"`
	// ageRecipients are the age public keys ("age1…") whose identities may decrypt.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Pattern=`^age1[0-9a-z]{58}$`
	// +listType=atomic
	AgeRecipients []string `json:"ageRecipients"`
}

// GitDestinationStatus is the observed state of a GitDestination. Only the replica holding the
// destination's writer lease writes it.
type GitDestinationStatus struct {
	// observedGeneration is the generation of the spec the writer runs with (or found invalid).
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// writer is the kubehistory replica holding the writer lease, which wrote this status.
	// +optional
	Writer string `json:"writer,omitempty"`
	// headCommit is the SHA of the branch head as the writer last pushed or read it.
	// +optional
	HeadCommit string `json:"headCommit,omitempty"`
	// lastPushTime is when the writer last pushed successfully.
	// +optional
	LastPushTime *metav1.Time `json:"lastPushTime,omitempty"`
	// pendingChanges is how many accepted changes are not in Git yet (queued or being committed).
	// +optional
	PendingChanges int64 `json:"pendingChanges"`
	// oldestPendingTime is when the oldest change not in Git yet was accepted: the writer's lag is now
	// minus this time. Absent when nothing waits.
	// +optional
	OldestPendingTime *metav1.Time `json:"oldestPendingTime,omitempty"`
	// conditions: Ready is True while the writer's last push succeeded (reason Pushed) or, before it had
	// anything to push, while it could read the branch (RepositoryReachable); False with reason
	// PushFailed, CredentialsMissing, AuthenticationFailed, RepositoryUnreachable, WriteFailed,
	// InvalidSpec, URLSchemeNotAllowed, CredentialsNotOptedIn or AccessDenied and the error (without
	// credentials) as message. More detail is in the RepoStatus of the same name.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=gd,categories=kubehistory
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Branch",type=string,JSONPath=`.spec.branch`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.pendingChanges`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Head",type=string,JSONPath=`.status.headCommit`,priority=1
// +kubebuilder:printcolumn:name="Last Push",type=date,JSONPath=`.status.lastPushTime`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1

// GitDestination is a Git repository and branch that receives the tracked changes of WatchRules and
// ClusterWatchRules that name it.
type GitDestination struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the repository.
	Spec GitDestinationSpec `json:"spec"`
	// status is the observed state.
	// +optional
	Status GitDestinationStatus `json:"status,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true

// GitDestinationList is a list of GitDestination.
type GitDestinationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GitDestination `json:"items"`
}
