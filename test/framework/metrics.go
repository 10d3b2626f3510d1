package framework

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Metrics returns replica r's /metrics in the Prometheus text format.
func (k *Kubehistory) Metrics(ctx context.Context, r *Replica) (string, error) {
	body, err := k.aggregatorGet(ctx, r, "/metrics")
	return string(body), err
}

var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// MetricValue returns the value of the sample of metric name whose labels include every one of labels
// (false when there is none) in a /metrics text.
func MetricValue(text, name string, labels map[string]string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		got := map[string]string{}
		if rest[0] == '{' {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			for _, m := range labelPair.FindAllStringSubmatch(rest[1:end], -1) {
				got[m[1]] = m[2]
			}
			rest = rest[end+1:]
		}
		match := true
		for k, v := range labels {
			if got[k] != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		return v, true
	}
	return 0, false
}

// Rule names a WatchRule (Namespace set) or a ClusterWatchRule (Namespace empty).
type Rule struct {
	Namespace, Name string
}

func (r Rule) kind() string {
	if r.Namespace == "" {
		return "ClusterWatchRule"
	}
	return "WatchRule"
}

func (r Rule) String() string {
	if r.Namespace == "" {
		return "ClusterWatchRule " + r.Name
	}
	return "WatchRule " + r.Namespace + "/" + r.Name
}

// WaitForRules waits until the rule cache of every replica matches audit events against the rules as
// they are now: each replica's kubehistory_rule_cache_rule_generation reports at least the generation the
// API server has for each rule. Changes made after it returns are matched by the rules' current spec.
func (k *Kubehistory) WaitForRules(ctx context.Context, rules ...Rule) error {
	for _, rule := range rules {
		args := []string{"get", strings.ToLower(rule.kind()), rule.Name, "-o", "jsonpath={.metadata.generation}"}
		if rule.Namespace != "" {
			args = append(args, "-n", rule.Namespace)
		}
		out, err := KubectlRun(ctx, k.Plane.AdminKubeconfig, "", args...)
		if err != nil {
			return err
		}
		gen, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
		if err != nil {
			return fmt.Errorf("%s: generation %q: %w", rule, out, err)
		}
		labels := map[string]string{"kind": rule.kind(), "namespace": rule.Namespace, "name": rule.Name}
		for _, r := range k.Replicas {
			if err := WaitFor(ctx, 60*time.Second, func() error {
				text, err := k.Metrics(ctx, r)
				if err != nil {
					return err
				}
				if got, ok := MetricValue(text, "kubehistory_rule_cache_rule_generation", labels); !ok || got < gen {
					return fmt.Errorf("%s: the rule cache of %s holds generation %v (present %v), want %v", rule, r.Name, got, ok, gen)
				}
				return nil
			}); err != nil {
				return err
			}
		}
	}
	return nil
}
