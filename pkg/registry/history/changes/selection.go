package changes

import (
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubehistory/kubehistory/pkg/index"
)

// Fields returns the field set a record is selected by; the names are the field labels registered on
// the versioned kinds (apis/history/v1alpha1/fieldlabels.go), which answer 400 for any other.
func Fields(e *index.Entry) fields.Set {
	r := &e.Record
	return fields.Set{
		"metadata.name":      e.Name,
		"metadata.namespace": e.Namespace(),
		"object.group":       r.Object.Group,
		"object.version":     r.Object.Version,
		"object.resource":    r.Object.Resource,
		"object.kind":        r.Object.Kind,
		"object.namespace":   r.Object.Namespace,
		"object.name":        r.Object.Name,
		"object.uid":         r.Object.UID,
		"verb":               string(r.Verb),
		"actor":              r.Actor.Username,
		"actor.username":     r.Actor.Username,
		"source":             string(r.Source),
		"auditID":            r.AuditID,
		"changeID":           r.ChangeID,
		"git.commit":         r.Git.Commit,
		"git.destination":    r.Git.Destination,
	}
}

// narrow points the index at the narrowest of its secondary indexes that the field selector allows:
// an exact object.name reads only that object's entries, an exact object.namespace (or
// metadata.namespace) on an all-namespaces list only that namespace's. The matcher still checks every
// term, so narrowing never changes the answer, only how much is decoded.
func narrow(opts *index.ListOptions, options *metainternalversion.ListOptions) {
	if options == nil || options.FieldSelector == nil {
		return
	}
	fs := options.FieldSelector
	if name, ok := fs.RequiresExactMatch("object.name"); ok && name != "" {
		opts.ObjectName = name
	}
	if opts.Cluster || opts.Namespace != "" {
		return
	}
	for _, f := range []string{"object.namespace", "metadata.namespace"} {
		if ns, ok := fs.RequiresExactMatch(f); ok && ns != "" {
			opts.Namespace = ns
			return
		}
	}
}

// matcher is the one selection used by list (and, later, watch): label and field selectors of the
// request over the record's labels and fields.
func matcher(options *metainternalversion.ListOptions) func(*index.Entry) bool {
	label, field := labels.Everything(), fields.Everything()
	if options != nil {
		if options.LabelSelector != nil {
			label = options.LabelSelector
		}
		if options.FieldSelector != nil {
			field = options.FieldSelector
		}
	}
	if label.Empty() && field.Empty() {
		return nil
	}
	return func(e *index.Entry) bool {
		return label.Matches(labels.Set(Labels(&e.Record))) && field.Matches(Fields(e))
	}
}
