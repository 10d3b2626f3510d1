package server

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

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
	GapGrace       time.Duration
	LeaderElect    bool
	LeaseNamespace string
}

// NewReconcileOptions returns the defaults.
func NewReconcileOptions() *ReconcileOptions {
	return &ReconcileOptions{Interval: reconcile.DefaultInterval, Settle: reconcile.DefaultSettle, GapGrace: gitwriter.DefaultGapGrace,
		LeaderElect: true, LeaseNamespace: "kubehistory-system"}
}

// AddFlags adds the reconciler flags.
func (o *ReconcileOptions) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.Interval, "reconcile-interval", o.Interval, "How often the reconciler refreshes discovery (CRDs created since), lists every tracked resource, seeds what Git lacks and checks for orphans. Rule and destination changes start a pass at once.")
	fs.DurationVar(&o.Settle, "reconcile-settle", o.Settle, "How long after its last write an object is left to its audit event before the reconciler seeds it (a seed that overtakes the audit event would record a gap that is none); also the grace period before a file counts as orphaned. Keep it above kube-apiserver's --audit-webhook-batch-max-wait.")
	fs.DurationVar(&o.GapGrace, "gap-grace", o.GapGrace, "How long after it was published a seed that finds Git behind the cluster is held before it is recorded as a Gap: the audit change that explains the difference may still be on its way (kube-apiserver re-sends a failed batch for about 2.5 minutes). Keep it above that span.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "Campaign for the reconciler's Lease so that exactly one replica reconciles; off only with a single replica.")
	fs.StringVar(&o.LeaseNamespace, "leader-election-namespace", o.LeaseNamespace, "Namespace of the reconciler's Lease ("+reconcile.DefaultLeaseName+"); the lease holder identity is --replica-id.")
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
	if o.LeaderElect && o.LeaseNamespace == "" {
		errs = append(errs, fmt.Errorf("--leader-election-namespace is required with --leader-elect"))
	}
	return errs
}

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
		LeaderElect:    o.Reconcile.LeaderElect,
		LeaseNamespace: o.Reconcile.LeaseNamespace,
		Identity:       o.ReplicaID,
		Policy:         policy,
		Trust:          trust,
	}, kube, client, dyn, disc, publisher, cfgInf, kubeInf)
}
