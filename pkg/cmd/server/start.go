// Package server is the kubehistory-apiserver command: options (flags in named sections), their
// validation, and the wiring of the data-path stages into one process.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"k8s.io/apiserver/pkg/server/healthz"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/util/compatibility"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/term"
	"k8s.io/klog/v2"
	netutils "k8s.io/utils/net"

	historyv1alpha1 "github.com/kubehistory/kubehistory/apis/history/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/apiserver"
	generatedopenapi "github.com/kubehistory/kubehistory/pkg/generated/openapi"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/ingest"
)

// Options are every flag of kubehistory-apiserver.
type Options struct {
	RecommendedOptions *genericoptions.RecommendedOptions
	Logs               *logs.Options

	Queue     *QueueOptions
	Ingest    *ingest.Options
	Reconcile *ReconcileOptions
	Retention *RetentionOptions
	Security  *SecurityOptions
	// ReplicaID names this replica: its durable index consumer, RepoStatus.writer, NATS client name.
	ReplicaID string

	// DataDir holds the index, the embedded JetStream store and the Git caches.
	DataDir string
	// ServiceName and ServiceNamespace are the Service the APIService points at: the self-signed
	// serving certificate carries <name>.<namespace>.svc, the name kube-apiserver verifies.
	ServiceName      string
	ServiceNamespace string

	StdOut io.Writer
	StdErr io.Writer
}

// NewOptions returns the defaults.
func NewOptions(out, errOut io.Writer) *Options {
	o := &Options{
		RecommendedOptions: genericoptions.NewRecommendedOptions("", apiserver.Codecs.LegacyCodec(historyv1alpha1.SchemeGroupVersion)),
		Logs:               logs.NewOptions(),
		DataDir:            "/var/lib/kubehistory",
		Queue:              &QueueOptions{EmbeddedPort: 0, Replicas: 1, DuplicateWindow: 10 * time.Minute},
		Ingest:             ingest.NewOptions(),
		Reconcile:          NewReconcileOptions(),
		Retention:          NewRetentionOptions(),
		Security:           NewSecurityOptions(),
		ReplicaID:          defaultReplicaID(),
		ServiceName:        "kubehistory-apiserver",
		ServiceNamespace:   "kubehistory-system",
		StdOut:             out,
		StdErr:             errOut,
	}
	// History lives in bbolt and JetStream, not etcd; nothing is admitted because nothing is written.
	o.RecommendedOptions.Etcd = nil
	o.RecommendedOptions.Admission = nil
	o.RecommendedOptions.SecureServing.BindAddress = netutils.ParseIPSloppy("127.0.0.1")
	o.RecommendedOptions.SecureServing.BindPort = 8443
	return o
}

// Flags returns the flags in named sections, for --help.
func (o *Options) Flags() cliflag.NamedFlagSets {
	var fss cliflag.NamedFlagSets
	o.RecommendedOptions.SecureServing.AddFlags(fss.FlagSet("secure serving"))
	o.RecommendedOptions.Authentication.AddFlags(fss.FlagSet("authentication"))
	o.RecommendedOptions.Authorization.AddFlags(fss.FlagSet("authorization"))
	o.RecommendedOptions.Audit.AddFlags(fss.FlagSet("auditing of history API requests"))
	o.RecommendedOptions.Features.AddFlags(fss.FlagSet("features"))
	o.RecommendedOptions.CoreAPI.AddFlags(fss.FlagSet("kubernetes API"))
	o.RecommendedOptions.EgressSelector.AddFlags(fss.FlagSet("egress selector"))
	o.RecommendedOptions.Traces.AddFlags(fss.FlagSet("traces"))
	logsapi.AddFlags(o.Logs, fss.FlagSet("logging"))

	o.Ingest.AddFlags(fss.FlagSet(ingest.FlagSetName))
	o.Queue.AddFlags(fss.FlagSet("NATS JetStream"))
	o.Reconcile.AddFlags(fss.FlagSet("reconciler"))
	o.Security.AddFlags(fss.FlagSet("trust"))
	fs := fss.FlagSet("kubehistory")
	fs.StringVar(&o.ReplicaID, "replica-id", o.ReplicaID, "Name of this replica (default: the hostname): it names the replica's durable index consumer and shows in RepoStatus.writer.")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir, "Directory for the history index (index.db), the embedded JetStream store and the Git caches.")
	fs.StringVar(&o.ServiceName, "service-name", o.ServiceName, "Name of the Service the APIService points at; the self-signed serving certificate is valid for <service-name>.<service-namespace>.svc.")
	fs.StringVar(&o.ServiceNamespace, "service-namespace", o.ServiceNamespace, "Namespace of that Service.")
	o.Retention.AddFlags(fs)
	return fss
}

// Validate gathers every option error.
func (o *Options) Validate() error {
	errs := o.RecommendedOptions.Validate()
	errs = append(errs, o.Queue.Validate()...)
	errs = append(errs, o.Reconcile.Validate()...)
	errs = append(errs, o.Retention.Validate()...)
	errs = append(errs, o.Security.Validate()...)
	if o.Ingest.CertFile != "" || o.Ingest.KeyFile != "" || o.Ingest.ClientCAFile != "" {
		errs = append(errs, o.Ingest.Validate()...)
	}
	if o.ReplicaID == "" {
		errs = append(errs, fmt.Errorf("--replica-id is required"))
	}
	if o.DataDir == "" {
		errs = append(errs, fmt.Errorf("--data-dir is required"))
	}
	return utilerrors.NewAggregate(errs)
}

