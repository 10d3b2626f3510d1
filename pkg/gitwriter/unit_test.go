package gitwriter

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
)

// TestUpdateTree writes trees with the object writer and checks them with git fsck and ls-tree.
func TestUpdateTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r.git")
	repo, err := git.PlainInit(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	ow := &objectWriter{s: repo.Storer}
	blob := func(s string) plumbing.Hash {
		h, err := ow.put(plumbing.BlobObject, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	steps := []struct {
		edits map[string]treeEdit
		want  string
	}{
		{map[string]treeEdit{"a/b/c.yaml": {blob: blob("c")}, "a/b.yaml": {blob: blob("b")}, "a/b-c/d.yaml": {blob: blob("d")}, "z.yaml": {blob: blob("z")}},
			"a/b-c/d.yaml\na/b.yaml\na/b/c.yaml\nz.yaml"},
		{map[string]treeEdit{"a/b/c.yaml": {remove: true}, "a/e.yaml": {blob: blob("e")}}, "a/b-c/d.yaml\na/b.yaml\na/e.yaml\nz.yaml"},
		{map[string]treeEdit{"a/b-c/d.yaml": {remove: true}, "a/b.yaml": {remove: true}, "a/e.yaml": {remove: true}, "missing/x.yaml": {remove: true}}, "z.yaml"},
	}
	tree := plumbing.ZeroHash
	for i, s := range steps {
		if tree, err = ow.updateTree(tree, s.edits); err != nil {
			t.Fatal(err)
		}
		c, err := ow.putObject(&object.Commit{Author: object.Signature{Name: "t", Email: "t@t"}, Committer: object.Signature{Name: "t", Email: "t@t"}, Message: "m", TreeHash: tree})
		if err != nil {
			t.Fatal(err)
		}
		if err := repo.Storer.SetReference(plumbing.NewHashReference("refs/heads/main", c)); err != nil {
			t.Fatal(err)
		}
		gitCLI(t, dir, "fsck", "--strict", "--no-dangling")
		if got := gitCLI(t, dir, "ls-tree", "-r", "--name-only", c.String()); got != s.want {
			t.Fatalf("step %d: tree\n%s\nwant\n%s", i, got, s.want)
		}
	}
}

func TestApplies(t *testing.T) {
	tests := []struct {
		name  string
		cur   gitrecord.ObjectVersion
		known bool
		rv    string
		del   bool
		want  bool
	}{
		{"unknown path", gitrecord.ObjectVersion{}, false, "5", false, true},
		{"newer", gitrecord.ObjectVersion{RV: "5"}, true, "6", false, true},
		{"same", gitrecord.ObjectVersion{RV: "5"}, true, "5", false, true},
		{"older", gitrecord.ObjectVersion{RV: "10"}, true, "9", false, false},
		{"numeric, not lexical", gitrecord.ObjectVersion{RV: "9"}, true, "10", false, true},
		{"delete at the same version", gitrecord.ObjectVersion{RV: "5"}, true, "5", true, true},
		{"older delete", gitrecord.ObjectVersion{RV: "5"}, true, "4", true, false},
		{"state before the delete", gitrecord.ObjectVersion{RV: "5", Deleted: true}, true, "5", false, false},
		{"recreated", gitrecord.ObjectVersion{RV: "5", Deleted: true}, true, "6", false, true},
		{"opaque versions", gitrecord.ObjectVersion{RV: "abc"}, true, "abb", false, true},
		{"unknown version", gitrecord.ObjectVersion{RV: "5"}, true, "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := applies(tc.cur, tc.known, tc.rv, tc.del); got != tc.want {
				t.Fatalf("applies = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestConfigFromGitDestination(t *testing.T) {
	gd := &configv1alpha1.GitDestination{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "repo"},
		Spec: configv1alpha1.GitDestinationSpec{URL: "https://git.example.com/org/repo.git", SensitiveResources: []string{"configmaps"},
			CommitIdentity: configv1alpha1.CommitIdentity{AuthorEmailPattern: "{username}@corp.example"}}}
	cfg, err := ConfigFromGitDestination(gd, map[string][]byte{"token": []byte("tok")})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Branch != "main" || cfg.CommitWindow != DefaultCommitWindow || cfg.CommitterName != "kubehistory" || cfg.Credentials.Token != "tok" {
		t.Fatalf("config %+v", cfg)
	}
	cfg.DataDir = t.TempDir()
	auth, err := cfg.authMethod()
	if err != nil || auth == nil || !strings.Contains(auth.String(), "kubehistory") {
		t.Fatalf("auth %v %v", auth, err)
	}
	w := &Writer{cfg: cfg}
	if got := w.authorEmail("system:serviceaccount:ci:deployer"); got != "system-serviceaccount-ci-deployer@corp.example" {
		t.Fatalf("author email %q", got)
	}
	for _, bad := range []string{"", "https://u:p@git.example.com/r.git"} {
		gd.Spec.URL = bad
		if _, err := ConfigFromGitDestination(gd, nil); err == nil {
			t.Errorf("URL %q accepted", bad)
		}
	}
	gd.Spec.URL = "git@github.com:org/repo.git"
	cfg, err = ConfigFromGitDestination(gd, map[string][]byte{"ssh-privatekey": []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	if _, err := cfg.authMethod(); err == nil || !strings.Contains(err.Error(), "known_hosts") {
		t.Fatalf("ssh without known_hosts: %v", err)
	}
}

func TestDynamicFetcher(t *testing.T) {
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", ResourceVersion: "9"}, Data: map[string]string{"k": "v"}}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	f := DynamicFetcher{Client: dynamicfake.NewSimpleDynamicClient(scheme, cm)}
	body, found, err := f.Get(context.Background(), "", "v1", "configmaps", "a", "web")
	if err != nil || !found || !strings.Contains(string(body), `"k":"v"`) || bodyRV(body) != "9" {
		t.Fatalf("Get: %s %v %v", body, found, err)
	}
	if _, found, err := f.Get(context.Background(), "", "v1", "configmaps", "a", "nope"); err != nil || found {
		t.Fatalf("missing object: found %v err %v", found, err)
	}
}
