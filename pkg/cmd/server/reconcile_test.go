package server

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestLeaderElectionValidation(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "defaults"},
		{name: "longer lease", args: []string{"--leader-elect-lease-duration=60s", "--leader-elect-renew-deadline=40s"}},
		{name: "renew not below lease", args: []string{"--leader-elect-renew-deadline=15s"}, wantErr: "--leader-elect-lease-duration"},
		{name: "retry above renew", args: []string{"--leader-elect-retry-period=11s"}, wantErr: "--leader-elect-renew-deadline"},
		{name: "zero retry", args: []string{"--leader-elect-retry-period=0s"}, wantErr: "--leader-elect-retry-period"},
		{name: "no namespace", args: []string{"--leader-election-namespace="}, wantErr: "--leader-election-namespace"},
		{name: "without election the writer leases still need sane timing", args: []string{"--leader-elect=false", "--leader-elect-renew-deadline=30s"}, wantErr: "--leader-elect-lease-duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := NewReconcileOptions()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			var msgs []string
			for _, err := range o.Validate() {
				msgs = append(msgs, err.Error())
			}
			got := strings.Join(msgs, "; ")
			if tt.wantErr == "" {
				if got != "" {
					t.Fatalf("unexpected errors: %s", got)
				}
				if o.LeaderElection.LeaseDuration.Duration < time.Second {
					t.Fatalf("lease duration %v", o.LeaderElection.LeaseDuration)
				}
				return
			}
			if !strings.Contains(got, tt.wantErr) {
				t.Fatalf("errors %q do not name %s", got, tt.wantErr)
			}
		})
	}
}
