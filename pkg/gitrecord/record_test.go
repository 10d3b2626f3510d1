package gitrecord

import (
	"github.com/kubehistory/kubehistory/pkg/change"

	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnifiedDiffApplies checks every diff with `git apply --check` against the old file.
func TestUnifiedDiffApplies(t *testing.T) {
	long := strings.Repeat("line\n", 20)
	tests := []struct {
		name         string
		old, new     string
		oldOK, newOK bool
		wantEmpty    bool
	}{
		{name: "create", new: "a: 1\nb: 2\n", newOK: true},
		{name: "delete", old: "a: 1\n", oldOK: true},
		{name: "change in the middle", old: long + "x: 1\n" + long, new: long + "x: 2\n" + long, oldOK: true, newOK: true},
		{name: "append", old: "a\n", new: "a\nb\n", oldOK: true, newOK: true},
		{name: "old without final newline", old: "a\nb", new: "a\nb\n", oldOK: true, newOK: true},
		{name: "new without final newline", old: "a\nb\n", new: "a\nc", oldOK: true, newOK: true},
		{name: "unchanged", old: "a\n", new: "a\n", oldOK: true, newOK: true, wantEmpty: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := UnifiedDiff("ns/core/configmaps/x.yaml", []byte(tc.old), []byte(tc.new), tc.oldOK, tc.newOK)
			if tc.wantEmpty {
				if d != "" {
					t.Fatalf("want no diff, got\n%s", d)
				}
				return
			}
			dir := t.TempDir()
			gitCLI(t, dir, "init", "-q")
			if tc.oldOK {
				if err := os.MkdirAll(filepath.Join(dir, "ns/core/configmaps"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "ns/core/configmaps/x.yaml"), []byte(tc.old), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, "p.diff"), []byte(d), 0o644); err != nil {
				t.Fatal(err)
			}
			gitCLI(t, dir, "apply", "--check", "p.diff")
			gitCLI(t, dir, "apply", "p.diff")
			got, err := os.ReadFile(filepath.Join(dir, "ns/core/configmaps/x.yaml"))
			if tc.newOK && string(got) != tc.new || !tc.newOK && err == nil {
				t.Fatalf("applied %q (err %v), want %q\n%s", got, err, tc.new, d)
			}
		})
	}
	if d, cut := TruncateDiff("a\nbb\nccc\n", 6); d != "a\nbb\n" || !cut {
		t.Fatalf("truncate: %q %v", d, cut)
	}
}

func TestObjectPath(t *testing.T) {
	tests := []struct {
		prefix string
		obj    change.Object
		want   string
	}{
		{"", change.Object{Resource: "configmaps", Namespace: "a", Name: "web"}, "a/core/configmaps/web.yaml"},
		{"/p/q/", change.Object{Group: "apps", Resource: "deployments", Namespace: "a", Name: "d"}, "p/q/a/apps/deployments/d.yaml"},
		{"p", change.Object{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "system:admin"}, "p/_cluster/rbac.authorization.k8s.io/clusterroles/system:admin.yaml"},
		{"", change.Object{Resource: "x", Namespace: "..", Name: "a/b"}, "_.._/core/x/a%2Fb.yaml"},
	}
	for _, tc := range tests {
		if got := ObjectPath(tc.prefix, tc.obj); got != tc.want {
			t.Errorf("ObjectPath(%q, %+v) = %q, want %q", tc.prefix, tc.obj, got, tc.want)
		}
	}
}

func TestRedactedURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://user@git.example.com/r.git", "https://git.example.com/r.git"},
		{"https://user:secret@git.example.com/r.git", "https://git.example.com/r.git"},
		{"ssh://git@git.example.com/r.git", "ssh://git@git.example.com/r.git"},
		{"git@git.example.com:r.git", "git@git.example.com:r.git"},
	}
	for _, tc := range tests {
		if got := RedactedURL(tc.in); got != tc.want {
			t.Errorf("RedactedURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func gitCLI(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestMessageFormat holds the commit message grammar: every commit the writer made follows it, and the
// index rebuilt from Git reads them back with ParseMessage.
func TestMessageFormat(t *testing.T) {
	obj := func(group, resource, ns, name string) change.Object {
		return change.Object{Group: group, Resource: resource, Namespace: ns, Name: name}
	}
	m := Message{
		Author: AuthorName("alice"),
		Items: []Item{
			{Verb: change.VerbUpdate, Object: obj("", "configmaps", "team-a", "web")},
			{Verb: change.VerbDelete, Object: obj("apps", "deployments", "team-a", "d")},
			{Verb: change.VerbCreate, Object: obj("", "secrets", "team-a", "s")},
			{Verb: change.VerbUpdate, Object: obj("", "configmaps", "team-a", "web")},
			{Verb: change.VerbSeed, Object: obj("rbac.authorization.k8s.io", "clusterroles", "", "admin")},
		},
		Trailers: Trailers{
			IDs:         []string{"c1", "c2", "c3", "c4", "c5"},
			AuditIDs:    []string{"a1", "a1", "a2", "a2", ""},
			ActorGroups: []string{"system:authenticated", "team-a"},
			Versions: map[string]ObjectVersion{
				"p/team-a/core/configmaps/web.yaml":                            {RV: "7"},
				"p/team-a/apps/deployments/d.yaml":                             {RV: "5", Deleted: true},
				"p/_cluster/rbac.authorization.k8s.io/clusterroles/admin.yaml": {},
			},
			Markers: map[string][]string{"c2": {"ObjectGone"}, "c5": {"FetchedAtWriteTime", "Gap"}},
		},
	}
	want := `alice: update configmaps team-a/web, delete deployments.apps team-a/d, create secrets team-a/s and 1 more

- update configmaps team-a/web
- delete deployments.apps team-a/d
- create secrets team-a/s
- seed clusterroles.rbac.authorization.k8s.io admin

Kubehistory-Change-Id: c1
Kubehistory-Change-Id: c2
Kubehistory-Change-Id: c3
Kubehistory-Change-Id: c4
Kubehistory-Change-Id: c5
Kubehistory-Audit-Id: a1
Kubehistory-Audit-Id: a2
Kubehistory-Actor-Groups: system:authenticated, team-a
Kubehistory-Object-Version: p/_cluster/rbac.authorization.k8s.io/clusterroles/admin.yaml -
Kubehistory-Object-Version: p/team-a/apps/deployments/d.yaml 5 deleted
Kubehistory-Object-Version: p/team-a/core/configmaps/web.yaml 7
Kubehistory-Marker: c2 ObjectGone
Kubehistory-Marker: c5 FetchedAtWriteTime
Kubehistory-Marker: c5 Gap
`
	got := m.Format()
	if got != want {
		t.Fatalf("Format:\n%s\nwant:\n%s", got, want)
	}
	p := ParseMessage(got, "alice")
	if len(p.Items) != 4 || p.Items[3] != m.Items[4] || p.Items[1] != m.Items[1] {
		t.Errorf("items %+v", p.Items)
	}
	if strings.Join(p.IDs, ",") != "c1,c2,c3,c4,c5" || strings.Join(p.AuditIDs, ",") != "a1,a2" ||
		strings.Join(p.ActorGroups, ",") != "system:authenticated,team-a" {
		t.Errorf("trailers %+v", p.Trailers)
	}
	if len(p.Versions) != 3 || p.Versions["p/team-a/apps/deployments/d.yaml"] != (ObjectVersion{RV: "5", Deleted: true}) {
		t.Errorf("versions %+v", p.Versions)
	}
	if strings.Join(p.Markers["c5"], ",") != "FetchedAtWriteTime,Gap" || len(p.Markers) != 2 {
		t.Errorf("markers %+v", p.Markers)
	}

	short := Message{Author: AuthorName(""), Items: m.Items[:2], Trailers: Trailers{IDs: []string{"c1"}}}
	if got, want := short.Format(), "unknown: update configmaps team-a/web, delete deployments.apps team-a/d\n\nKubehistory-Change-Id: c1\n"; got != want {
		t.Fatalf("short Format %q, want %q", got, want)
	}
	if p := ParseMessage(short.Format(), UnknownAuthor); len(p.Items) != 2 || p.Items[0] != short.Items[0] {
		t.Errorf("short items %+v", p.Items)
	}
}
