package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	cliflag "k8s.io/component-base/cli/flag"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/term"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/index/follow"
	"github.com/kubehistory/kubehistory/pkg/index/gitlog"
	"github.com/kubehistory/kubehistory/pkg/installkey"
)

// rebuildOptions are the flags of `index rebuild`: the server's own (so that it runs with a replica's
// command line unchanged: same --data-dir, --replica-id and NATS flags) plus where to rebuild from.
type rebuildOptions struct {
	*Options
	From        string
	Repository  string
	Branch      string
	Destination string
	// The installation key tells kubehistory's commits from foreign ones: from a file (offline) or
	// from its Secret, read with --kubeconfig (the "kubernetes API" flags; in-cluster when empty).
	KeyFile      string
	KeySecret    string
	KeyNamespace string
}

// newIndexCommand is `kubehistory-apiserver index`, maintenance of a replica's index file.
func newIndexCommand(ctx context.Context) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "index",
		Short: "Maintain this replica's history index (index.db in --data-dir)",
	}
	cmd.AddCommand(newRebuildCommand(ctx))
	return cmd
}

func newRebuildCommand(ctx context.Context) *cobra.Command {
	o := &rebuildOptions{Options: NewOptions(os.Stdout, os.Stderr), From: "stream", Branch: "main", KeySecret: installkey.DefaultSecretName, KeyNamespace: defaultKeyNamespace}
	cmd := &cobra.Command{
		Use:   "rebuild --from=stream|git",
		Short: "Rebuild index.db from stream KUBEHISTORY_HISTORY or from a destination's Git history",
		Long: `Rebuilds the history index of a stopped replica into a new file and renames it over
<data-dir>/index.db, so that the file is never half-written. It refuses to run while a server holds
the index.

--from=stream reads every record of KUBEHISTORY_HISTORY (the embedded JetStream store in --data-dir, or
the cluster of --nats-url) under its stream sequence: names and resourceVersions are those the index
served before. It accepts every flag of the server, so run it with the replica's own command line.

--from=git reads the Git history of one destination (--repository, a local path such as the writer's
cache or a URL to clone; --branch; --destination=<namespace>/<name>), one record per
Kubehistory-Change-Id trailer, with synthetic sequences from 1: resourceVersions (and the names of
changes committed together) then differ from the stream's, and clients must list again.`,
		Args:         cobra.NoArgs,
		SilenceUsage: true,
		RunE: func(c *cobra.Command, _ []string) error {
			o.StdOut = c.OutOrStdout()
			if err := o.validate(); err != nil {
				return err
			}
			if err := logsapi.ValidateAndApply(o.Logs, nil); err != nil {
				return err
			}
			return o.run(c.Context())
		},
	}
	cmd.SetContext(ctx)
	fss := o.Flags()
	rs := fss.FlagSet("rebuild")
	rs.StringVar(&o.From, "from", o.From, "What to rebuild from: stream (KUBEHISTORY_HISTORY, same resourceVersions) or git (a destination's history, synthetic resourceVersions).")
	rs.StringVar(&o.Repository, "repository", o.Repository, "With --from=git: the destination's repository, a local path (bare, a checkout, or the writer's cache under <data-dir>/git) or a URL to clone.")
	rs.StringVar(&o.Branch, "branch", o.Branch, "With --from=git: the destination's branch.")
	rs.StringVar(&o.Destination, "destination", o.Destination, "With --from=git: the GitDestination as <namespace>/<name>; change IDs are derived from it.")
	rs.StringVar(&o.KeyFile, "installation-key-file", o.KeyFile, "With --from=git: a file holding the raw installation key; commits not sealed under it are skipped. Default: read the key's Secret with --kubeconfig.")
	rs.StringVar(&o.KeySecret, "installation-key-secret", o.KeySecret, "With --from=git and no --installation-key-file: the Secret holding the installation key.")
	rs.StringVar(&o.KeyNamespace, "installation-key-namespace", o.KeyNamespace, "Namespace of --installation-key-secret.")
	fs := cmd.Flags()
	shown := map[string]bool{"rebuild": true, "kubehistory": true, "kubernetes API": true, "NATS JetStream": true, "logging": true}
	var help cliflag.NamedFlagSets
	for _, name := range fss.Order {
		fs.AddFlagSet(fss.FlagSets[name])
		if shown[name] {
			help.FlagSet(name).AddFlagSet(fss.FlagSets[name])
			continue
		}
		// Accepted so that a replica's command line works unchanged, but they do nothing here.
		fss.FlagSets[name].VisitAll(func(f *pflag.Flag) { _ = fs.MarkHidden(f.Name) })
	}
	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cliflag.SetUsageAndHelpFunc(cmd, help, cols)
	return cmd
}

