// Package destinations runs one Git writer per GitDestination: it follows GitDestinations (and the
// Secrets they reference) through an informer and starts, restarts or stops writers so that each runs
// with the current spec and credentials. Every replica campaigns for a per-destination Lease; only its
// holder runs the writer and writes the GitDestination's status, so there is one active writer per
// destination across replicas and no two replicas fight over a status. A stale writer (paused past its
// lease) cannot double anything: its push is a compare-and-swap of the branch, and after the fetch
// that follows a refused push it skips every change ID already in Git.
//
// The status tells what the writer could do: Ready True while its last push succeeded (or, before it
// had anything to push, while it could read the branch), False with the reason (an invalid spec,
// missing credentials, the remote refusing pushes, ...) and the error; the head and the lag beside it.
// When a GitDestination is deleted its RepoStatus is deleted from the status bucket.
package destinations

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	versioned "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned"
	configlisters "github.com/kubehistory/kubehistory/pkg/generated/listers/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/gitwriter"
	"github.com/kubehistory/kubehistory/pkg/installkey"
	"github.com/kubehistory/kubehistory/pkg/sanitize"
)

// Options tune the manager.
type Options struct {
	// DataDir is the root of the writers' clone caches and state.
	DataDir string
	// Identity names this replica in RepoStatus.
	Identity string
	// Resync is how often every destination is re-read (Secret changes are noticed then).
	Resync time.Duration
	// LeaseDuration of the per-destination writer lease: how long a dead replica's destinations wait
	// before another replica takes them over. RenewDeadline and RetryPeriod complete the lease timing
	// (--leader-elect-*); zero derives them from LeaseDuration (2/3 and 1/6 of it).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// LeaseNamespace holds the writer leases: kubehistory's own namespace, never the destination's, so
	// that a tenant who may edit Leases in their namespace cannot seize or fence a writer.
	LeaseNamespace string
	// Key is the installation key the writers fingerprint and seal with.
	Key installkey.Key
	// AllowedURLSchemes are the URL schemes a GitDestination may use ("https", "ssh" — which includes
	// scp-style user@host:path — and, only when an operator opts in, "http" and "file").
	AllowedURLSchemes []string
	// SensitiveResources, SensitivePaths and StripAnnotations apply to every destination, beside each
	// one's own.
	SensitiveResources []string
	SensitivePaths     []string
	StripAnnotations   []string
	// Scope applies the rules' objectSelectors to objects the writers fetch.
	Scope gitwriter.Scope
	// GapGrace of the writers (gitwriter.Config.GapGrace); zero keeps the default.
	GapGrace time.Duration
	// StatusInterval spaces the GitDestination status writes that only move the head or the lag; a
	// change of the Ready condition is written at once.
	StatusInterval time.Duration
}

// CredentialsLabel must be "true" on a Secret (or the Secret must be of type CredentialsSecretType)
// before kubehistory reads it as a GitDestination's credentials: a tenant cannot point kubehistory at an
// arbitrary Secret of their namespace (a ServiceAccount token, a database password) and have it sent to
// a server of their choosing.
const (
	CredentialsLabel      = "kubehistory.io/git-credentials"
	CredentialsSecretType = "kubehistory.io/git-credentials"
)

// DefaultAllowedURLSchemes are the schemes allowed without an operator's opt-in.
var DefaultAllowedURLSchemes = []string{"https", "ssh"}

// Manager starts and stops writers.
type Manager struct {
	opts    Options
	lister  configlisters.GitDestinationLister
	kube    kubernetes.Interface
	client  versioned.Interface
	q       gitwriter.Queue
	fetcher gitwriter.ObjectFetcher

	mu      sync.Mutex
	running map[string]*running
	wake    chan struct{}
	// collected is set once the status bucket was cleaned of destinations deleted while no replica
	// ran.
	collected bool
}

// running is one destination's campaign for its writer lease, with the writer (or, for a spec that
// cannot run, the refusal) it runs while holding it.
type running struct {
	hash   string
	cancel context.CancelFunc
	done   chan struct{}
	// generation is the GitDestination's generation the config is of; a spec change that leaves the
	// config as it is (the writer keeps running) moves it, and kick tells the status reporter.
	generation atomic.Int64
	kick       chan struct{}
}

// invalid is why a GitDestination's writer cannot run: its Ready condition's reason and message.
type invalid struct {
	reason, message string
}

