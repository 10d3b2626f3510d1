package v1alpha1

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
)

// ChangeFieldLabels are the field selectors that ResourceChange and ClusterResourceChange support, beside
// metadata.name and metadata.namespace.
var ChangeFieldLabels = []string{
	"object.group", "object.version", "object.resource", "object.kind", "object.namespace", "object.name",
	"object.uid", "verb", "actor", "actor.username", "source", "auditID", "changeID", "git.commit",
	"git.destination",
}

// RepoStatusFieldLabels are the field selectors RepoStatus supports beside metadata.name/namespace;
// pkg/registry/history/repostatus matches them on list and watch.
var RepoStatusFieldLabels = []string{"status.repository", "status.branch", "status.headCommit", "status.writer"}

func addFieldLabelConversions(scheme *runtime.Scheme) error {
	for _, kind := range []string{"ResourceChange", "ClusterResourceChange"} {
		if err := scheme.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind(kind),
			fieldLabelConversion(ChangeFieldLabels)); err != nil {
			return err
		}
	}
	return scheme.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind("RepoStatus"),
		fieldLabelConversion(RepoStatusFieldLabels))
}

// fieldLabelConversion accepts the given labels unchanged and refuses others with a message naming the
// supported ones, which the apiserver turns into a 400.
func fieldLabelConversion(supported []string) runtime.FieldLabelConversionFunc {
	all := append([]string{"metadata.name", "metadata.namespace"}, supported...)
	sort.Strings(all)
	set := make(map[string]bool, len(all))
	for _, l := range all {
		set[l] = true
	}
	return func(label, value string) (string, string, error) {
		if set[label] {
			return label, value, nil
		}
		return "", "", fmt.Errorf("field label not supported: %s (supported: %s)", label, strings.Join(all, ", "))
	}
}
