package framework

import "testing"

func TestMetricValue(t *testing.T) {
	text := `# HELP kubehistory_rule_cache_rule_generation [ALPHA] ...
# TYPE kubehistory_rule_cache_rule_generation gauge
kubehistory_rule_cache_rule_generation{kind="ClusterWatchRule",name="namespaces",namespace=""} 1
kubehistory_rule_cache_rule_generation{kind="WatchRule",name="configmaps",namespace="team-a"} 3
kubehistory_ingest_requests_total{code="200"} 12
kubehistory_ingest_changes_total 7
kubehistory_ingest_changes_total_other 9
`
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
		ok     bool
	}{
		{"kubehistory_rule_cache_rule_generation", map[string]string{"kind": "WatchRule", "namespace": "team-a", "name": "configmaps"}, 3, true},
		{"kubehistory_rule_cache_rule_generation", map[string]string{"kind": "ClusterWatchRule", "namespace": "", "name": "namespaces"}, 1, true},
		{"kubehistory_rule_cache_rule_generation", map[string]string{"kind": "WatchRule", "namespace": "team-b", "name": "configmaps"}, 0, false},
		{"kubehistory_ingest_requests_total", map[string]string{"code": "200"}, 12, true},
		{"kubehistory_ingest_requests_total", map[string]string{"code": "503"}, 0, false},
		{"kubehistory_ingest_changes_total", nil, 7, true},
	} {
		if got, ok := MetricValue(text, tc.name, tc.labels); got != tc.want || ok != tc.ok {
			t.Errorf("%s %v: %v %v, want %v %v", tc.name, tc.labels, got, ok, tc.want, tc.ok)
		}
	}
}