// New returns a manager; call Run after the informer behind lister is started.
func New(opts Options, lister configlisters.GitDestinationLister, kube kubernetes.Interface, client versioned.Interface,
	q gitwriter.Queue, fetcher gitwriter.ObjectFetcher) *Manager {
	if opts.Resync == 0 {
		opts.Resync = 15 * time.Second
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = 15 * time.Second
	}
	if opts.RenewDeadline == 0 || opts.RetryPeriod == 0 {
		opts.RenewDeadline, opts.RetryPeriod = opts.LeaseDuration*2/3, opts.LeaseDuration/6
	}
	if opts.LeaseNamespace == "" {
		opts.LeaseNamespace = "kubehistory-system"
	}
	if opts.AllowedURLSchemes == nil {
		opts.AllowedURLSchemes = DefaultAllowedURLSchemes
	}
	if opts.StatusInterval == 0 {
		opts.StatusInterval = 5 * time.Second
	}
	return &Manager{opts: opts, lister: lister, kube: kube, client: client, q: q, fetcher: fetcher,
		running: map[string]*running{}, wake: make(chan struct{}, 1)}
}

// Trigger asks for a sync soon (called from informer event handlers).
func (m *Manager) Trigger() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Run syncs on every trigger and every Resync until ctx ends, then stops every writer.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.opts.Resync)
	defer t.Stop()
	for {
		m.sync(ctx)
		select {
		case <-ctx.Done():
			m.stopAll()
			return
		case <-t.C:
		case <-m.wake:
		}
	}
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, r := range m.running {
		r.cancel()
		<-r.done
		delete(m.running, key)
	}
}

func (m *Manager) sync(ctx context.Context) {
	gds, err := m.lister.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "Listing GitDestinations")
		return
	}
	seen := map[string]bool{}
	for _, gd := range gds {
		key := gd.Namespace + "/" + gd.Name
		seen[key] = true
		ref := change.DestinationRef{Namespace: gd.Namespace, Name: gd.Name}
		cfg, reason, err := m.config(ctx, gd)
		var bad *invalid
		var hash string
		if err != nil {
			// The lease holder reports it; a changed reason or message restarts that report.
			bad = &invalid{reason: reason, message: err.Error()}
			hash = "invalid/" + reason + "/" + err.Error()
		} else {
			hash = configHash(cfg)
		}
		m.mu.Lock()
		r := m.running[key]
		m.mu.Unlock()
		if r != nil && r.hash == hash {
			select {
			case <-r.done: // the campaign stopped on its own: start it again
			default:
				if r.generation.Swap(gd.Generation) != gd.Generation {
					r.kickReporter()
				}
				continue
			}
		}
		m.stop(key)
		m.start(ctx, key, hash, gd.Generation, ref, cfg, bad)
	}
	m.mu.Lock()
	var gone []string
	for key := range m.running {
		if !seen[key] {
			gone = append(gone, key)
		}
	}
	m.mu.Unlock()
	for _, key := range gone {
		klog.InfoS("GitDestination removed: stopping its writer", "destination", key)
		m.stop(key)
	}
	if len(gone) > 0 || !m.collected {
		m.collected = m.collectRepoStatuses(ctx, seen) == nil
	}
}

// collectRepoStatuses deletes the RepoStatus of every destination that no longer exists. Every
// replica does it when it sees a GitDestination go (after stopping its own writer of it, so no status
// of it comes after), and once at start; a destination the informer does not know yet is asked of the
// API server before its status is deleted.
func (m *Manager) collectRepoStatuses(ctx context.Context, present map[string]bool) error {
	store, err := m.q.Status(ctx)
	if err != nil {
		klog.ErrorS(err, "Opening the RepoStatus bucket")
		return err
	}
	refs, err := store.List(ctx)
	if err != nil {
		klog.ErrorS(err, "Listing RepoStatuses")
		return err
	}
	for _, ref := range refs {
		if present[ref.String()] {
			continue
		}
		if _, err := m.client.ConfigV1alpha1().GitDestinations(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			if err != nil {
				klog.ErrorS(err, "Checking the GitDestination of a RepoStatus", "destination", ref.String())
			}
			continue
		}
		if err := store.Delete(ctx, ref); err != nil {
			klog.ErrorS(err, "Deleting the RepoStatus of a deleted GitDestination", "destination", ref.String())
			continue
		}
		klog.InfoS("GitDestination deleted: removed its RepoStatus", "destination", ref.String())
	}
	return nil
}

