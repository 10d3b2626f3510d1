package server

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	genericoptions "k8s.io/apiserver/pkg/server/options"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/registry/access"
)

// foreignFlags are flags the docs name that belong to other programs (kube-apiserver, kubectl, git,
// ssh-keyscan, sops, helm...), not to kubehistory-apiserver.
var foreignFlags = map[string]string{
	"field-selector": "kubectl", "for": "kubectl wait", "all": "kubectl", "as": "kubectl", "raw": "kubectl",
	"chunk-size": "kubectl", "dry-run": "kubectl", "from-file": "kubectl create secret", "list": "kubectl auth can-i",
	"help": "every command", "decrypt": "sops", "bump-revision": "etcdutl snapshot restore", "prefers-protobuf": "kubectl",
	"watch-cache-sizes": "kube-apiserver", "enable-aggregator-routing": "kube-apiserver", "author": "git commit",
}

// Every --flag named in the operator docs is a flag of kubehistory-apiserver (or of one of its
// subcommands), unless it is listed above as another program's.
func TestDocsNameOnlyExistingFlags(t *testing.T) {
	cmd := NewCommand(context.Background())
	files, err := filepath.Glob("../../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../../README.md")
	flagRE := regexp.MustCompile("(?:^|[\\s`(])(--[a-z][a-z0-9-]+)")
	var missing []string
	for _, f := range files {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range flagRE.FindAllStringSubmatch(string(doc), -1) {
			name := m[1][2:]
			if _, ok := foreignFlags[name]; ok || hasFlag(cmd, name) {
				continue
			}
			missing = append(missing, filepath.Base(f)+": --"+name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the docs name flags kubehistory-apiserver does not have (fix the doc, or list the flag in foreignFlags with its program):\n%s",
			strings.Join(dedup(missing), "\n"))
	}
}

func hasFlag(c *cobra.Command, name string) bool {
	if c.Flags().Lookup(name) != nil || c.PersistentFlags().Lookup(name) != nil {
		return true
	}
	for _, sub := range c.Commands() {
		if hasFlag(sub, name) {
			return true
		}
	}
	return false
}

func dedup(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// README's field selector list is the one the API server accepts.
func TestReadmeFieldSelectorsMatchTheAPI(t *testing.T) {
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	para := paragraph(t, string(readme), "Field selectors (exact match")
	for _, want := range append([]string{"metadata.name", "metadata.namespace"}, historyv1alpha1.ChangeFieldLabels...) {
		if !strings.Contains(para, "`"+want+"`") {
			t.Errorf("README's field selector paragraph does not name %q, which the API accepts", want)
		}
	}
	for _, want := range historyv1alpha1.RepoStatusFieldLabels {
		if !strings.Contains(para, "`"+want+"`") {
			t.Errorf("README's field selector paragraph does not name RepoStatus's %q", want)
		}
	}
	accepted := map[string]bool{"metadata.name": true, "metadata.namespace": true}
	for _, l := range append(append([]string{}, historyv1alpha1.ChangeFieldLabels...), historyv1alpha1.RepoStatusFieldLabels...) {
		accepted[l] = true
	}
	for _, m := range regexp.MustCompile("`([a-zA-Z.]+)`").FindAllStringSubmatch(para, -1) {
		if strings.Contains(m[1], ".") || m[1] == "verb" || m[1] == "actor" || m[1] == "source" || m[1] == "auditID" || m[1] == "changeID" {
			if !accepted[m[1]] {
				t.Errorf("README names field selector %q, which the API refuses", m[1])
			}
		}
	}
}

// history-api.md states how long a revoked permission keeps showing history: the RBAC mirror's cache
// plus the delegated authorizer's.
func TestRevocationDelayDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/history-api.md")
	if err != nil {
		t.Fatal(err)
	}
	authz := genericoptions.NewDelegatingAuthorizationOptions()
	worst := access.DefaultTTL + max(authz.AllowCacheTTL, authz.DenyCacheTTL)
	want := "at most **" + strings.TrimSuffix(worst.Round(time.Second).String(), "s") + " s**"
	text := strings.Join(strings.Fields(string(doc)), " ")
	if !strings.Contains(text, want) {
		t.Errorf("docs/history-api.md should say a revocation takes effect %q (mirror %v + delegated authorizer %v/%v)",
			want, access.DefaultTTL, authz.AllowCacheTTL, authz.DenyCacheTTL)
	}
	if !strings.Contains(text, "for "+strings.TrimSuffix(access.DefaultTTL.String(), "s")+" s") {
		t.Errorf("docs/history-api.md does not state the mirror's TTL (%v)", access.DefaultTTL)
	}
}

func paragraph(t *testing.T, doc, start string) string {
	t.Helper()
	i := strings.Index(doc, start)
	if i < 0 {
		t.Fatalf("no paragraph starting %q", start)
	}
	p := doc[i:]
	if j := strings.Index(p, "\n\n"); j >= 0 {
		p = p[:j]
	}
	return p
}
