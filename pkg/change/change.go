// Package change defines the messages that travel through JetStream: a Change is an accepted change on
// its way from ingest (or the reconciler) to a Git writer, on stream KUBEHISTORY_CHANGES; a Record is a
// committed change on its way from a Git writer to every replica's index, on stream KUBEHISTORY_HISTORY.
// Both are JSON so that an operator can read them with the nats CLI. Their types are a versioned storage
// format of their own (fields.go, version.go), which the registry converts to the history API.
package change

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/kubehistory/kubehistory/pkg/sanitize"
)

// Stream and subject names.
const (
	ChangesStream = "KUBEHISTORY_CHANGES"
	HistoryStream = "KUBEHISTORY_HISTORY"
	// ChangesSubjectPrefix + "<namespace>.<name>" of the GitDestination.
	ChangesSubjectPrefix = "kubehistory.changes."
	// HistorySubjectPrefix + "<namespace>.<name>" of the GitDestination.
	HistorySubjectPrefix = "kubehistory.history."
)

// DestinationRef names a GitDestination.
type DestinationRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String returns namespace/name.
func (d DestinationRef) String() string { return d.Namespace + "/" + d.Name }

// ChangesSubject is the subject on which the changes for this destination are published.
func (d DestinationRef) ChangesSubject() string {
	return ChangesSubjectPrefix + d.Namespace + "." + SubjectToken(d.Name)
}

// HistorySubject is the subject on which the records of this destination are published.
func (d DestinationRef) HistorySubject() string {
	return HistorySubjectPrefix + d.Namespace + "." + SubjectToken(d.Name)
}

// Change is an accepted change of one object, addressed to one destination.
type Change struct {
	// V is the storage version the change was written in (Version), 0 when written before changes had
	// one; see Upgrade.
	V int `json:"v,omitempty"`
	Fields

	// Destination is the GitDestination the change goes to.
	Destination DestinationRef `json:"destination"`
	// Body is the object after the change (the audit event's responseObject, or the listed object for a
	// seed), or nil when the event carried none (see the NoBody marker) and for deletes.
	Body json.RawMessage `json:"body,omitempty"`
	// Redacted says that Body went through sanitize.Redact before it was published: sensitive values
	// are fingerprints already, and the copy annotations are gone.
	Redacted bool `json:"redacted,omitempty"`
	// Sweep is set for a deletecollection whose response did not list the objects: the reconciler must
	// sweep Object.Group/Resource in Object.Namespace.
	Sweep bool `json:"sweep,omitempty"`
	// OrphanCheck is set on a control message of the reconciler, not on a change of an object: after a
	// full seed pass of the destination it lists every object the scope covers, so that the writer finds
	// the files whose objects no longer exist or left the scope. Object and Verb are empty; Actor is the
	// reconciler's identity, used for the orphan deletes it leads to.
	OrphanCheck *OrphanCheck `json:"orphanCheck,omitempty"`
}

// OrphanCheck is one message of the orphan check that ends a reconcile pass. A large scope is split
// into several messages (Chunks) so that each stays well below JetStream's maximum payload; the writer
// acts once it has every chunk of a pass, and forgets a pass it saw only part of (the next pass redoes it).
type OrphanCheck struct {
	// Pass identifies the reconcile pass; all its chunks carry it.
	Pass string `json:"pass"`
	// Chunk is this message's index in [0, Chunks).
	Chunk  int `json:"chunk"`
	Chunks int `json:"chunks"`
	// Expected are the paths, relative to the destination's path prefix (gitrecord.ObjectPath("", object)), of
	// every object the scope covers.
	Expected []string `json:"expected,omitempty"`
	// Excluded are the paths of objects the pass listed but the rules' selectors leave out: their files
	// are orphans that left the scope (OutOfScope), not objects that are gone.
	Excluded []string `json:"excluded,omitempty"`
	// Resources ("group/resource", "" for core) and Namespaces ("_cluster" for cluster-scoped objects) the
	// pass listed, on chunk 0 only: an orphan inside them (and not Excluded) is ObjectGone, outside them
	// OutOfScope.
	Resources  []string `json:"resources,omitempty"`
	Namespaces []string `json:"namespaces,omitempty"`
	// GraceSeconds: a file counts as an orphan only once checks at least this far apart all found it
	// so, since the audit event of a delete may still be on its way to the writer.
	GraceSeconds int64 `json:"graceSeconds,omitempty"`
}

// Record is a committed change, as the index stores it; the registry converts it to the history API's
// types.
type Record struct {
	// V is the storage version the record was written in (Version), 0 when written before records had
	// one; see Upgrade.
	V int `json:"v,omitempty"`
	Fields

	// Cluster is true for changes of cluster-scoped objects (served as ClusterResourceChange).
	Cluster bool `json:"cluster,omitempty"`
}

// ID derives the stable change ID from what identifies a change: the audit ID (or, for reconcile
// changes, a caller-chosen token such as the observed resourceVersion) and the object. It is also the
// JetStream Nats-Msg-Id, so a batch that kube-apiserver re-sends is deduplicated by JetStream and, past
// the duplicate window, by the writer (which finds the ID in Git trailers).
func ID(destination DestinationRef, token string, obj Object) string {
	h := sha256.New()
	for _, s := range []string{destination.Namespace, destination.Name, token, obj.Group, obj.Resource, obj.Namespace, obj.Name} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// SubjectToken makes a string safe as one NATS subject token.
func SubjectToken(s string) string { return subjectTokenReplacer.Replace(s) }

var subjectTokenReplacer = strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_")

// Policy gives the sanitize options (installation key, sensitive resources and paths, annotations to
// strip) that apply to the changes of a destination; ingest and the reconciler redact every body with
// them before publishing it.
type Policy func(dest DestinationRef) sanitize.Options

// RedactBody makes c's body safe to store when anything of its resource is sensitive (a Secret, a
// sensitive resource or path of the policy): sensitive values replaced by fingerprints under the
// policy's key, copy annotations removed. A body that cannot be redacted (no policy, no key, not an
// object) is dropped, and the writer fetches the object instead: nothing unredacted is published.
// Bodies of other resources are left as they are (the writer strips their noise).
func (c *Change) RedactBody(policy Policy) {
	if len(c.Body) == 0 || faultUnredacted {
		return
	}
	var opts sanitize.Options
	if policy != nil {
		opts = policy(c.Destination)
	}
	opts.Group, opts.Resource = c.Object.Group, c.Object.Resource
	if !opts.AppliesTo(opts.Group, opts.Resource) {
		return
	}
	red, _, err := sanitize.Redact(c.Body, opts)
	if err != nil {
		c.Body, c.Redacted = nil, false
		if c.Verb != VerbDelete && !c.HasMarker(MarkerNoBody) {
			c.Markers = append(c.Markers, MarkerNoBody)
		}
		return
	}
	c.Body, c.Redacted = red, true
}

// HasMarker says whether the change carries marker m.
func (c *Change) HasMarker(m Marker) bool {
	for _, x := range c.Markers {
		if x == m {
			return true
		}
	}
	return false
}
