package reconcile

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/ingest"
)

// plan is what one pass of a destination does: which rules name it, what they resolved to, and which
// Lists cover their scope.
type plan struct {
	dest              change.DestinationRef
	destinationExists bool

	watchRules   []*configv1alpha1.WatchRule
	wrResolved   []Resolution
	clusterRules []*configv1alpha1.ClusterWatchRule
	crResolved   []Resolution
	// untrusted are the ClusterWatchRules aiming at this destination although its namespace is not
	// trusted: not seeded, reported DestinationNotTrusted.
	untrusted []*configv1alpha1.ClusterWatchRule

	listings []listing
	// resources ("group/resource") and namespaces ("_cluster" for cluster-scoped) the pass covers.
	resources  map[string]bool
	namespaces map[string]bool
	nsLabels   map[string]map[string]string
}

// listing is one paged List: of a resource in one namespace, or in all namespaces / cluster-wide ("").
type listing struct {
	res       Resource
	namespace string
}

// plan resolves the destination's rules and the Lists that cover their scope. A ClusterWatchRule's
// namespaced resources are listed across all namespaces and filtered by its namespaceSelector: one
// request per resource whatever the number of namespaces.
func (r *Reconciler) plan(dest change.DestinationRef, served []Resource) (*plan, error) {
	p := &plan{dest: dest, resources: map[string]bool{}, namespaces: map[string]bool{}, nsLabels: map[string]map[string]string{}}
	if _, err := r.destinations.GitDestinations(dest.Namespace).Get(dest.Name); err == nil {
		p.destinationExists = true
	} else if !apierrors.IsNotFound(err) {
		return nil, err
	}
	wrs, err := r.watchRules.WatchRules(dest.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	for _, wr := range wrs {
		if wr.Spec.DestinationRef.Name == dest.Name {
			p.watchRules = append(p.watchRules, wr)
			p.wrResolved = append(p.wrResolved, ResolveWatchRule(wr, served))
		}
	}
	crs, err := r.clusterWatchRules.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	for _, cr := range crs {
		if cr.Spec.DestinationRef.Namespace == dest.Namespace && cr.Spec.DestinationRef.Name == dest.Name {
			if !r.opts.Trust.Trusts(dest.Namespace) {
				p.untrusted = append(p.untrusted, cr)
				continue
			}
			p.clusterRules = append(p.clusterRules, cr)
			p.crResolved = append(p.crResolved, ResolveClusterWatchRule(cr, served))
		}
	}
	nss, err := r.namespaces.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		p.nsLabels[ns.Name] = ns.Labels
	}

	type want struct {
		res Resource
		all bool
		nss map[string]bool
	}
	wants := map[string]*want{}
	add := func(res Resource, ns string) {
		w := wants[res.Name()]
		if w == nil {
			w = &want{res: res, nss: map[string]bool{}}
			wants[res.Name()] = w
		}
		if ns == "" {
			w.all = true
		} else {
			w.nss[ns] = true
		}
		p.resources[res.Group+"/"+res.Resource] = true
	}
	for i, wr := range p.watchRules {
		for _, res := range p.wrResolved[i].Resources {
			add(res, wr.Namespace)
			p.namespaces[wr.Namespace] = true
		}
	}
	for i, cr := range p.clusterRules {
		var selected []string
		for name, l := range p.nsLabels {
			if ingest.NamespaceSelected(cr.Spec.NamespaceSelector, l, true) {
				selected = append(selected, name)
			}
		}
		for _, res := range p.crResolved[i].Resources {
			if !res.Namespaced {
				add(res, "")
				p.namespaces[gitrecord.ClusterDir] = true
				continue
			}
			if len(selected) == 0 {
				continue
			}
			add(res, "")
			for _, n := range selected {
				p.namespaces[n] = true
			}
		}
	}
	names := make([]string, 0, len(wants))
	for n := range wants {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w := wants[n]
		if w.all {
			p.listings = append(p.listings, listing{res: w.res})
			continue
		}
		nss := make([]string, 0, len(w.nss))
		for ns := range w.nss {
			nss = append(nss, ns)
		}
		sort.Strings(nss)
		for _, ns := range nss {
			p.listings = append(p.listings, listing{res: w.res, namespace: ns})
		}
	}
	return p, nil
}

// matches says whether any of the destination's rules tracks the object, with ingest's own matching.
func (p *plan) matches(info ingest.ObjectInfo) bool {
	for _, wr := range p.watchRules {
		if info.Namespace != "" && info.Namespace == wr.Namespace && ingest.WatchRuleMatches(wr, info) {
			return true
		}
	}
	for _, cr := range p.clusterRules {
		l, known := p.nsLabels[info.Namespace]
		if ingest.ClusterWatchRuleMatches(cr, info, l, known) {
			return true
		}
	}
	return false
}

