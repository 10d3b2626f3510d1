package changes

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestLabelValue(t *testing.T) {
	long := strings.Repeat("a", 62) + "-b"
	for in, want := range map[string]string{
		"":                             "",
		"update":                       "update",
		"kube-system":                  "kube-system",
		"system:serviceaccount:ci:bot": "system.serviceaccount.ci.bot",
		"alice@example.com":            "alice.example.com",
		"-x-":                          "x",
		".a":                           "a",
		"a.":                           "a",
		"é":                            "",
		long:                           strings.Repeat("a", 62),
		strings.Repeat("b", 63):        strings.Repeat("b", 63),
	} {
		got := labelValue(in)
		if got != want {
			t.Errorf("labelValue(%q) = %q, want %q", in, got, want)
		}
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Errorf("labelValue(%q) = %q is no label value: %v", in, got, errs)
		}
	}
}
