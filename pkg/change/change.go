// Package change defines the messages that travel through JetStream: a Change is an accepted change on
// its way from ingest (or the reconciler) to a Git writer, on stream KUBEHISTORY_CHANGES; a Record is a
// committed change on its way from a Git writer to every replica's index, on stream KUBEHISTORY_HISTORY.
// Both are JSON so that an operator can read them with the nats CLI.
package change

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
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
	historyv1alpha1.Change `json:",inline"`
	// Destination is the GitDestination the change goes to.
	Destination DestinationRef `json:"destination"`
	// Body is the object after the change (the audit event's responseObject, or the listed object for a
	// seed), or nil when the event carried none (see the NoBody marker) and for deletes.
	Body json.RawMessage `json:"body,omitempty"`
	// Sweep is set for a deletecollection whose response did not list the objects: the reconciler must
	// sweep Object.Group/Resource in Object.Namespace.
	Sweep bool `json:"sweep,omitempty"`
}

// Record is a committed change, as the index stores and the history API serves it.
type Record struct {
	historyv1alpha1.Change `json:",inline"`
	// Cluster is true for changes of cluster-scoped objects (served as ClusterResourceChange).
	Cluster bool `json:"cluster,omitempty"`
}

// ID derives the stable change ID from what identifies a change: the audit ID (or, for reconcile
// changes, a caller-chosen token such as the observed resourceVersion) and the object. It is also the
// JetStream Nats-Msg-Id, so a batch that kube-apiserver re-sends is deduplicated by JetStream and, past
// the duplicate window, by the writer (which finds the ID in Git trailers).
func ID(destination DestinationRef, token string, obj historyv1alpha1.ChangedObject) string {
	h := sha256.New()
	for _, s := range []string{destination.Namespace, destination.Name, token, obj.Group, obj.Resource, obj.Namespace, obj.Name} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// SubjectToken makes a string safe as one NATS subject token.
func SubjectToken(s string) string {
	return strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_").Replace(s)
}

// Encode is json.Marshal(c) without re-validating Body: encoding/json scans and compacts every
// json.RawMessage it writes, which on the ingest hot path doubles the work on each ~2 KiB object already
// checked when the audit EventList was decoded. Body must therefore be valid JSON, as it is when it comes
// from a JSON decoder or json.Marshal.
func Encode(c *Change) ([]byte, error) {
	body := c.Body
	if len(body) == 0 {
		return json.Marshal(c)
	}
	head := *c
	head.Body = nil
	data, err := json.Marshal(&head)
	if err != nil {
		return nil, err
	}
	// data ends with '}' and has at least one field before it (object, verb, ...).
	out := make([]byte, 0, len(data)+len(body)+8)
	out = append(out, data[:len(data)-1]...)
	out = append(out, `,"body":`...)
	out = append(out, body...)
	return append(out, '}'), nil
}
