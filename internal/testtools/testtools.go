// Package testtools finds the tools tests run that hack/ builds into kubehistory's cache.
package testtools

import (
	"fmt"
	"os"
	"path/filepath"
)

// SopsVersion is the sops CLI hack/sops.sh builds.
const SopsVersion = "v3.13.3"

// Cache is kubehistory's tool cache: $KUBEHISTORY_CACHE, else $XDG_CACHE_HOME/kubehistory, else
// ~/.cache/kubehistory (as in hack/*.sh).
func Cache() string {
	if c := os.Getenv("KUBEHISTORY_CACHE"); c != "" {
		return c
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "kubehistory")
}

// Sops is the path of the sops CLI ($KUBEHISTORY_SOPS overrides), or an error saying how to build it.
func Sops() (string, error) {
	if p := os.Getenv("KUBEHISTORY_SOPS"); p != "" {
		return p, nil
	}
	p := filepath.Join(Cache(), "bin", "sops-"+SopsVersion)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("the sops CLI is not built (%v): run hack/sops.sh", err)
	}
	return p, nil
}
