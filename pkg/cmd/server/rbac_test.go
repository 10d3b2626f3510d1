package server

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	rbacv1 "k8s.io/api/rbac/v1"
)

func TestTrackedClusterRole(t *testing.T) {
	tracked := []AuditPolicyTracked{
		{Namespace: "team-a", Resources: []schema.GroupResource{{Resource: "configmaps"}, {Group: "example.com", Resource: "widgets"}}},
		{Resources: []schema.GroupResource{{Resource: "configmaps"}, {Resource: "secrets"}, {Group: "apps", Resource: "deployments"}}},
	}
	out, err := TrackedRBACYAML(tracked, "kubehistory-system")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(out), "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("want a ClusterRole and a binding:\n%s", out)
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal([]byte(docs[0]), &role); err != nil {
		t.Fatal(err)
	}
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"example.com"}, Resources: []string{"widgets"}, Verbs: []string{"get", "list", "watch"}},
	}
	if len(role.Rules) != len(want) {
		t.Fatalf("rules %+v", role.Rules)
	}
	for i := range want {
		if strings.Join(role.Rules[i].APIGroups, ",") != strings.Join(want[i].APIGroups, ",") ||
			strings.Join(role.Rules[i].Resources, ",") != strings.Join(want[i].Resources, ",") ||
			strings.Join(role.Rules[i].Verbs, ",") != strings.Join(want[i].Verbs, ",") {
			t.Errorf("rule %d: %+v, want %+v", i, role.Rules[i], want[i])
		}
		for _, r := range role.Rules[i].Resources {
			if r == "*" || strings.Contains(r, "/") {
				t.Errorf("wildcard or subresource %q", r)
			}
		}
	}
	var binding rbacv1.ClusterRoleBinding
	if err := yaml.Unmarshal([]byte(docs[1]), &binding); err != nil {
		t.Fatal(err)
	}
	if binding.RoleRef.Name != TrackedClusterRoleName || binding.Subjects[0].Namespace != "kubehistory-system" || binding.Subjects[0].Name != "kubehistory-apiserver" {
		t.Errorf("binding %+v", binding)
	}
}