type seedResult struct {
	// expected are the paths (relative to the destination's prefix) of every object in scope.
	expected map[string]bool
	// excluded are the paths of listed objects the rules' selectors leave out.
	excluded map[string]bool
	// denied are the resources ("resource.group") kubehistory may not list, with the error.
	denied     map[string]error
	incomplete bool
	err        error
	published  int
	deferred   int
	unchanged  int
}

// seed lists every in-scope resource and publishes a seed per object in scope.
func (r *Reconciler) seed(ctx context.Context, p *plan) seedResult {
	res := seedResult{expected: map[string]bool{}, excluded: map[string]bool{}, denied: map[string]error{}}
	now := r.now()
	var buf []change.Change
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if err := r.publisher.Publish(ctx, buf); err != nil {
			return fmt.Errorf("publishing %d seeds of %s: %w", len(buf), p.dest, err)
		}
		res.published += len(buf)
		sent := r.published[p.dest]
		if sent == nil {
			sent = map[string]publishedSeed{}
			r.published[p.dest] = sent
		}
		for i := range buf {
			sent[gitrecord.ObjectPath("", buf[i].Object)] = publishedSeed{id: buf[i].ChangeID, at: now}
		}
		buf = buf[:0]
		return nil
	}
	for _, l := range p.listings {
		err := r.list(ctx, l, func(u *unstructured.Unstructured) error {
			info := ingest.ObjectInfo{Group: l.res.Group, Resource: l.res.Resource, Namespace: u.GetNamespace(), Name: u.GetName(),
				Labels: u.GetLabels(), LabelsKnown: true}
			if !p.matches(info) {
				res.excluded[gitrecord.ObjectPath("", change.Object{Group: info.Group, Resource: info.Resource,
					Namespace: info.Namespace, Name: info.Name})] = true
				return nil
			}
			obj := seedObject(l.res, u)
			path := gitrecord.ObjectPath("", obj)
			if res.expected[path] {
				return nil // also listed for another rule
			}
			res.expected[path] = true
			if now.Sub(lastWrite(u)) < r.opts.Settle {
				// Written a moment ago: its audit event may still be on its way, and a seed now would
				// record a Gap that is none. The next pass seeds it if audit did not.
				res.deferred++
				return nil
			}
			id := seedID(p.dest, obj)
			if prev, ok := r.published[p.dest][path]; ok && prev.id == id && now.Sub(prev.at) < republishAfter {
				res.unchanged++
				return nil
			}
			ch, err := r.seedChange(p.dest, l.res, obj, u, now)
			if err != nil {
				klog.ErrorS(err, "Skipping an object that cannot be encoded", "resource", l.res.Name(), "object", klog.KObj(u))
				return nil
			}
			buf = append(buf, ch)
			if len(buf) >= listPageSize {
				return flush()
			}
			return nil
		})
		switch {
		case err == nil:
		case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
			res.denied[l.res.Name()] = err
		case apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err):
			// The resource went away since discovery (a CRD deleted): it has no objects, and its files
			// are orphans; the next discovery drops it from the rules' scope.
			klog.InfoS("Resource no longer served", "resource", l.res.Name(), "err", err)
		case ctx.Err() != nil:
			res.err = ctx.Err()
			return res
		default:
			if _, publishing := err.(publishError); publishing {
				res.err = err
				return res
			}
			klog.ErrorS(err, "Listing failed", "destination", p.dest.String(), "resource", l.res.Name(), "namespace", l.namespace)
			res.incomplete = true
		}
	}
	if err := flush(); err != nil {
		res.err = err
	}
	if !res.incomplete && len(res.denied) == 0 && res.err == nil {
		// Forget what left the scope, so that the memory follows the scope's size.
		for path := range r.published[p.dest] {
			if !res.expected[path] {
				delete(r.published[p.dest], path)
			}
		}
	}
	return res
}

// republishAfter: a seed already published for the same object version is not published again within
// this span. Without it every pass would store a copy of every object again whenever JetStream's
// duplicate window has passed since the last copy; the periodic republish still repairs a Git that
// changed behind kubehistory's back (the writer commits it where Git differs).
const republishAfter = time.Hour

// publishedSeed is the last seed published for a path in this leadership term.
type publishedSeed struct {
	id string
	at time.Time
}

func seedObject(res Resource, u *unstructured.Unstructured) change.Object {
	return change.Object{Group: res.Group, Version: res.Version, Resource: res.Resource, Kind: res.Kind,
		Namespace: u.GetNamespace(), Name: u.GetName(), UID: string(u.GetUID()), ResourceVersion: u.GetResourceVersion()}
}

