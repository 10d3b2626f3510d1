// Package testtools finds the tools tests run beside Go, which hack/ builds into kubehistory's cache,
// the same way the test framework finds the control plane (hack/control-plane-bins.sh): by running the
// script, which builds a tool once and prints its path.
package testtools

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// repoRoot is the repository this file is in.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Sops is the path of the sops CLI that hack/sops.sh builds (once) and prints; $KUBEHISTORY_SOPS
// overrides it.
func Sops() (string, error) {
	if p := os.Getenv("KUBEHISTORY_SOPS"); p != "" {
		return p, nil
	}
	cmd := exec.Command(filepath.Join(repoRoot(), "hack", "sops.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/sops.sh: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if p, ok := strings.CutPrefix(line, "SOPS="); ok && p != "" {
			return p, nil
		}
	}
	return "", fmt.Errorf("hack/sops.sh printed no path: %q", out)
}