// Config builds the server configuration.
func (o *Options) Config(idx *index.Index) (*apiserver.Config, error) {
	svcDNS := fmt.Sprintf("%s.%s.svc", o.ServiceName, o.ServiceNamespace)
	if err := o.RecommendedOptions.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost",
		[]string{svcDNS, svcDNS + ".cluster.local"}, []net.IP{netutils.ParseIPSloppy("127.0.0.1")}); err != nil {
		return nil, fmt.Errorf("creating self-signed certificates: %w", err)
	}
	serverConfig := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	serverConfig.EffectiveVersion = compatibility.DefaultBuildEffectiveVersion()
	serverConfig.BuildHandlerChainFunc = apiserver.BuildHandlerChain

	namer := openapinamer.NewDefinitionNamer(apiserver.Scheme)
	serverConfig.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(generatedopenapi.GetOpenAPIDefinitions, namer)
	serverConfig.OpenAPIConfig.Info.Title = "kubehistory"
	serverConfig.OpenAPIConfig.Info.Version = "v1alpha1"
	serverConfig.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(generatedopenapi.GetOpenAPIDefinitions, namer)
	serverConfig.OpenAPIV3Config.Info.Title = "kubehistory"
	serverConfig.OpenAPIV3Config.Info.Version = "v1alpha1"

	if err := o.RecommendedOptions.ApplyTo(serverConfig); err != nil {
		return nil, err
	}
	return &apiserver.Config{
		GenericConfig: serverConfig,
		ExtraConfig:   apiserver.ExtraConfig{Index: idx, Authorizer: serverConfig.Authorization.Authorizer},
	}, nil
}

// Run starts every stage and serves until ctx ends.
func (o *Options) Run(ctx context.Context) error {
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating --data-dir: %w", err)
	}
	idx, err := index.Open(filepath.Join(o.DataDir, "index.db"))
	if err != nil {
		return err
	}
	defer func() {
		if err := idx.Close(); err != nil {
			klog.ErrorS(err, "Closing index")
		}
	}()
	config, err := o.Config(idx)
	if err != nil {
		return err
	}
	p, err := o.buildPipeline(ctx, idx, config.GenericConfig.ClientConfig)
	if err != nil {
		return err
	}
	defer p.close()
	server, err := config.Complete().New()
	if err != nil {
		return err
	}
	checks := p.readyzChecks()
	if rh := config.GenericConfig.Authentication.RequestHeaderConfig; rh != nil && rh.CAContentProvider != nil {
		// Until the front-proxy CA is loaded from kube-system's extension-apiserver-authentication
		// ConfigMap, the aggregator's requests are anonymous: not ready to serve them.
		checks = append(checks, healthz.NamedCheck("front-proxy-ca-loaded", func(*http.Request) error {
			if len(rh.CAContentProvider.CurrentCABundleContent()) == 0 {
				return errors.New("front-proxy client CA not loaded yet")
			}
			return nil
		}))
	}
	if err := server.GenericAPIServer.AddReadyzChecks(checks...); err != nil {
		return err
	}
	// One run group: the API server and every stage. The first to fail ends the group's context, which
	// stops the others; Run returns once all of them returned, and only then (deferred above) closes
	// the NATS connection, the embedded JetStream and the index, in reverse order of opening.
	g, gctx := errgroup.WithContext(ctx)
	server.GenericAPIServer.AddPostStartHookOrDie("start-kubehistory-pipeline", func(hookCtx genericapiserver.PostStartHookContext) error {
		if config.GenericConfig.SharedInformerFactory != nil {
			config.GenericConfig.SharedInformerFactory.Start(hookCtx.Done())
		}
		p.start(gctx, g)
		g.Go(func() error { o.Retention.Run(gctx, idx); return nil })
		return nil
	})
	g.Go(func() error { return server.GenericAPIServer.PrepareRun().RunWithContext(gctx) })
	return g.Wait()
}

func defaultReplicaID() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "kubehistory"
	}
	return h
}

// NewCommand returns the kubehistory-apiserver command.
func NewCommand(ctx context.Context) *cobra.Command {
	o := NewOptions(os.Stdout, os.Stderr)
	cmd := &cobra.Command{
		Use:   "kubehistory-apiserver",
		Short: "Records who changed what in a Kubernetes cluster into Git, and serves that history as Kubernetes objects",
		Long: `kubehistory-apiserver receives kube-apiserver audit webhook batches, queues accepted changes in
NATS JetStream, commits them as sanitized YAML to Git authored as the actor, and serves the history
(resourcechanges, clusterresourcechanges, repostatuses in history.kubehistory.io) as an aggregated API.`,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := logsapi.ValidateAndApply(o.Logs, nil); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return o.Run(c.Context())
		},
	}
	cmd.SetContext(ctx)
	cmd.AddCommand(newIndexCommand(ctx))
	cmd.AddCommand(newAuditPolicyCommand(ctx))
	cmd.AddCommand(newRBACCommand(ctx))
	fss := o.Flags()
	fs := cmd.Flags()
	for _, f := range fss.FlagSets {
		fs.AddFlagSet(f)
	}
	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cliflag.SetUsageAndHelpFunc(cmd, fss, cols)
	return cmd
}