// seedID derives from the uid and resourceVersion: an unchanged object published again by a later pass
// is deduplicated by JetStream, and past its window by the writer, which finds Git equal and records
// nothing.
func seedID(dest change.DestinationRef, obj change.Object) string {
	return change.ID(dest, "seed/"+obj.UID+"/"+obj.ResourceVersion, obj)
}

// publishError marks a failure to publish (as opposed to a failure to list) inside a List callback.
type publishError struct{ error }

// list pages through one listing. A continue token that expired (410) restarts the listing: objects
// seen twice are deduplicated by path.
func (r *Reconciler) list(ctx context.Context, l listing, fn func(*unstructured.Unstructured) error) error {
	ri := r.dynamic.Resource(l.res.GVR())
	var ri2 dynamic.ResourceInterface = ri
	if l.res.Namespaced && l.namespace != "" {
		ri2 = ri.Namespace(l.namespace)
	}
	opts := metav1.ListOptions{Limit: listPageSize}
	restarted := false
	for {
		page, err := ri2.List(ctx, opts)
		if apierrors.IsResourceExpired(err) && !restarted {
			restarted, opts.Continue = true, ""
			continue
		}
		if err != nil {
			return err
		}
		for i := range page.Items {
			if err := fn(&page.Items[i]); err != nil {
				return publishError{err}
			}
		}
		if page.GetContinue() == "" {
			return nil
		}
		opts.Continue = page.GetContinue()
	}
}

// seedChange is the seed of one listed object.
func (r *Reconciler) seedChange(dest change.DestinationRef, res Resource, obj change.Object, u *unstructured.Unstructured, now time.Time) (change.Change, error) {
	// List items of built-in types come without apiVersion and kind; the body must be a whole object.
	u.SetAPIVersion(res.GVR().GroupVersion().String())
	u.SetKind(res.Kind)
	body, err := json.Marshal(u.Object)
	if err != nil {
		return change.Change{}, err
	}
	c := change.Change{
		Fields: change.Fields{
			Object:     obj,
			Verb:       change.VerbSeed,
			Actor:      r.actor,
			Source:     change.SourceReconcile,
			ChangeID:   seedID(dest, obj),
			ChangeTime: metav1.NewMicroTime(now),
		},
		Destination: dest,
		Body:        body,
	}
	// A listed Secret must not reach JetStream with its values.
	c.RedactBody(r.opts.Policy)
	return c, nil
}

// lastWrite is when the object was last written, as far as it tells: its creation and the times of
// its managedFields entries, which the API server stamps on every write that changes a field.
func lastWrite(u *unstructured.Unstructured) time.Time {
	t := u.GetCreationTimestamp().Time
	for _, mf := range u.GetManagedFields() {
		if mf.Time != nil && mf.Time.After(t) {
			t = mf.Time.Time
		}
	}
	return t
}

// publishCheck ends a complete pass with the orphan check, chunked over the expected and excluded
// paths together.
func (r *Reconciler) publishCheck(ctx context.Context, p *plan, res seedResult) error {
	expected := sortedKeys(res.expected)
	var excluded []string
	for path := range res.excluded {
		if !res.expected[path] { // listed for one rule, tracked by another
			excluded = append(excluded, path)
		}
	}
	sort.Strings(excluded)
	now := r.now()
	pass := r.opts.Identity + "-" + strconv.FormatInt(now.UnixNano(), 36)
	total := len(expected) + len(excluded)
	chunks := (total + checkChunk - 1) / checkChunk
	if chunks == 0 {
		chunks = 1
	}
	grace := int64(r.opts.Settle / time.Second)
	var msgs []change.Change
	for i := 0; i < chunks; i++ {
		oc := &change.OrphanCheck{Pass: pass, Chunk: i, Chunks: chunks, GraceSeconds: grace}
		// Entries [lo, hi) of expected followed by excluded.
		lo, hi := i*checkChunk, (i+1)*checkChunk
		if hi > total {
			hi = total
		}
		for j := lo; j < hi; j++ {
			if j < len(expected) {
				oc.Expected = append(oc.Expected, expected[j])
			} else {
				oc.Excluded = append(oc.Excluded, excluded[j-len(expected)])
			}
		}
		if i == 0 {
			oc.Resources, oc.Namespaces = sortedKeys(p.resources), sortedKeys(p.namespaces)
		}
		msgs = append(msgs, change.Change{
			Fields: change.Fields{
				Source:     change.SourceReconcile,
				Actor:      r.actor,
				ChangeID:   change.ID(p.dest, "orphan-check/"+pass+"/"+strconv.Itoa(i), change.Object{}),
				ChangeTime: metav1.NewMicroTime(now),
			},
			Destination: p.dest,
			OrphanCheck: oc,
		})
	}
	if err := r.publisher.Publish(ctx, msgs); err != nil {
		return fmt.Errorf("publishing the orphan check of %s: %w", p.dest, err)
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
