package changes

import (
	"testing"
	"time"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
)

// FuzzDecodeContinue: a continue token is outside input; decoding never panics, and whatever it
// accepts resumes inside its own snapshot and encodes back to a token that decodes the same.
func FuzzDecodeContinue(f *testing.F) {
	good, err := encodeContinue(41, 100)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{good, "", "x", "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTAwfQ", "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6LTEsInN0YXJ0IjoiLi4vLi4vIn0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		after, rv, err := decodeContinue(token)
		if err != nil {
			return
		}
		if after > rv || rv == 0 {
			t.Fatalf("accepted %q as after=%d rv=%d", token, after, rv)
		}
		again, err := encodeContinue(after, rv)
		if err != nil {
			t.Fatal(err)
		}
		a2, rv2, err := decodeContinue(again)
		if err != nil || a2 != after || rv2 != rv {
			t.Fatalf("round trip of %q: %d/%d/%v, want %d/%d", token, a2, rv2, err, after, rv)
		}
	})
}

// FuzzSelection: label and field selectors come from users; whatever parses, the matcher evaluates
// without panicking on any record.
func FuzzSelection(f *testing.F) {
	for _, s := range [][2]string{
		{"", ""},
		{"history.kubehistory.io/time>1795000000", "actor=alice"},
		{"history.kubehistory.io/verb in (patch,update)", "object.name!=web,verb=patch"},
		{"!history.kubehistory.io/actor", "metadata.namespace=team-a"},
		{"a,b=,c!=d", "x=\\,y"},
	} {
		f.Add(s[0], s[1], "system:serviceaccount:ci:bot")
	}
	f.Fuzz(func(t *testing.T, label, field, actor string) {
		opts := &metainternalversion.ListOptions{}
		var err error
		if opts.LabelSelector, err = labels.Parse(label); err != nil {
			return
		}
		if opts.FieldSelector, err = fields.ParseSelector(field); err != nil {
			return
		}
		e := &index.Entry{Seq: 1, Name: "n", Record: change.Record{Fields: change.Fields{
			Object:     change.Object{Version: "v1", Resource: "configmaps", Namespace: "a", Name: actor},
			Actor:      change.Actor{Username: actor},
			ChangeTime: metav1.NewMicroTime(time.Unix(1795000000, 0)),
		}}}
		if m := matcher(opts); m != nil {
			_ = m(e)
		}
		// Label values derived from any username are valid label values.
		for k, v := range Labels(&e.Record) {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Fatalf("label %s=%q from actor %q is invalid: %v", k, v, actor, errs)
			}
		}
	})
}
