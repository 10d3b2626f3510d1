package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubehistory/kubehistory/test/framework"
)

// TestDeployKustomizeServerDryRun validates the cluster install (artifacts/deploy and its external-NATS
// overlay) against the real kube-apiserver: schemas, RBAC references, APIService and CRDs, without
// changing anything. Server-side apply, because the local plane already holds the same objects in their
// local form (an ExternalName Service): apply then computes the change from the same field manager.
func TestDeployKustomizeServerDryRun(t *testing.T) {
	for _, dir := range []string{"artifacts/deploy", "artifacts/deploy/overlays/external-nats"} {
		t.Run(dir, func(t *testing.T) {
			out, err := framework.KubectlRun(context.Background(), env.plane.AdminKubeconfig, "",
				"apply", "-k", filepath.Join(framework.RepoRoot(), dir), "--dry-run=server", "--server-side", "--force-conflicts")
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{
				"deployment.apps/kubehistory-apiserver", "service/kubehistory-apiserver",
				"apiservice.apiregistration.k8s.io/v1alpha1.history.kubehistory.io",
				"customresourcedefinition.apiextensions.k8s.io/watchrules.config.kubehistory.io",
				"clusterrole.rbac.authorization.k8s.io/kubehistory:history-viewer",
				"rolebinding.rbac.authorization.k8s.io/kubehistory:extension-apiserver-authentication-reader",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("missing %s in:\n%s", want, out)
				}
			}
			if strings.HasSuffix(dir, "deploy") != strings.Contains(out, "persistentvolumeclaim/kubehistory-data") {
				t.Errorf("the PVC belongs to the single-replica install only:\n%s", out)
			}
		})
	}
}
