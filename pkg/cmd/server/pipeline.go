package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/client-go/dynamic"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/destinations"
	versioned "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned"
	configinformers "github.com/kubehistory/kubehistory/pkg/generated/informers/externalversions"
	"github.com/kubehistory/kubehistory/pkg/gitwriter"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/index/follow"
	"github.com/kubehistory/kubehistory/pkg/ingest"
	"github.com/kubehistory/kubehistory/pkg/installkey"
	"github.com/kubehistory/kubehistory/pkg/queue"
	"github.com/kubehistory/kubehistory/pkg/reconcile"
)

// QueueOptions choose and tune JetStream.
type QueueOptions struct {
	// Connect reaches an external NATS cluster when URL is set; otherwise JetStream runs embedded.
	Connect queue.ConnectOptions
	// EmbeddedPort is the embedded server's client port on 127.0.0.1 (for the nats CLI); -1 picks a
	// free one, and 0 opens none.
	EmbeddedPort int
	// SyncAlways makes the embedded JetStream fsync every message before acknowledging it.
	SyncAlways bool
	// SyncInterval is the embedded JetStream's fsync interval when SyncAlways is off.
	SyncInterval time.Duration
	// Replicas of the streams (3 on an external cluster of 3 nodes).
	Replicas int
	// DuplicateWindow of KUBEHISTORY_CHANGES; it must exceed kube-apiserver's retry span.
	DuplicateWindow time.Duration
}

// AddFlags adds the queue flags.
func (o *QueueOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Connect.URL, "nats-url", o.Connect.URL, "Comma-separated URLs of an external NATS cluster with JetStream. Empty: run JetStream embedded, with file storage in --data-dir.")
	fs.StringVar(&o.Connect.CAFile, "nats-ca-file", o.Connect.CAFile, "CA bundle that verifies the external NATS servers' certificates.")
	fs.StringVar(&o.Connect.CertFile, "nats-cert-file", o.Connect.CertFile, "Client certificate for NATS servers that require mutual TLS.")
	fs.StringVar(&o.Connect.KeyFile, "nats-key-file", o.Connect.KeyFile, "Key of --nats-cert-file.")
	fs.StringVar(&o.Connect.CredsFile, "nats-creds-file", o.Connect.CredsFile, "NATS credentials file (JWT and NKey seed).")
	fs.StringVar(&o.Connect.User, "nats-user", o.Connect.User, "NATS user, for servers with user/password authentication.")
	fs.StringVar(&o.Connect.Password, "nats-password", o.Connect.Password, "NATS password of --nats-user (prefer --nats-creds-file: flags show in process listings).")
	fs.IntVar(&o.EmbeddedPort, "nats-embedded-port", o.EmbeddedPort, "Client port of the embedded NATS server on 127.0.0.1, for the nats CLI; -1 picks a free port, 0 opens no port.")
	fs.BoolVar(&o.SyncAlways, "nats-sync-always", o.SyncAlways, "Embedded JetStream fsyncs every message before acknowledging it: nothing acknowledged is lost even on power failure, at a lower ingest rate. Off: data is fsynced every --nats-sync-interval and survives process crashes, not power loss within that interval.")
	fs.DurationVar(&o.SyncInterval, "nats-sync-interval", o.SyncInterval, "Embedded JetStream fsync interval when --nats-sync-always is off; 0 keeps nats-server's default (2m).")
	fs.IntVar(&o.Replicas, "stream-replicas", o.Replicas, "Replicas of the JetStream streams; 3 on a 3-node external cluster.")
	fs.DurationVar(&o.DuplicateWindow, "duplicate-window", o.DuplicateWindow, "JetStream duplicate window of accepted changes; must exceed kube-apiserver's audit webhook retry span (about 4 minutes).")
}

// Validate reports inconsistent queue options.
func (o *QueueOptions) Validate() []error {
	var errs []error
	if o.Connect.URL != "" {
		errs = append(errs, o.Connect.Validate()...)
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		errs = append(errs, fmt.Errorf("--stream-replicas %d must be between 1 and 5", o.Replicas))
	}
	if o.DuplicateWindow < 5*time.Minute {
		errs = append(errs, fmt.Errorf("--duplicate-window %s must be at least 5m, longer than kube-apiserver's retries", o.DuplicateWindow))
	}
	return errs
}

