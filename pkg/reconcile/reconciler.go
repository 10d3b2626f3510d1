// Package reconcile is the reconciler stage of the data path: the one leader-elected replica compares
// the cluster with Git. For every GitDestination it resolves the scope of the WatchRules and
// ClusterWatchRules that name it through discovery, lists every object in scope, publishes a seed
// change per object into KUBEHISTORY_CHANGES (the Git writer commits only where Git differs, and marks
// a difference that no audit event explained as a Gap), then an orphan check listing every object the
// scope covers (the writer prunes or reports the files of objects that no longer exist or left the
// scope). It runs at leadership start, on every rule, destination or namespace change, and
// periodically, which is how resources of a CRD created after start come into scope without restart,
// and how collection sweeps and lost audit batches are caught up. Rule conditions (Ready with
// UnknownResource, DestinationMissing, AccessDenied) and status.trackedResources tell the operator
// what each rule resolved to.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	versioned "github.com/kubehistory/kubehistory/pkg/generated/clientset/versioned"
	"github.com/kubehistory/kubehistory/pkg/generated/informers/externalversions"
	configlisters "github.com/kubehistory/kubehistory/pkg/generated/listers/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/ingest"
)

// Publisher stores changes durably (queue.Publisher on JetStream).
type Publisher interface {
	Publish(ctx context.Context, changes []change.Change) error
}

// Options tune the reconciler.
type Options struct {
	// Interval between full passes (discovery refresh, seed, orphan check) of every destination.
	Interval time.Duration
	// Settle is how long after its last write an object is left to the audit path: a seed of an object
	// whose audit event is still on its way would record a Gap that is none. The same span is the
	// grace period of orphans (the audit event of a delete may still be on its way).
	Settle time.Duration
	// LeaderElect campaigns for the Lease LeaseNamespace/LeaseName; off, this replica always reconciles.
	LeaderElect    bool
	LeaseNamespace string
	LeaseName      string
	// LeaseDuration, RenewDeadline and RetryPeriod time the Lease (component-base's leader election
	// configuration, --leader-elect-*); zero takes 15s, 10s and 2s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Identity is this replica's name: the lease holder identity.
	Identity string
	// Policy redacts the bodies of sensitive objects before a seed is published; without it their
	// bodies are dropped (the writer fetches and sanitizes them).
	Policy change.Policy
	// Trust decides which namespaces' GitDestinations ClusterWatchRules may target; a rule aiming
	// elsewhere is not seeded and reports DestinationNotTrusted. Nil trusts every namespace.
	Trust ingest.DestinationTrust
	// Actor is the username seeds are recorded with; empty asks the API server (SelfSubjectReview)
	// who kubehistory is, falling back to "kubehistory:<Identity>".
	Actor string
}

// Defaults.
const (
	DefaultInterval  = 30 * time.Second
	DefaultSettle    = time.Minute
	DefaultLeaseName = "kubehistory-reconciler"
	// listPageSize is the limit of each List page: big enough to keep round trips few, small enough
	// for the API server to serve from its watch cache without a large allocation.
	listPageSize = 500
	// checkChunk bounds the paths of one orphan check message (about 100 bytes each: ~200 KiB, well
	// below JetStream's default 1 MiB maximum payload).
	checkChunk = 2000
)

// Reconciler reconciles every GitDestination with the cluster. Build it with New before the informer
// factories start; Run it after.
type Reconciler struct {
	opts      Options
	kube      kubernetes.Interface
	client    versioned.Interface
	dynamic   dynamic.Interface
	discovery discovery.DiscoveryInterface
	publisher Publisher

	watchRules        configlisters.WatchRuleLister
	clusterWatchRules configlisters.ClusterWatchRuleLister
	destinations      configlisters.GitDestinationLister
	namespaces        corelisters.NamespaceLister
	synced            []cache.InformerSynced

	mu     sync.Mutex
	queue  workqueue.TypedRateLimitingInterface[string] // nil while not leading
	served []Resource
	at     time.Time // when served was discovered
	actor  change.Actor
	// published remembers the seeds of this leadership term; only the worker goroutine uses it.
	published map[change.DestinationRef]map[string]publishedSeed

	now func() time.Time
}

