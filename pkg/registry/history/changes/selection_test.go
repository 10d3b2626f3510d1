package changes

import (
	"testing"
	"time"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
)

func TestMatcher(t *testing.T) {
	e := &index.Entry{Seq: 3, Name: "n", Record: change.Record{Fields: change.Fields{
		Object:     change.Object{Version: "v1", Resource: "configmaps", Namespace: "team-a", Name: "web"},
		Verb:       change.VerbPatch,
		Actor:      change.Actor{Username: "system:serviceaccount:ci:bot"},
		Source:     change.SourceAudit,
		ChangeTime: metav1.NewMicroTime(time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)),
	}}}
	cases := []struct {
		name, label, field string
		want               bool
	}{
		{"everything", "", "", true},
		{"object name", "", "object.name=web", true},
		{"other object", "", "object.name=db", false},
		{"actor exact", "", "actor=system:serviceaccount:ci:bot,verb=patch", true},
		{"actor not", "", "actor!=system:serviceaccount:ci:bot", false},
		{"actor label", "history.kubehistory.io/actor=system.serviceaccount.ci.bot", "", true},
		{"since, numeric", "history.kubehistory.io/time>1795000000", "", true},
		{"before, numeric", "history.kubehistory.io/time<1795000000", "", false},
		{"date", "history.kubehistory.io/date=20261126,history.kubehistory.io/group=core", "", true},
		{"verb label and field", "history.kubehistory.io/verb=patch", "object.namespace=team-a", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := &metainternalversion.ListOptions{}
			var err error
			if opts.LabelSelector, err = labels.Parse(tc.label); err != nil {
				t.Fatal(err)
			}
			if opts.FieldSelector, err = fields.ParseSelector(tc.field); err != nil {
				t.Fatal(err)
			}
			m := matcher(opts)
			got := m == nil || m(e)
			if got != tc.want {
				t.Errorf("label %q field %q: got %v, want %v", tc.label, tc.field, got, tc.want)
			}
		})
	}
}

func TestNarrow(t *testing.T) {
	cases := []struct {
		name, field   string
		cluster       bool
		namespace     string
		wantNamespace string
		wantObject    string
	}{
		{"no selector", "", false, "team-a", "team-a", ""},
		{"object name in a namespace", "object.name=web", false, "team-a", "team-a", "web"},
		{"object name and namespace across namespaces", "object.name=web,object.namespace=team-b", false, "", "team-b", "web"},
		{"metadata.namespace across namespaces", "metadata.namespace=team-b", false, "", "team-b", ""},
		{"the request namespace wins", "object.namespace=team-b", false, "team-a", "team-a", ""},
		{"inequality does not narrow", "object.name!=web", false, "team-a", "team-a", ""},
		{"cluster object", "object.name=team-b", true, "", "", "team-b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := fields.ParseSelector(tc.field)
			if err != nil {
				t.Fatal(err)
			}
			opts := index.ListOptions{Cluster: tc.cluster, Namespace: tc.namespace}
			narrow(&opts, &metainternalversion.ListOptions{FieldSelector: sel})
			if opts.Namespace != tc.wantNamespace || opts.ObjectName != tc.wantObject {
				t.Errorf("got namespace %q object %q", opts.Namespace, opts.ObjectName)
			}
		})
	}
}
