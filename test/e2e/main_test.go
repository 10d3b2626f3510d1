// Package e2e runs kubehistory against a real local control plane: etcd and kube-apiserver built from the
// Go module proxy, the real kubectl, kubehistory-apiserver registered through an APIService.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubehistory/kubehistory/test/framework"
)

// env is the control plane shared by the tests of this package.
var env struct {
	plane *framework.Plane
	kh    *framework.Kubehistory
	// seeded names the index entries written before kubehistory started.
	seeded seededEntries
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kubehistory-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	keep := os.Getenv("KUBEHISTORY_E2E_KEEP") != ""
	defer func() {
		if !keep {
			_ = os.RemoveAll(dir)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	plane, err := framework.Start(ctx, framework.Config{Dir: filepath.Join(dir, "plane"), Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting control plane:", err)
		return 1
	}
	defer plane.Stop()
	env.plane = plane

	// High verbosity: the leak scan reads the log, and must see what kubehistory logs when debugging.
	kh, err := plane.InstallKubehistory(ctx, framework.InstallOptions{ExtraArgs: []string{"-v=6"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "installing kubehistory:", err)
		dumpLog(filepath.Join(plane.Dir, "kubehistory-apiserver.log"))
		return 1
	}
	env.kh = kh
	for _, ns := range []string{"team-a"} {
		if _, err := framework.KubectlRun(ctx, plane.AdminKubeconfig, "", "create", "namespace", ns); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if env.seeded, err = seedHistory(ctx, plane, dir); err != nil {
		fmt.Fprintln(os.Stderr, "recording the first changes:", err)
		dumpLog(filepath.Join(plane.Dir, "kubehistory-apiserver.log"))
		return 1
	}
	code := m.Run()
	if code != 0 {
		dumpLog(filepath.Join(plane.Dir, "kubehistory-apiserver.log"))
	}
	return code
}

func dumpLog(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	if len(data) > 20000 {
		data = data[len(data)-20000:]
	}
	fmt.Fprintf(os.Stderr, "---- %s (tail) ----\n%s\n", path, data)
}
