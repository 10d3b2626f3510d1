package destinations

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
)

// reporter writes a GitDestination's status from what its writer reports. It runs only while this
// replica holds the destination's lease, so one replica at a time writes a status.
type reporter struct {
	m    *Manager
	ref  change.DestinationRef
	r    *running
	wake chan struct{}

	// latest is the writer's last status, bad why no writer runs (either may be nil), under mu.
	mu     sync.Mutex
	latest *change.RepoState
	bad    *invalid

	// written is the status this reporter last wrote, at lastWrite.
	written   *configv1alpha1.GitDestinationStatus
	lastWrite time.Time
}

// observe takes a status the writer stored; it must not block (gitwriter.Writer.OnStatus).
func (p *reporter) observe(st change.RepoState) {
	p.mu.Lock()
	p.latest, p.bad = &st, nil
	p.mu.Unlock()
	p.poke()
}

// refuse reports why the writer cannot run.
func (p *reporter) refuse(bad *invalid) {
	p.mu.Lock()
	p.bad = bad
	p.mu.Unlock()
	p.poke()
}

func (p *reporter) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (r *running) kickReporter() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// rewriteAfter: a status this reporter wrote and the informer still shows otherwise is written again
// after this long (someone else wrote it meanwhile, or the write was lost).
const rewriteAfter = 30 * time.Second

// run writes the status whenever the writer reports, the generation moves, or a delayed write is due,
// until ctx ends (the lease is lost or the destination changed).
func (p *reporter) run(ctx context.Context) {
	var later <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-p.r.kick:
		case <-later:
			later = nil
		}
		if wait := p.sync(ctx); wait > 0 && later == nil {
			later = time.After(wait)
		}
	}
}

// sync writes the status if it changed; a positive result asks to be called again after that long (a
// throttled or failed write).
func (p *reporter) sync(ctx context.Context) time.Duration {
	gd, err := p.m.lister.GitDestinations(p.ref.Namespace).Get(p.ref.Name)
	if err != nil {
		return 0 // deleted: its writer is being stopped
	}
	desired, ok := p.desired(gd)
	if !ok || equality.Semantic.DeepEqual(desired, gd.Status) {
		return 0
	}
	since := time.Since(p.lastWrite)
	if p.written != nil && equality.Semantic.DeepEqual(desired, *p.written) && since < rewriteAfter {
		return rewriteAfter - since // the informer has not caught up with our write yet
	}
	if !urgent(&gd.Status, &desired) && since < p.m.opts.StatusInterval {
		return p.m.opts.StatusInterval - since
	}
	for attempt := 0; ; attempt++ {
		u := gd.DeepCopy()
		u.Status = desired
		_, err = p.m.client.ConfigV1alpha1().GitDestinations(gd.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) || attempt == 3 {
			break
		}
		// The informer's copy is behind: read the object and build the status on it again.
		if gd, err = p.m.client.ConfigV1alpha1().GitDestinations(gd.Namespace).Get(ctx, gd.Name, metav1.GetOptions{}); err != nil {
			break
		}
		if desired, ok = p.desired(gd); !ok {
			return 0
		}
	}
	switch {
	case apierrors.IsNotFound(err):
		return 0
	case err != nil:
		klog.ErrorS(err, "Updating GitDestination status", "destination", p.ref.String())
		return 2 * time.Second
	}
	p.written, p.lastWrite = &desired, time.Now()
	return 0
}

// desired is the status gd should have: the writer's Ready condition (or why no writer runs) at the
// generation the writer runs with, and its head and lag. Nothing (false) until the writer has said
// whether it can reach the remote, so that a spec just changed keeps showing the Ready of the
// generation it is about.
func (p *reporter) desired(gd *configv1alpha1.GitDestination) (configv1alpha1.GitDestinationStatus, bool) {
	p.mu.Lock()
	latest, bad := p.latest, p.bad
	p.mu.Unlock()
	gen := p.r.generation.Load()
	st := *gd.Status.DeepCopy()
	var cond metav1.Condition
	switch {
	case bad != nil:
		cond = metav1.Condition{Type: configv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: bad.reason, Message: bad.message}
	case latest != nil:
		c := meta.FindStatusCondition(latest.Conditions, configv1alpha1.ConditionReady)
		if c == nil {
			return st, false
		}
		cond = metav1.Condition{Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message, LastTransitionTime: seconds(&c.LastTransitionTime)}
	default:
		return st, false
	}
	if latest != nil {
		st.HeadCommit, st.PendingChanges = latest.HeadCommit, latest.PendingChanges
		st.LastPushTime, st.OldestPendingTime = secondsPtr(latest.LastPushTime), secondsPtr(latest.OldestPendingTime)
	}
	if cond.LastTransitionTime.IsZero() {
		cond.LastTransitionTime = metav1.NewTime(time.Now().Truncate(time.Second))
	}
	cond.ObservedGeneration = gen
	meta.SetStatusCondition(&st.Conditions, cond)
	st.ObservedGeneration, st.Writer = gen, p.m.opts.Identity
	return st, true
}

// urgent says whether a status change must be written at once: Ready turned or changed reason, the
// generation or the writer moved. The head, the lag and messages wait for StatusInterval.
func urgent(cur, next *configv1alpha1.GitDestinationStatus) bool {
	if cur.ObservedGeneration != next.ObservedGeneration || cur.Writer != next.Writer {
		return true
	}
	a := meta.FindStatusCondition(cur.Conditions, configv1alpha1.ConditionReady)
	b := meta.FindStatusCondition(next.Conditions, configv1alpha1.ConditionReady)
	return a == nil || b == nil || a.Status != b.Status || a.Reason != b.Reason || a.ObservedGeneration != b.ObservedGeneration
}

// seconds drops what a stored metav1.Time drops, so that a status read back compares equal.
func seconds(t *metav1.Time) metav1.Time { return metav1.NewTime(t.Truncate(time.Second)) }

func secondsPtr(t *metav1.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	s := seconds(t)
	return &s
}