// pipeline is every stage of the data path beside the API: queue, ingest, writers, index feed.
type pipeline struct {
	embedded  *queue.Embedded
	conn      *queue.Conn
	publisher *queue.Publisher
	follower  *follow.Follower
	manager   *destinations.Manager
	ingest    *ingest.Server
	rules     *ingest.RuleCache
	reconcile *reconcile.Reconciler
	cfgInf    configinformers.SharedInformerFactory

	startKubeInformers func(stop <-chan struct{})
}

func kubeInformerFactory(kube kubernetes.Interface) kubeinformers.SharedInformerFactory {
	return kubeinformers.NewSharedInformerFactory(kube, 10*time.Minute)
}

// startQueue starts the embedded JetStream or connects to the external one and makes sure the
// streams exist.
func (o *Options) startQueue(ctx context.Context, p *pipeline) error {
	var err error
	if o.Queue.Connect.URL == "" {
		p.embedded, err = queue.StartEmbedded(queue.EmbeddedOptions{
			DataDir:       filepath.Join(o.DataDir, "nats"),
			Port:          o.Queue.EmbeddedPort,
			InProcessOnly: o.Queue.EmbeddedPort == 0,
			SyncAlways:    o.Queue.SyncAlways,
			SyncInterval:  o.Queue.SyncInterval,
			ServerName:    "kubehistory-" + change.SubjectToken(o.ReplicaID),
		})
		if err != nil {
			return fmt.Errorf("starting embedded JetStream: %w", err)
		}
		p.conn, err = p.embedded.Connect("kubehistory-" + o.ReplicaID)
	} else {
		c := o.Queue.Connect
		c.Name = "kubehistory-" + o.ReplicaID
		p.conn, err = queue.Connect(c)
	}
	if err != nil {
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	p.publisher, err = queue.NewPublisher(p.conn, queue.PublisherOptions{})
	if err != nil {
		return err
	}
	return queue.EnsureStreams(ctx, p.conn, o.Queue.Replicas, queue.WithDuplicateWindow(o.Queue.DuplicateWindow))
}

// buildPipeline wires the stages; they start in the server's post-start hook. On error, whatever was
// started (the embedded JetStream, the NATS connection) is closed.
func (o *Options) buildPipeline(ctx context.Context, idx *index.Index, clientConfig *rest.Config) (_ *pipeline, err error) {
	p := &pipeline{}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if err := o.startQueue(ctx, p); err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(clientConfig)
	if err != nil {
		return nil, err
	}
	client, err := versioned.NewForConfig(clientConfig)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(clientConfig)
	if err != nil {
		return nil, err
	}
	// The installation key: every fingerprint and every commit seal is made with it.
	key, err := installkey.Ensure(ctx, kube, o.ServiceNamespace, o.Security.InstallationKeySecret)
	if err != nil {
		return nil, err
	}
	p.cfgInf = configinformers.NewSharedInformerFactory(client, 10*time.Minute)
	kubeInf := kubeInformerFactory(kube)
	p.startKubeInformers = func(stop <-chan struct{}) { kubeInf.Start(stop) }
	// The rule cache serves ingest's matching and the writers' objectSelector check of fetched objects.
	p.rules = ingest.NewRuleCache(p.cfgInf, kubeInf)
	p.rules.Trust = ingest.NewDestinationTrust(o.trustedNamespaces())
	rules := p.rules
	scope := func(dest change.DestinationRef, obj change.Object, labels map[string]string, actor string) bool {
		return rules.Selects(dest, ingest.ObjectInfo{Group: obj.Group, Resource: obj.Resource, Namespace: obj.Namespace, Name: obj.Name,
			Labels: labels, LabelsKnown: true, Username: actor})
	}
	p.follower = follow.New(p.conn, idx, o.ReplicaID)
	p.manager = destinations.New(destinations.Options{
		DataDir:            filepath.Join(o.DataDir, "git"),
		Identity:           o.ReplicaID,
		LeaseNamespace:     o.ServiceNamespace,
		LeaseDuration:      o.Reconcile.LeaderElection.LeaseDuration.Duration,
		RenewDeadline:      o.Reconcile.LeaderElection.RenewDeadline.Duration,
		RetryPeriod:        o.Reconcile.LeaderElection.RetryPeriod.Duration,
		Key:                key,
		AllowedURLSchemes:  o.Security.AllowedURLSchemes,
		SensitiveResources: o.Security.SensitiveResources,
		SensitivePaths:     o.Security.SensitivePaths,
		StripAnnotations:   o.Security.StripAnnotations,
		GapGrace:           o.Reconcile.GapGrace,
		Scope:              scope,
	}, p.cfgInf.Config().V1alpha1().GitDestinations().Lister(), kube, client, p.conn, gitwriter.DynamicFetcher{Client: dyn})
	if _, err := p.cfgInf.Config().V1alpha1().GitDestinations().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.manager.Trigger() },
		UpdateFunc: func(any, any) { p.manager.Trigger() },
		DeleteFunc: func(any) { p.manager.Trigger() },
	}); err != nil {
		return nil, err
	}
	if p.reconcile, err = o.buildReconciler(clientConfig, p.publisher, p.cfgInf, kubeInf, p.manager.Policy, p.rules.Trust); err != nil {
		return nil, fmt.Errorf("reconciler: %w", err)
	}
	if o.Ingest.CertFile != "" {
		ingestOpts := *o.Ingest
		ingestOpts.Policy = p.manager.Policy
		p.ingest, err = ingest.NewServer(ingestOpts, p.rules, p.publisher)
		if err != nil {
			return nil, fmt.Errorf("audit webhook: %w", err)
		}
	} else {
		klog.InfoS("No --audit-tls-cert-file: the audit webhook is off; history comes from the reconciler only")
	}
	return p, nil
}