func (o *rebuildOptions) validate() error {
	errs := o.Queue.Validate()
	errs = append(errs, o.Retention.Validate()...)
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	switch o.From {
	case "stream":
	case "git":
		if o.Repository == "" {
			errs = append(errs, errors.New("--repository is required with --from=git"))
		}
		if ns, name, ok := strings.Cut(o.Destination, "/"); !ok || ns == "" || name == "" {
			errs = append(errs, fmt.Errorf("--destination %q must be <namespace>/<name>", o.Destination))
		}
		if o.Branch == "" {
			errs = append(errs, errors.New("--branch is required with --from=git"))
		}
	default:
		errs = append(errs, fmt.Errorf("--from %q must be stream or git", o.From))
	}
	return utilerrors.NewAggregate(errs)
}

// run rebuilds into <index.db>.rebuild and renames it over index.db while holding the old file's lock,
// so that no server opens either file in between.
func (o *rebuildOptions) run(ctx context.Context) error {
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating --data-dir: %w", err)
	}
	path := filepath.Join(o.DataDir, "index.db")
	release, err := index.Lock(path, 2*time.Second)
	if err != nil {
		return fmt.Errorf("cannot rebuild the index: %w", err)
	}
	defer func() { _ = release() }()
	tmp := path + ".rebuild"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	idx, err := index.Open(tmp)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			_ = idx.Close()
			_ = os.Remove(tmp)
		}
	}()
	start := time.Now()
	var summary string
	switch o.From {
	case "stream":
		p := &pipeline{}
		defer p.close()
		if err := o.startQueue(ctx, p); err != nil {
			return err
		}
		st, err := follow.Rebuild(ctx, p.conn, idx)
		if err != nil {
			return err
		}
		summary = fmt.Sprintf("%d records from stream %s (read %d, skipped %d undecodable), last sequence %d", st.Added, change.HistoryStream, st.Read, st.Skipped, st.LastSeq)
	case "git":
		ns, name, _ := strings.Cut(o.Destination, "/")
		key, err := o.installationKey(ctx)
		if err != nil {
			return err
		}
		st, err := gitlog.Rebuild(ctx, idx, gitlog.Options{Repository: o.Repository, Branch: o.Branch, Destination: change.DestinationRef{Namespace: ns, Name: name}, Key: key})
		if err != nil {
			return err
		}
		summary = fmt.Sprintf("%d records from %d commits of %s (branch %s), synthetic sequences 1 to %d; skipped %d foreign commits (not sealed by installation key %s)", st.Records, st.Commits, o.Repository, o.Branch, st.LastSeq, st.Foreign, key.ID())
	}
	if removed, err := idx.Retain(o.Retention.policy(), time.Now()); err != nil {
		return fmt.Errorf("applying retention: %w", err)
	} else if removed > 0 {
		summary += fmt.Sprintf("; retention removed %d", removed)
	}
	if err := idx.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	done = true
	// The rename is durable only once the directory is synced.
	if d, err := os.Open(o.DataDir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	klog.InfoS("Rebuilt the index", "path", path, "from", o.From, "duration", time.Since(start))
	fmt.Fprintf(o.StdOut, "rebuilt %s: %s\n", path, summary)
	return nil
}

// defaultKeyNamespace is where the server keeps the installation key's Secret.
const defaultKeyNamespace = "kubehistory-system"

// installationKey reads the key that seals kubehistory's commits: from --installation-key-file when
// given (offline, no cluster needed), else from its Secret.
func (o *rebuildOptions) installationKey(ctx context.Context) (installkey.Key, error) {
	if o.KeyFile != "" {
		b, err := os.ReadFile(o.KeyFile)
		if err != nil {
			return installkey.Key{}, fmt.Errorf("reading --installation-key-file: %w", err)
		}
		return installkey.New(b)
	}
	var cfg *rest.Config
	var err error
	if path := o.RecommendedOptions.CoreAPI.CoreAPIKubeconfigPath; path != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return installkey.Key{}, fmt.Errorf("the installation key is needed to tell kubehistory's commits from foreign ones: give --installation-key-file or --kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return installkey.Key{}, err
	}
	s, err := cs.CoreV1().Secrets(o.KeyNamespace).Get(ctx, o.KeySecret, metav1.GetOptions{})
	if err != nil {
		return installkey.Key{}, fmt.Errorf("reading the installation key: %w", err)
	}
	return installkey.FromSecret(s)
}
