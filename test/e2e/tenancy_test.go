package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubehistory/kubehistory/test/framework"
)

// ruleEditor returns a kubeconfig for a new user holding only kubehistory:rule-editor in team-a, and
// waits until kube-apiserver's RBAC cache lets them create WatchRules (dry run).
func ruleEditor(t *testing.T, user string) string {
	t.Helper()
	kc, err := env.plane.Kubeconfig(user)
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, "create", "rolebinding", user+"-rule-editor", "-n", "team-a", "--clusterrole=kubehistory:rule-editor", "--user="+user)
	if err := framework.WaitFor(context.Background(), 30*time.Second, func() error {
		out, err := kubectlAs(kc, "", "auth", "can-i", "create", "watchrules.config.kubehistory.io", "-n", "team-a")
		if err != nil || strings.TrimSpace(out) != "yes" {
			return fmt.Errorf("%s may not yet create watchrules: %v %s", user, err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return kc
}

func watchRuleYAML(name, resource string) string {
	return fmt.Sprintf(`apiVersion: config.kubehistory.io/v1alpha1
kind: WatchRule
metadata: {name: %s, namespace: team-a}
spec:
  destinationRef: {name: main}
  rules: [{apiGroups: [""], resources: [%q]}]
`, name, resource)
}

// A tenant holding rule-editor but no Secret read cannot make kubehistory record Secrets for them; once
// granted list on ConfigMaps, they may track ConfigMaps.
func TestTenancyWatchRuleNeedsList(t *testing.T) {
	carol := ruleEditor(t, "carol")
	_, err := kubectlAs(carol, watchRuleYAML("carol-secrets", "secrets"), "create", "--dry-run=server", "-f", "-")
	if err == nil {
		t.Fatal("WatchRule on secrets by a user who may not list secrets was admitted")
	}
	if want := "carol may not list secrets in team-a"; !strings.Contains(err.Error(), want) {
		t.Errorf("refusal does not name the missing permission %q: %v", want, err)
	}
	kubectl(t, "create", "role", "carol-configmaps", "-n", "team-a", "--verb=list", "--resource=configmaps")
	kubectl(t, "create", "rolebinding", "carol-configmaps", "-n", "team-a", "--role=carol-configmaps", "--user=carol")
	if err := framework.WaitFor(context.Background(), 30*time.Second, func() error {
		_, err := kubectlAs(carol, watchRuleYAML("carol-configmaps", "configmaps"), "create", "--dry-run=server", "-f", "-")
		return err
	}); err != nil {
		t.Errorf("WatchRule on configmaps by a user who may list them: %v", err)
	}
}

// A GitDestination cannot make kubehistory send a Secret its author cannot read.
func TestTenancyGitDestinationNeedsSecretGet(t *testing.T) {
	dave := ruleEditor(t, "dave")
	gd := `apiVersion: config.kubehistory.io/v1alpha1
kind: GitDestination
metadata: {name: dave, namespace: team-a}
spec:
  url: https://git.example.invalid/dave.git
  credentialsSecretRef: {name: someone-elses-token}
`
	_, err := kubectlAs(dave, gd, "create", "--dry-run=server", "-f", "-")
	if err == nil {
		t.Fatal("GitDestination with a credentials Secret its author may not get was admitted")
	}
	if want := "dave may not get secrets/someone-elses-token in team-a"; !strings.Contains(err.Error(), want) {
		t.Errorf("refusal does not name the missing permission %q: %v", want, err)
	}
}

// A ClusterWatchRule may only write to destinations in trusted namespaces, even for a cluster admin.
func TestTenancyClusterWatchRuleTrustedNamespace(t *testing.T) {
	cwr := `apiVersion: config.kubehistory.io/v1alpha1
kind: ClusterWatchRule
metadata: {name: to-tenant}
spec:
  destinationRef: {name: main, namespace: team-b}
  rules: [{apiGroups: [""], resources: ["namespaces"], scope: Cluster}]
`
	_, err := framework.KubectlRun(context.Background(), env.plane.AdminKubeconfig, cwr, "create", "--dry-run=server", "-f", "-")
	if err == nil {
		t.Fatal("ClusterWatchRule writing to team-b's destination was admitted")
	}
	if !strings.Contains(err.Error(), "trusted namespace") || !strings.Contains(err.Error(), "team-b") {
		t.Errorf("refusal does not say why: %v", err)
	}
	ok := strings.Replace(cwr, "namespace: team-b", "namespace: "+framework.TrustedDestinationNamespaces[0], 1)
	if _, err := framework.KubectlRun(context.Background(), env.plane.AdminKubeconfig, ok, "create", "--dry-run=server", "-f", "-"); err != nil {
		t.Errorf("ClusterWatchRule to a trusted namespace: %v", err)
	}
}

// The shipped RBAC grants no wildcard: kubehistory reads named resources only.
func TestShippedRBACHasNoWildcard(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(framework.RepoRoot(), "artifacts", "rbac", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no RBAC artifacts: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
			var role struct {
				Kind  string              `json:"kind"`
				Rules []rbacv1.PolicyRule `json:"rules"`
			}
			if err := yaml.Unmarshal([]byte(doc), &role); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			for _, r := range role.Rules {
				for _, v := range [][]string{r.APIGroups, r.Resources, r.Verbs, r.ResourceNames, r.NonResourceURLs} {
					for _, s := range v {
						if strings.Contains(s, "*") {
							t.Errorf("%s: %s rule %v contains %q", filepath.Base(f), role.Kind, r, s)
						}
						if s == "nodes/proxy" {
							t.Errorf("%s: %s grants nodes/proxy", filepath.Base(f), role.Kind)
						}
					}
				}
			}
		}
	}
}

// A RepoStatus (repository URL, last error, orphaned paths) is shown only to those who may get its
// GitDestination: a history viewer of team-a sees team-a's ResourceChanges but not its RepoStatus until
// granted get on that GitDestination (by name).
func TestRepoStatusNeedsGitDestinationGet(t *testing.T) {
	ctx := context.Background()
	user := "repostatus-viewer"
	kc, err := env.plane.Kubeconfig(user)
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, "create", "rolebinding", user+"-history", "-n", "team-a", "--clusterrole=kubehistory:history-viewer", "--user="+user)
	if err := framework.WaitFor(ctx, 30*time.Second, func() error {
		out, err := kubectlAs(kc, "", "get", "repostatuses", "-n", "team-a", "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			t.Fatalf("a viewer without get on the GitDestination lists RepoStatuses:\n%s", out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectlAs(kc, "", "get", "repostatus", "main", "-n", "team-a"); err == nil || !strings.Contains(out+err.Error(), "NotFound") {
		t.Fatalf("get of a hidden RepoStatus: err=%v %s", err, out)
	}
	// The admin sees it: the RepoStatus exists.
	kubectl(t, "get", "repostatus", "main", "-n", "team-a")
	kubectl(t, "create", "role", user+"-destination", "-n", "team-a", "--verb=get", "--resource=gitdestinations.config.kubehistory.io", "--resource-name=main")
	kubectl(t, "create", "rolebinding", user+"-destination", "-n", "team-a", "--role="+user+"-destination", "--user="+user)
	// Granted: visible once kube-apiserver's RBAC and the mirror's decision cache (10s) follow.
	if err := framework.WaitFor(ctx, 60*time.Second, func() error {
		out, err := kubectlAs(kc, "", "get", "repostatuses", "-n", "team-a", "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "repostatus.history.kubehistory.io/main" {
			return fmt.Errorf("repostatuses seen: %q", out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