// start starts every stage in the run group g; each stops when ctx (the group's context) ends, and a
// stage that fails (the audit listener cannot serve) ends the group with its error, so the whole process
// stops in order instead of exiting from a goroutine.
func (p *pipeline) start(ctx context.Context, g *errgroup.Group) {
	p.cfgInf.Start(ctx.Done())
	if p.startKubeInformers != nil {
		p.startKubeInformers(ctx.Done())
	}
	g.Go(func() error { p.follower.Run(ctx); return nil })
	g.Go(func() error {
		// Writers start once the destinations are listed, so none is stopped as "removed" at start.
		if !cache.WaitForCacheSync(ctx.Done(), p.cfgInf.Config().V1alpha1().GitDestinations().Informer().HasSynced) {
			return nil
		}
		p.manager.Run(ctx)
		return nil
	})
	g.Go(func() error { p.reconcile.Run(ctx); return nil })
	if p.ingest != nil {
		g.Go(func() error {
			if err := p.ingest.Run(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("audit webhook stopped: %w", err)
			}
			return nil
		})
	}
}

func (p *pipeline) close() {
	if p.conn != nil {
		p.conn.Close()
	}
	if p.embedded != nil {
		p.embedded.Shutdown()
	}
}

// readyzChecks tell the truth about the stages: NATS connected, the index caught up, rules synced.
func (p *pipeline) readyzChecks() []healthz.HealthChecker {
	checks := []healthz.HealthChecker{
		healthz.NamedCheck("nats-connected", func(*http.Request) error { return p.conn.Connected() }),
		healthz.NamedCheck("index-caught-up", func(*http.Request) error { return p.follower.CaughtUp() }),
	}
	if p.rules != nil {
		checks = append(checks, healthz.NamedCheck("watch-rules-synced", func(*http.Request) error {
			if !p.rules.HasSynced() {
				return errors.New("WatchRule/ClusterWatchRule/Namespace informers not synced")
			}
			return nil
		}))
	}
	return checks
}