// New registers the reconciler's event handlers with the informer factories.
func New(opts Options, kube kubernetes.Interface, client versioned.Interface, dyn dynamic.Interface, disc discovery.DiscoveryInterface,
	publisher Publisher, configInformers externalversions.SharedInformerFactory, kubeInformers kubeinformers.SharedInformerFactory) (*Reconciler, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Settle < 0 {
		opts.Settle = 0
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration, opts.RenewDeadline, opts.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
	}
	if opts.LeaseName == "" {
		opts.LeaseName = DefaultLeaseName
	}
	registerReconcileMetrics()
	wr := configInformers.Config().V1alpha1().WatchRules()
	cwr := configInformers.Config().V1alpha1().ClusterWatchRules()
	gd := configInformers.Config().V1alpha1().GitDestinations()
	ns := kubeInformers.Core().V1().Namespaces()
	r := &Reconciler{
		opts: opts, kube: kube, client: client, dynamic: dyn, discovery: disc, publisher: publisher,
		watchRules: wr.Lister(), clusterWatchRules: cwr.Lister(), destinations: gd.Lister(), namespaces: ns.Lister(),
		synced:    []cache.InformerSynced{wr.Informer().HasSynced, cwr.Informer().HasSynced, gd.Informer().HasSynced, ns.Informer().HasSynced},
		now:       time.Now,
		published: map[change.DestinationRef]map[string]publishedSeed{},
	}
	// Only spec changes (generation) count: the reconciler's own status updates must not make a loop.
	specChanged := func(o, n any) bool {
		om, ok1 := o.(metav1.Object)
		nm, ok2 := n.(metav1.Object)
		return !ok1 || !ok2 || om.GetGeneration() != nm.GetGeneration()
	}
	handlers := []struct {
		inf  cache.SharedIndexInformer
		keys func(any) []string
	}{
		{wr.Informer(), func(o any) []string {
			if r, ok := o.(*configv1alpha1.WatchRule); ok {
				return []string{r.Namespace + "/" + r.Spec.DestinationRef.Name}
			}
			return nil
		}},
		{cwr.Informer(), func(o any) []string {
			if r, ok := o.(*configv1alpha1.ClusterWatchRule); ok {
				return []string{r.Spec.DestinationRef.Namespace + "/" + r.Spec.DestinationRef.Name}
			}
			return nil
		}},
		{gd.Informer(), func(o any) []string {
			if d, ok := o.(*configv1alpha1.GitDestination); ok {
				return []string{d.Namespace + "/" + d.Name}
			}
			return nil
		}},
	}
	for _, h := range handlers {
		keys := h.keys
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { r.enqueue(keys(o)...) },
			UpdateFunc: func(o, n any) {
				if specChanged(o, n) {
					// The old destination too: a rule moved elsewhere leaves orphans behind.
					r.enqueue(append(keys(o), keys(n)...)...)
				}
			},
			DeleteFunc: func(o any) {
				if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
					o = t.Obj
				}
				r.enqueue(keys(o)...)
			},
		}); err != nil {
			return nil, err
		}
	}
	// Namespace labels decide ClusterWatchRules' namespaceSelectors.
	if _, err := ns.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { r.enqueueClusterRules() },
		UpdateFunc: func(o, n any) {
			on, ok1 := o.(*corev1.Namespace)
			nn, ok2 := n.(*corev1.Namespace)
			if !ok1 || !ok2 || !labels.Equals(on.Labels, nn.Labels) {
				r.enqueueClusterRules()
			}
		},
		DeleteFunc: func(any) { r.enqueueClusterRules() },
	}); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reconciler) enqueue(keys ...string) {
	r.mu.Lock()
	q := r.queue
	r.mu.Unlock()
	if q == nil {
		return // not leading: the next leader starts with a full pass
	}
	for _, k := range keys {
		if k != "/" {
			q.Add(k)
		}
	}
}

func (r *Reconciler) enqueueClusterRules() {
	rules, err := r.clusterWatchRules.List(labels.Everything())
	if err != nil {
		return
	}
	for _, cr := range rules {
		r.enqueue(cr.Spec.DestinationRef.Namespace + "/" + cr.Spec.DestinationRef.Name)
	}
}

// enqueueAll queues every destination a rule names or that exists.
func (r *Reconciler) enqueueAll() {
	var keys []string
	if gds, err := r.destinations.List(labels.Everything()); err == nil {
		for _, d := range gds {
			keys = append(keys, d.Namespace+"/"+d.Name)
		}
	}
	if rules, err := r.watchRules.List(labels.Everything()); err == nil {
		for _, wr := range rules {
			keys = append(keys, wr.Namespace+"/"+wr.Spec.DestinationRef.Name)
		}
	}
	if rules, err := r.clusterWatchRules.List(labels.Everything()); err == nil {
		for _, cr := range rules {
			keys = append(keys, cr.Spec.DestinationRef.Namespace+"/"+cr.Spec.DestinationRef.Name)
		}
	}
	r.enqueue(keys...)
}