func (m *Manager) config(ctx context.Context, gd *configv1alpha1.GitDestination) (gitwriter.Config, string, error) {
	// The scheme is checked before the credentials are read: a refused URL never gets them.
	if scheme, ok := URLScheme(gd.Spec.URL); !ok || !slices.Contains(m.opts.AllowedURLSchemes, scheme) {
		return gitwriter.Config{}, configv1alpha1.ReasonURLSchemeNotAllowed, fmt.Errorf("url scheme %q is not allowed on this server (allowed: %s; http and file need the operator's --allowed-url-schemes)",
			scheme, strings.Join(m.opts.AllowedURLSchemes, ", "))
	}
	var data map[string][]byte
	if ref := gd.Spec.CredentialsSecretRef; ref != nil {
		s, err := m.kube.CoreV1().Secrets(gd.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return gitwriter.Config{}, configv1alpha1.ReasonCredentialsMissing, fmt.Errorf("credentials Secret %s/%s not found", gd.Namespace, ref.Name)
		}
		if apierrors.IsForbidden(err) {
			return gitwriter.Config{}, configv1alpha1.ReasonAccessDenied, fmt.Errorf("reading credentials Secret %s/%s: %w", gd.Namespace, ref.Name, err)
		}
		if err != nil {
			return gitwriter.Config{}, configv1alpha1.ReasonCredentialsMissing, err
		}
		if s.Labels[CredentialsLabel] != "true" && string(s.Type) != CredentialsSecretType {
			return gitwriter.Config{}, configv1alpha1.ReasonCredentialsNotOptedIn, fmt.Errorf("Secret %s/%s is not marked as Git credentials: label it %s=true (or make it of type %s)",
				gd.Namespace, ref.Name, CredentialsLabel, CredentialsSecretType)
		}
		data = s.Data
	}
	cfg, err := gitwriter.ConfigFromGitDestination(gd, data)
	if err != nil {
		return cfg, configv1alpha1.ReasonInvalidSpec, err
	}
	cfg.DataDir = m.opts.DataDir
	cfg.Identity = m.opts.Identity
	cfg.Key, cfg.KeyID = m.opts.Key, m.opts.Key.ID()
	cfg.SensitiveResources = append(cfg.SensitiveResources, m.opts.SensitiveResources...)
	cfg.SensitivePaths = append(cfg.SensitivePaths, m.opts.SensitivePaths...)
	cfg.StripAnnotations = append(cfg.StripAnnotations, m.opts.StripAnnotations...)
	for _, sp := range cfg.SensitivePaths {
		if err := sanitize.ValidatePath(sp); err != nil {
			return cfg, configv1alpha1.ReasonInvalidSpec, err
		}
	}
	if scheme, _ := URLScheme(gd.Spec.URL); scheme == "ssh" && (len(cfg.Credentials.SSHPrivateKey) == 0 || len(cfg.Credentials.KnownHosts) == 0) {
		// Reported here rather than by a writer failing to start every few seconds.
		return cfg, configv1alpha1.ReasonCredentialsMissing, fmt.Errorf("an ssh destination needs a credentials Secret with ssh-privatekey and known_hosts (host keys are always verified)")
	}
	cfg.Scope = m.opts.Scope
	cfg.GapGrace = m.opts.GapGrace
	return cfg, "", nil
}

// Policy is the change.Policy of the destinations: the sanitize options that ingest and the reconciler
// redact a change's body with before publishing it. A destination not (yet) known gets the server-wide
// options; its writer completes the redaction with its own when it writes.
func (m *Manager) Policy(dest change.DestinationRef) sanitize.Options {
	opts := sanitize.Options{
		Key:                m.opts.Key,
		SensitiveResources: m.opts.SensitiveResources,
		SensitivePaths:     m.opts.SensitivePaths,
		StripAnnotations:   m.opts.StripAnnotations,
	}
	// Called for every change ingest publishes: no allocation unless the destination adds its own.
	if gd, err := m.lister.GitDestinations(dest.Namespace).Get(dest.Name); err == nil {
		opts.SensitiveResources = concat(opts.SensitiveResources, gd.Spec.SensitiveResources)
		opts.SensitivePaths = concat(opts.SensitivePaths, gd.Spec.SensitivePaths)
		opts.StripAnnotations = concat(opts.StripAnnotations, gd.Spec.StripAnnotations)
	}
	return opts
}

// concat appends more to a shared base without ever writing into base's backing array.
func concat(base, more []string) []string {
	if len(more) == 0 {
		return base
	}
	return append(slices.Clip(base), more...)
}

// URLScheme is the scheme of a repository URL: "ssh" for scp-style user@host:path.
func URLScheme(raw string) (string, bool) {
	if i := strings.Index(raw, "://"); i > 0 {
		return strings.ToLower(raw[:i]), true
	}
	if scpLike.MatchString(raw) {
		return "ssh", true
	}
	return "", false
}

