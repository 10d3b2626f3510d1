// Package destinations runs one Git writer per GitDestination: it follows GitDestinations (and the
// Secrets they reference) through an informer and starts, restarts or stops writers so that each runs
// with the current spec and credentials. Every replica campaigns for a per-destination Lease; only its
// holder runs the writer, so there is one active writer per destination across replicas. A stale writer
// (paused past its lease) cannot double anything: its push is a compare-and-swap of the branch, and
// after the fetch that follows a refused push it skips every change ID already in Git. It sets the GitDestination's Ready condition from what it
// could do (credentials missing, invalid spec); the writer's progress is in the RepoStatus.
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
	"time"

	"github.com/nats-io/nats.go/jetstream"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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
	// before another replica takes them over.
	LeaseDuration time.Duration
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
	js      jetstream.JetStream
	fetcher gitwriter.ObjectFetcher

	mu      sync.Mutex
	running map[string]*running
	wake    chan struct{}
}

type running struct {
	hash   string
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a manager; call Run after the informer behind lister is started.
func New(opts Options, lister configlisters.GitDestinationLister, kube kubernetes.Interface, client versioned.Interface,
	js jetstream.JetStream, fetcher gitwriter.ObjectFetcher) *Manager {
	if opts.Resync == 0 {
		opts.Resync = 15 * time.Second
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = 15 * time.Second
	}
	if opts.LeaseNamespace == "" {
		opts.LeaseNamespace = "kubehistory-system"
	}
	if opts.AllowedURLSchemes == nil {
		opts.AllowedURLSchemes = DefaultAllowedURLSchemes
	}
	return &Manager{opts: opts, lister: lister, kube: kube, client: client, js: js, fetcher: fetcher,
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
		cfg, reason, err := m.config(ctx, gd)
		if err != nil {
			m.setReady(ctx, gd, metav1.ConditionFalse, reason, err.Error())
			m.stop(key)
			continue
		}
		hash := configHash(cfg)
		m.mu.Lock()
		r := m.running[key]
		m.mu.Unlock()
		if r != nil && r.hash == hash {
			select {
			case <-r.done: // the writer stopped on its own: start it again
			default:
				continue
			}
		}
		m.stop(key)
		m.start(ctx, key, hash, cfg)
		m.setReady(ctx, gd, metav1.ConditionTrue, configv1alpha1.ReasonReady, "writer running; progress in the RepoStatus of the same name")
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
	cfg.Scope = m.opts.Scope
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
	if gd, err := m.lister.GitDestinations(dest.Namespace).Get(dest.Name); err == nil {
		opts.SensitiveResources = append(slices.Clone(opts.SensitiveResources), gd.Spec.SensitiveResources...)
		opts.SensitivePaths = append(slices.Clone(opts.SensitivePaths), gd.Spec.SensitivePaths...)
		opts.StripAnnotations = append(slices.Clone(opts.StripAnnotations), gd.Spec.StripAnnotations...)
	}
	return opts
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

// start campaigns for the destination's writer lease and runs its writer while it holds it.
func (m *Manager) start(ctx context.Context, key, hash string, cfg gitwriter.Config) {
	wctx, cancel := context.WithCancel(ctx)
	r := &running{hash: hash, cancel: cancel, done: make(chan struct{})}
	m.mu.Lock()
	m.running[key] = r
	m.mu.Unlock()
	go func() {
		defer close(r.done)
		lock := &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: m.opts.LeaseNamespace, Name: LeaseName(cfg.Destination)},
			Client:     m.kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: m.opts.Identity},
		}
		for wctx.Err() == nil {
			// RunOrDie returns when the lease is lost or wctx ends; campaign again until wctx ends.
			leaderelection.RunOrDie(wctx, leaderelection.LeaderElectionConfig{
				Lock:            lock,
				Name:            key,
				LeaseDuration:   m.opts.LeaseDuration,
				RenewDeadline:   m.opts.LeaseDuration * 2 / 3,
				RetryPeriod:     m.opts.LeaseDuration / 6,
				ReleaseOnCancel: true,
				Callbacks: leaderelection.LeaderCallbacks{
					OnStartedLeading: func(ctx context.Context) { m.runWriter(ctx, key, cfg) },
					OnStoppedLeading: func() { klog.InfoS("Git writer lease released or lost", "destination", key) },
				},
			})
		}
	}()
}

// runWriter runs the destination's writer until ctx ends (the lease is lost or the destination changed).
func (m *Manager) runWriter(ctx context.Context, key string, cfg gitwriter.Config) {
	klog.InfoS("Starting Git writer", "destination", key, "url", gitwriter.RedactedURL(cfg.URL), "branch", cfg.Branch, "replica", m.opts.Identity)
	// Run retries push failures itself; it returns on ctx end or on a fatal error, after which it is
	// started again.
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		w, err := gitwriter.New(cfg, m.js, m.fetcher)
		if err == nil {
			err = w.Run(ctx)
		}
		if err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "Git writer stopped", "destination", key)
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

func (m *Manager) setReady(ctx context.Context, gd *configv1alpha1.GitDestination, status metav1.ConditionStatus, reason, msg string) {
	c := meta.FindStatusCondition(gd.Status.Conditions, configv1alpha1.ConditionReady)
	if c != nil && c.Status == status && c.Reason == reason && c.Message == msg && gd.Status.ObservedGeneration == gd.Generation {
		return
	}
	gd = gd.DeepCopy()
	meta.SetStatusCondition(&gd.Status.Conditions, metav1.Condition{Type: configv1alpha1.ConditionReady, Status: status,
		Reason: reason, Message: msg, ObservedGeneration: gd.Generation})
	gd.Status.ObservedGeneration = gd.Generation
	if _, err := m.client.ConfigV1alpha1().GitDestinations(gd.Namespace).UpdateStatus(ctx, gd, metav1.UpdateOptions{}); err != nil {
		klog.ErrorS(err, "Updating GitDestination status", "destination", klog.KObj(gd))
	}
}
