package server

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	componentbaseconfig "k8s.io/component-base/config"
	componentbasevalidation "k8s.io/component-base/config/validation"

	"github.com/kubehistory/kubehistory/pkg/change"
	versioned "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned"
	configinformers "github.com/kubehistory/kubehistory/pkg/generated/informers/externalversions"
	"github.com/kubehistory/kubehistory/pkg/gitwriter"
	"github.com/kubehistory/kubehistory/pkg/ingest"
	"github.com/kubehistory/kubehistory/pkg/reconcile"
)

// ReconcileOptions tune the reconciler.
type ReconcileOptions struct {
	Interval time.Duration
	Settle   time.Duration
	// GapGrace is how long the writers hold a seed that finds Git behind before recording a Gap.
	GapGrace time.Duration
	// LeaderElection is component-base's leader election configuration. It campaigns for the
	// reconciler's Lease (ResourceName) in ResourceNamespace; its durations also time every
	// per-destination writer lease.
	LeaderElection componentbaseconfig.LeaderElectionConfiguration
}

// NewReconcileOptions returns the defaults.
func NewReconcileOptions() *ReconcileOptions {
	return &ReconcileOptions{Interval: reconcile.DefaultInterval, Settle: reconcile.DefaultSettle, GapGrace: gitwriter.DefaultGapGrace,
		LeaderElection: componentbaseconfig.LeaderElectionConfiguration{
			LeaderElect:       true,
			LeaseDuration:     metav1.Duration{Duration: 15 * time.Second},
			RenewDeadline:     metav1.Duration{Duration: 10 * time.Second},
			RetryPeriod:       metav1.Duration{Duration: 2 * time.Second},
			ResourceLock:      resourcelock.LeasesResourceLock,
			ResourceName:      reconcile.DefaultLeaseName,
			ResourceNamespace: "kubehistory-system",
		}}
}

// AddFlags adds the reconciler flags.
func (o *ReconcileOptions) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.Interval, "reconcile-interval", o.Interval, "How often the reconciler refreshes discovery (CRDs created since), lists every tracked resource, seeds what Git lacks and checks for orphans. Rule and destination changes start a pass at once.")
	fs.DurationVar(&o.Settle, "reconcile-settle", o.Settle, "How long after its last write an object is left to its audit event before the reconciler seeds it (a seed that overtakes the audit event would record a gap that is none); also the grace period before a file counts as orphaned. Keep it above kube-apiserver's --audit-webhook-batch-max-wait.")
	fs.DurationVar(&o.GapGrace, "gap-grace", o.GapGrace, "How long after it was published a seed that finds Git behind the cluster is held before it is recorded as a Gap: the audit change that explains the difference may still be on its way (kube-apiserver re-sends a failed batch for about 2.5 minutes). Keep it above that span.")
	le := &o.LeaderElection
	fs.BoolVar(&le.LeaderElect, "leader-elect", le.LeaderElect, "Campaign for the reconciler's Lease so that exactly one replica reconciles; off only with a single replica.")
	fs.StringVar(&le.ResourceNamespace, "leader-election-namespace", le.ResourceNamespace, "Namespace of the reconciler's Lease ("+reconcile.DefaultLeaseName+"); the lease holder identity is --replica-id.")
	// The durations under component-base's flag names; they time the writer leases too.
	fs.DurationVar(&le.LeaseDuration.Duration, "leader-elect-lease-duration", le.LeaseDuration.Duration, "How long a Lease (the reconciler's, and each GitDestination's writer lease) outlives its holder's last renewal: the longest a dead replica's reconciler or writers wait to be replaced.")
	fs.DurationVar(&le.RenewDeadline.Duration, "leader-elect-renew-deadline", le.RenewDeadline.Duration, "How long a holder keeps trying to renew a Lease before it stops leading; less than --leader-elect-lease-duration.")
	fs.DurationVar(&le.RetryPeriod.Duration, "leader-elect-retry-period", le.RetryPeriod.Duration, "How often candidates try to acquire, and holders to renew, a Lease.")
}

// Validate reports inconsistent reconciler options.
func (o *ReconcileOptions) Validate() []error {
	var errs []error
	if o.Interval < time.Second {
		errs = append(errs, fmt.Errorf("--reconcile-interval %s must be at least 1s", o.Interval))
	}
	if o.GapGrace <= 0 {
		errs = append(errs, fmt.Errorf("--gap-grace %s must be positive", o.GapGrace))
	}
	if o.Settle < 0 {
		errs = append(errs, fmt.Errorf("--reconcile-settle %s must not be negative", o.Settle))
	}
	if o.LeaderElection.LeaderElect && o.LeaderElection.ResourceNamespace == "" {
		errs = append(errs, fmt.Errorf("--leader-election-namespace is required with --leader-elect"))
	}
	// component-base's checks (positive durations, renew deadline below the lease duration, retry
	// period at most the renew deadline) hold for the writer leases even with --leader-elect=false.
	le := o.LeaderElection
	le.LeaderElect = true
	if le.ResourceNamespace == "" {
		le.ResourceNamespace = "kubehistory-system"
	}
	for _, e := range componentbasevalidation.ValidateLeaderElectionConfiguration(&le, field.NewPath("leaderElection")) {
		errs = append(errs, fmt.Errorf("--leader-elect-*: %s", leaderElectionFlagNames.Replace(e.Error())))
	}
	// client-go's elector refuses (panics in RunOrDie) a renew deadline within the jittered retry period.
	if rd, rp := le.RenewDeadline.Duration, le.RetryPeriod.Duration; rp > 0 && float64(rd) <= leaderelection.JitterFactor*float64(rp) {
		errs = append(errs, fmt.Errorf("--leader-elect-renew-deadline %s must be greater than %.1f × --leader-elect-retry-period %s", rd, leaderelection.JitterFactor, rp))
	}
	return errs
}

// leaderElectionFlagNames turns component-base's field paths into this command's flag names.
var leaderElectionFlagNames = strings.NewReplacer(
	"leaderElection.leaseDuration", "--leader-elect-lease-duration",
	"leaderElection.renewDeadline", "--leader-elect-renew-deadline",
	"leaderElection.retryPeriod", "--leader-elect-retry-period",
	"leaderElection.resourceNamespace", "--leader-election-namespace",
)

// buildReconciler wires the reconciler on its own clients: its paged Lists and status updates must not
// share the client-side rate limit of the writers' fetches.
func (o *Options) buildReconciler(clientConfig *rest.Config, publisher reconcile.Publisher, cfgInf configinformers.SharedInformerFactory,
	kubeInf kubeinformers.SharedInformerFactory, policy change.Policy, trust ingest.DestinationTrust) (*reconcile.Reconciler, error) {
	cfg := rest.CopyConfig(clientConfig)
	cfg.QPS, cfg.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	client, err := versioned.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return reconcile.New(reconcile.Options{
		Interval:       o.Reconcile.Interval,
		Settle:         o.Reconcile.Settle,
		LeaderElect:    o.Reconcile.LeaderElection.LeaderElect,
		LeaseNamespace: o.Reconcile.LeaderElection.ResourceNamespace,
		LeaseName:      o.Reconcile.LeaderElection.ResourceName,
		LeaseDuration:  o.Reconcile.LeaderElection.LeaseDuration.Duration,
		RenewDeadline:  o.Reconcile.LeaderElection.RenewDeadline.Duration,
		RetryPeriod:    o.Reconcile.LeaderElection.RetryPeriod.Duration,
		Identity:       o.ReplicaID,
		Policy:         policy,
		Trust:          trust,
	}, kube, client, dyn, disc, publisher, cfgInf, kubeInf)
}