var scpLike = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:.+$`)

// configHash tells a changed config (the writer then restarts). Marshal must not fail: a field it
// cannot encode would make every config hash the same (TestConfigHashSeesChanges).
func configHash(cfg gitwriter.Config) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(fmt.Sprintf("destinations: encoding writer config: %v", err))
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// start campaigns for the destination's writer lease and, while it holds it, runs its writer (or
// reports why it cannot run) and writes the GitDestination's status.
func (m *Manager) start(ctx context.Context, key, hash string, generation int64, ref change.DestinationRef, cfg gitwriter.Config, bad *invalid) {
	wctx, cancel := context.WithCancel(ctx)
	r := &running{hash: hash, cancel: cancel, done: make(chan struct{}), kick: make(chan struct{}, 1)}
	r.generation.Store(generation)
	m.mu.Lock()
	m.running[key] = r
	m.mu.Unlock()
	go func() {
		defer close(r.done)
		lock := &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: m.opts.LeaseNamespace, Name: LeaseName(ref)},
			Client:     m.kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: m.opts.Identity},
		}
		for wctx.Err() == nil {
			// RunOrDie returns when the lease is lost or wctx ends; campaign again until wctx ends.
			leaderelection.RunOrDie(wctx, leaderelection.LeaderElectionConfig{
				Lock:            lock,
				Name:            key,
				LeaseDuration:   m.opts.LeaseDuration,
				RenewDeadline:   m.opts.RenewDeadline,
				RetryPeriod:     m.opts.RetryPeriod,
				ReleaseOnCancel: true,
				Callbacks: leaderelection.LeaderCallbacks{
					OnStartedLeading: func(ctx context.Context) { m.lead(ctx, key, ref, r, cfg, bad) },
					OnStoppedLeading: func() { klog.InfoS("Git writer lease released or lost", "destination", key) },
				},
			})
		}
	}()
}

// lead runs while this replica holds the destination's lease (ctx ends when it loses it).
func (m *Manager) lead(ctx context.Context, key string, ref change.DestinationRef, r *running, cfg gitwriter.Config, bad *invalid) {
	rep := &reporter{m: m, ref: ref, r: r, wake: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() { defer close(done); rep.run(ctx) }()
	defer func() { <-done }()
	if bad != nil {
		klog.InfoS("GitDestination cannot be written", "destination", key, "reason", bad.reason, "message", bad.message)
		rep.refuse(bad)
		if err := m.setRefused(ctx, ref, bad); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Storing the RepoStatus of a GitDestination that cannot be written", "destination", key)
		}
		<-ctx.Done()
		return
	}
	m.runWriter(ctx, key, cfg, rep)
}

// setRefused stores the RepoStatus of a destination whose writer cannot run.
func (m *Manager) setRefused(ctx context.Context, ref change.DestinationRef, bad *invalid) error {
	store, err := m.q.Status(ctx)
	if err != nil {
		return err
	}
	return gitwriter.SetRepoStatusRefused(ctx, store, ref, m.opts.Identity, bad.reason, bad.message)
}

// runWriter runs the destination's writer until ctx ends (the lease is lost or the destination changed).
func (m *Manager) runWriter(ctx context.Context, key string, cfg gitwriter.Config, rep *reporter) {
	klog.InfoS("Starting Git writer", "destination", key, "url", gitrecord.RedactedURL(cfg.URL), "branch", cfg.Branch, "replica", m.opts.Identity)
	// Run retries push failures itself; it returns on ctx end or on a fatal error, after which it is
	// started again.
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		w, err := gitwriter.New(cfg, m.q, m.fetcher)
		if err == nil {
			w.OnStatus(rep.observe)
			err = w.Run(ctx)
		}
		if err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Git writer stopped", "destination", key)
			rep.refuse(&invalid{reason: configv1alpha1.ReasonWriteFailed, message: "the writer stopped: " + err.Error()})
		}
	}, 5*time.Second)
}

// LeaseName is the coordination.k8s.io Lease, in kubehistory's own namespace, that the replica running
// the destination's writer holds. Namespace and name are hashed into it: both are up to 253 (63)
// characters, more than a Lease name holds, and "a-b"/"c" must not collide with "a"/"b-c".
func LeaseName(d change.DestinationRef) string {
	h := sha256.Sum256([]byte(d.Namespace + "/" + d.Name))
	name := "kubehistory-writer-" + d.Namespace + "-" + d.Name
	if len(name) > 200 {
		name = name[:200]
	}
	return strings.TrimRight(name, ".-") + "-" + hex.EncodeToString(h[:5])
}

func (m *Manager) stop(key string) {
	m.mu.Lock()
	r := m.running[key]
	delete(m.running, key)
	m.mu.Unlock()
	if r != nil {
		r.cancel()
		<-r.done
	}
}
