package change

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// The types of this file are the storage format of a change, version 1: what a Change on
// KUBEHISTORY_CHANGES, a Record on KUBEHISTORY_HISTORY and an entry of the index hold. They are not the
// history API's types (apis/history/v1alpha1), which the registry converts them to (as kube-apiserver
// serves its external versions from the storage version), so that a new API version is a conversion and
// not a migration of streams and index files. Their Go and JSON names are those of the first records,
// which embedded the v1alpha1 API type: records written before the storage format had a version decode
// unchanged (testdata/ holds such records, and the index's testdata such entries).

// Verb is what happened to the object.
type Verb string

// Verbs.
const (
	VerbCreate Verb = "create"
	VerbUpdate Verb = "update"
	VerbPatch  Verb = "patch"
	VerbDelete Verb = "delete"
	// VerbSeed records an object as the reconciler listed it.
	VerbSeed Verb = "seed"
	// VerbOrphanDelete records the removal of a file whose object no longer exists.
	VerbOrphanDelete Verb = "orphan-delete"
)

// Source is where a change was observed.
type Source string

// Sources.
const (
	SourceAudit     Source = "audit"
	SourceReconcile Source = "reconcile"
)

// Marker qualifies a change whose content is not exactly the audited one.
type Marker string

// Markers.
const (
	MarkerNoBody             Marker = "NoBody"
	MarkerFetchedAtWriteTime Marker = "FetchedAtWriteTime"
	MarkerObjectGone         Marker = "ObjectGone"
	MarkerGap                Marker = "Gap"
	MarkerTruncatedEvent     Marker = "TruncatedEvent"
	MarkerCollectionSweep    Marker = "CollectionSweep"
)

// Object identifies the changed object.
type Object struct {
	Group           string `json:"group,omitempty"`
	Version         string `json:"version"`
	Resource        string `json:"resource"`
	Kind            string `json:"kind,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name"`
	UID             string `json:"uid,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// Impersonator is the user who impersonated the actor.
type Impersonator struct {
	Username string   `json:"username"`
	UID      string   `json:"uid,omitempty"`
	Groups   []string `json:"groups,omitempty"`
}

// Actor is who made the change.
type Actor struct {
	Username     string        `json:"username,omitempty"`
	UID          string        `json:"uid,omitempty"`
	Groups       []string      `json:"groups,omitempty"`
	Impersonator *Impersonator `json:"impersonator,omitempty"`
	UserAgent    string        `json:"userAgent,omitempty"`
	SourceIPs    []string      `json:"sourceIPs,omitempty"`
}

// GitLink locates a committed change in its destination's repository.
type GitLink struct {
	Destination          string       `json:"destination"`
	DestinationNamespace string       `json:"destinationNamespace,omitempty"`
	Repository           string       `json:"repository,omitempty"`
	Branch               string       `json:"branch,omitempty"`
	Commit               string       `json:"commit,omitempty"`
	Path                 string       `json:"path,omitempty"`
	CommittedAt          *metav1.Time `json:"committedAt,omitempty"`
}

// Fields are what a Change and a Record say about the change of one object.
type Fields struct {
	Object     Object           `json:"object"`
	Verb       Verb             `json:"verb"`
	Actor      Actor            `json:"actor"`
	Source     Source           `json:"source"`
	AuditID    string           `json:"auditID,omitempty"`
	ChangeID   string           `json:"changeID"`
	RequestURI string           `json:"requestURI,omitempty"`
	ChangeTime metav1.MicroTime `json:"changeTime"`
	// Git is set once the change is committed; empty (but present) before.
	Git           GitLink  `json:"git,omitempty"`
	Diff          string   `json:"diff,omitempty"`
	DiffTruncated bool     `json:"diffTruncated,omitempty"`
	Markers       []Marker `json:"markers,omitempty"`
}
