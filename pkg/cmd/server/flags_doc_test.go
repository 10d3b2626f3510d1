package server

import (
	"context"
	"os"
	"regexp"
	"sort"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Every flag the configuration reference names must exist in --help, and every kubehistory-specific
// flag must be in the reference.
func TestConfigurationReferenceMatchesFlags(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	cmd := NewCommand(context.Background())
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(--[a-z0-9-]+)").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1][2:]] = true
	}
	if len(documented) < 20 {
		t.Fatalf("found only %d flags in docs/configuration.md", len(documented))
	}
	// A flag may belong to a subcommand (index rebuild) instead of the server.
	exists := func(name string) bool {
		found := false
		var visit func(c *cobra.Command)
		visit = func(c *cobra.Command) {
			found = found || c.Flags().Lookup(name) != nil
			for _, sub := range c.Commands() {
				visit(sub)
			}
		}
		visit(cmd)
		return found
	}
	var missing []string
	for name := range documented {
		if !exists(name) {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("docs/configuration.md names flags that no --help has: %v", missing)
	}
	o := NewOptions(nil, nil)
	fss := o.Flags()
	for _, section := range []string{"kubehistory", "audit webhook", "NATS JetStream", "reconciler", "trust"} {
		fs, ok := fss.FlagSets[section]
		if !ok {
			t.Errorf("--help has no flag section %q: the test names sections that must be documented", section)
			continue
		}
		for _, name := range flagNames(fs) {
			if !documented[name] {
				t.Errorf("flag --%s (section %s) is not in docs/configuration.md", name, section)
			}
		}
	}
}

func flagNames(fs interface {
	VisitAll(func(*pflag.Flag))
}) []string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	return names
}