// Run reconciles until ctx ends, while this replica leads (or always, without leader election).
func (r *Reconciler) Run(ctx context.Context) {
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		return
	}
	if !r.opts.LeaderElect {
		r.lead(ctx)
		return
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: r.opts.LeaseNamespace, Name: r.opts.LeaseName},
		Client:     r.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: r.opts.Identity},
	}
	for ctx.Err() == nil {
		// RunOrDie returns when leadership is lost; campaign again until ctx ends.
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            r.opts.LeaseName,
			LeaseDuration:   r.opts.LeaseDuration,
			RenewDeadline:   r.opts.RenewDeadline,
			RetryPeriod:     r.opts.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: r.lead,
				OnStoppedLeading: func() {
					klog.InfoS("Reconciler stopped leading", "identity", r.opts.Identity)
				},
			},
		})
	}
}

// lead runs one term of leadership: a fresh queue, a full pass at once, then one every Interval.
func (r *Reconciler) lead(ctx context.Context) {
	klog.InfoS("Reconciler leading", "identity", r.opts.Identity, "interval", r.opts.Interval, "settle", r.opts.Settle)
	r.actor = r.whoAmI(ctx)
	// A new term republishes everything once: the previous leader's memory is not ours.
	r.published = map[change.DestinationRef]map[string]publishedSeed{}
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, r.opts.Interval),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubehistory-reconciler"})
	r.mu.Lock()
	r.queue = q
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.queue = nil
		r.mu.Unlock()
		q.ShutDown()
	}()
	go func() {
		t := time.NewTicker(r.opts.Interval)
		defer t.Stop()
		for {
			r.enqueueAll()
			select {
			case <-ctx.Done():
				q.ShutDown()
				return
			case <-t.C:
			}
		}
	}()
	// One worker: passes of different destinations list the same resources, and the replica shares
	// its cores with ingest and the API.
	for r.processNext(ctx, q) {
	}
}

func (r *Reconciler) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	if err := r.Sync(ctx, key); err != nil {
		if ctx.Err() != nil {
			return false
		}
		syncsTotal.WithLabelValues(key, syncError).Inc()
		utilruntime.HandleErrorWithContext(ctx, err, "Reconciling destination failed; will retry", "destination", key)
		q.AddRateLimited(key)
		return true
	}
	q.Forget(key)
	syncsTotal.WithLabelValues(key, syncSuccess).Inc()
	return true
}

// whoAmI asks the API server for kubehistory's own username: seeds are recorded as changes by it.
func (r *Reconciler) whoAmI(ctx context.Context) change.Actor {
	if r.opts.Actor != "" {
		return change.Actor{Username: r.opts.Actor}
	}
	ssr, err := r.kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err == nil && ssr.Status.UserInfo.Username != "" {
		return change.Actor{Username: ssr.Status.UserInfo.Username, UID: ssr.Status.UserInfo.UID}
	}
	fallback := "kubehistory:" + r.opts.Identity
	klog.InfoS("Cannot learn kubehistory's username from the API server; recording seeds under a fallback", "username", fallback, "err", err)
	return change.Actor{Username: fallback}
}

// resources returns the discovered resources, refreshed when older than a few seconds: a rule naming a
// CRD created a moment ago resolves at once, and a burst of destination syncs shares one discovery.
func (r *Reconciler) resources() ([]Resource, error) {
	r.mu.Lock()
	served, at := r.served, r.at
	r.mu.Unlock()
	if served != nil && r.now().Sub(at) < 2*time.Second {
		return served, nil
	}
	fresh, err := Discover(r.discovery)
	if err != nil {
		if served != nil {
			klog.ErrorS(err, "Discovery failed; using the previous result")
			return served, nil
		}
		return nil, err
	}
	r.mu.Lock()
	r.served, r.at = fresh, r.now()
	r.mu.Unlock()
	return fresh, nil
}

var errIncomplete = errors.New("some in-scope resources could not be listed")

// Sync reconciles one destination ("namespace/name"): rule statuses, seeds, orphan check.
func (r *Reconciler) Sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a key we made; nothing to retry
	}
	dest := change.DestinationRef{Namespace: ns, Name: name}
	served, err := r.resources()
	if err != nil {
		return err
	}
	p, err := r.plan(dest, served)
	if err != nil {
		return err
	}
	if !p.destinationExists {
		r.writeStatuses(ctx, p, nil)
		return nil
	}
	res := r.seed(ctx, p)
	r.writeStatuses(ctx, p, res.denied)
	if res.err != nil {
		return res.err
	}
	klog.V(2).InfoS("Seeded destination", "destination", key, "objects", len(res.expected), "published", res.published,
		"deferred", res.deferred, "unchanged", res.unchanged, "denied", len(res.denied))
	// Without a full listing, the files of objects we could not see would look orphaned: no check. A
	// denied list is reported in the rules' conditions and needs no retry before the next pass.
	if len(res.denied) > 0 {
		return nil
	}
	if res.incomplete {
		return fmt.Errorf("destination %s: %w", dest, errIncomplete)
	}
	return r.publishCheck(ctx, p, res)
}
