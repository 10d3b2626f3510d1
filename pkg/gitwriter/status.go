package gitwriter

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// Condition types and reasons of RepoStatus written by the writer. Ready's reasons are those of the
// GitDestination's Ready condition, which the destinations manager copies from here.
const (
	ConditionReady = configv1alpha1.ConditionReady
	// ConditionSynced says whether Git equals the cluster for the tracked scope after the last orphan
	// check of the reconciler.
	ConditionSynced     = "Synced"
	ReasonInSync        = "InSync"
	ReasonOrphansFound  = "OrphansFound"
	ReasonOrphansPruned = "OrphansPruned"
	// Reasons of RepoStatus.orphans entries.
	OrphanReasonObjectGone = change.OrphanObjectGone
	OrphanReasonOutOfScope = change.OrphanOutOfScope
)

// SetRepoStatusRefused stores, for a destination whose writer cannot run (an invalid spec, missing
// credentials), Ready False with why, keeping the rest of its status: its RepoStatus then says what its
// GitDestination says instead of what the last writer saw.
func SetRepoStatusRefused(ctx context.Context, store queue.StatusKV, ref change.DestinationRef, identity, reason, message string) error {
	st, err := store.Get(ctx, ref)
	if err != nil && !errors.Is(err, queue.ErrStatusNotFound) {
		return err
	}
	if c := meta.FindStatusCondition(st.Conditions, ConditionReady); c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason &&
		c.Message == message && st.Writer == identity {
		return nil
	}
	now := metav1.Now()
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: message})
	st.LastError, st.LastErrorTime, st.Writer = message, &now, identity
	return store.Put(ctx, ref, &st)
}

// OnStatus sets a function called with a copy of the status every time the writer stores it; it must
// not block (the destinations manager hands it to the goroutine that writes the GitDestination's
// status). Call before Run.
func (w *Writer) OnStatus(fn func(change.RepoState)) { w.onStatus = fn }

// CloneRepoState copies a state so that the copy shares no slice with it.
func CloneRepoState(st change.RepoState) change.RepoState {
	st.Orphans = slices.Clone(st.Orphans)
	st.Conditions = slices.Clone(st.Conditions)
	return st
}

// loadStatus starts from the status the destination's previous writer stored (counters, orphans, the
// last push). Its Ready condition and head hold only for the same repository and branch.
func (w *Writer) loadStatus(ctx context.Context) {
	if prev, err := w.kv.Get(ctx, w.cfg.Destination); err == nil {
		w.status = prev
	}
	repo := gitrecord.RedactedURL(w.cfg.URL)
	if w.status.Repository != repo || w.status.Branch != w.cfg.Branch {
		meta.RemoveStatusCondition(&w.status.Conditions, ConditionReady)
		w.status.HeadCommit, w.status.LastPushTime, w.status.LastError, w.status.LastErrorTime = "", nil, "", nil
	}
	w.status.Repository, w.status.Branch, w.status.Writer = repo, w.cfg.Branch, w.cfg.Identity
}

// remoteError is an error of the writer's exchange with the remote, with the Ready reason it stands for.
type remoteError struct {
	reason string
	err    error
}

func (e *remoteError) Error() string { return e.err.Error() }
func (e *remoteError) Unwrap() error { return e.err }

// readError classifies a failure to list or fetch the remote branch.
func (w *Writer) readError(err error) error {
	if err == nil {
		return nil
	}
	return &remoteError{reason: w.transportReason(err, configv1alpha1.ReasonRepositoryUnreachable), err: err}
}

// transportReason tells authentication failures from the rest, which get fallback.
func (w *Writer) transportReason(err error, fallback string) string {
	var hostKey *hostKeyError
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired):
		if c := w.cfg.Credentials; c.Username == "" && c.Password == "" && c.Token == "" && len(c.SSHPrivateKey) == 0 {
			return configv1alpha1.ReasonCredentialsMissing
		}
		return configv1alpha1.ReasonAuthenticationFailed
	case errors.Is(err, transport.ErrAuthorizationFailed), errors.As(err, &hostKey),
		// x/crypto/ssh reports a refused client key only as text: it has no error type for it.
		strings.Contains(err.Error(), "ssh: unable to authenticate"):
		return configv1alpha1.ReasonAuthenticationFailed
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return configv1alpha1.ReasonRepositoryUnreachable
	}
	return fallback
}

// failureReason is the Ready reason of a failed attempt: what the remote said, else WriteFailed (the
// records could not be published, the clone cache failed, ...).
func failureReason(err error) string {
	var re *remoteError
	if errors.As(err, &re) {
		return re.reason
	}
	if errors.Is(err, errStale) {
		return configv1alpha1.ReasonPushFailed // the branch kept moving under every retry
	}
	return configv1alpha1.ReasonWriteFailed
}

var userinfoInURL = regexp.MustCompile(`(://)[^/@\s]+@`)

// redact strips credentials from an error message before it is stored or shown: user information in
// URLs, and the password or token of the destination should a transport quote them.
func (w *Writer) redact(msg string) string {
	msg = userinfoInURL.ReplaceAllString(msg, "$1")
	for _, s := range []string{w.cfg.Credentials.Password, w.cfg.Credentials.Token} {
		if len(s) >= 4 {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return msg
}

// pending is how many changes are not in Git yet (undelivered, plus inFlight: the batch being worked
// on) and when the oldest of them was accepted: the first message after the consumer's ack floor.
// Acks are asynchronous, so the consumer may still count a batch just acked as delivered and unacked:
// its NumAckPending is not used, and the age may be a batch too old until the next update. Seeds held
// back for GapGrace are not counted.
func (w *Writer) pending(ctx context.Context, inFlight int) (int64, *metav1.Time) {
	b, err := w.cons.Backlog(ctx)
	if err != nil {
		return int64(inFlight), w.status.OldestPendingTime
	}
	n := int64(b.Pending) + int64(inFlight)
	if n == 0 {
		return 0, nil
	}
	if b.Oldest.IsZero() {
		return n, w.status.OldestPendingTime // not readable now
	}
	t := metav1.NewTime(b.Oldest)
	return n, &t
}

// check reads the remote branch and reports whether it could. An idle writer that could not calls it
// again with backoff, so that a repository created later, or credentials fixed, turn Ready without
// waiting for a change.
func (w *Writer) check(ctx context.Context) {
	if err := w.sync(ctx); err != nil {
		w.failed(ctx, err, 0)
		if w.checkBackoff == nil {
			b := w.cfg.retryBackoff()
			w.checkBackoff = &b
		}
		w.nextCheck = time.Now().Add(w.checkBackoff.Step())
		return
	}
	w.checkBackoff = nil
	w.succeeded(ctx, nil, 0, false)
}

// succeeded records a batch done (or, with no records, a sync of the remote branch that worked). Ready
// becomes True when it pushed; without a push it becomes True only when nothing waits, so that a
// writer whose pushes fail does not look ready between two attempts.
func (w *Writer) succeeded(ctx context.Context, records []change.Record, committed int, pushed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := metav1.Now()
	if !w.head.IsZero() {
		w.status.HeadCommit = w.head.String()
	}
	if pushed {
		w.status.LastPushTime = &now
	}
	w.status.CommittedChanges += int64(committed)
	for _, r := range records {
		if t := r.ChangeTime.Time; w.status.LastChangeTime == nil || t.After(w.status.LastChangeTime.Time) {
			lt := metav1.NewTime(t)
			w.status.LastChangeTime = &lt
		}
	}
	w.status.PendingChanges, w.status.OldestPendingTime = w.pending(ctx, 0)
	ready := meta.IsStatusConditionTrue(w.status.Conditions, ConditionReady)
	switch {
	case pushed:
		w.setReady(metav1.ConditionTrue, configv1alpha1.ReasonPushed, "the last push to "+w.cfg.Branch+" succeeded")
	case !ready && w.status.PendingChanges == 0:
		head := "empty"
		if !w.head.IsZero() {
			head = "at " + w.head.String()
		}
		w.setReady(metav1.ConditionTrue, configv1alpha1.ReasonRepositoryReachable,
			fmt.Sprintf("read branch %s (%s); nothing to push", w.cfg.Branch, head))
	}
	if meta.IsStatusConditionTrue(w.status.Conditions, ConditionReady) {
		w.status.LastError, w.status.LastErrorTime = "", nil
	}
	w.saveStatus(ctx)
}

// failed records a failed attempt: Ready False with what the remote said.
func (w *Writer) failed(ctx context.Context, err error, inFlight int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := metav1.Now()
	msg := w.redact(err.Error())
	w.status.LastError, w.status.LastErrorTime = msg, &now
	w.status.PendingChanges, w.status.OldestPendingTime = w.pending(ctx, inFlight)
	w.setReady(metav1.ConditionFalse, failureReason(err), msg)
	w.saveStatus(ctx)
}

func (w *Writer) setReady(status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&w.status.Conditions, metav1.Condition{Type: ConditionReady, Status: status, Reason: reason, Message: msg})
}

// saveStatus stores the status (w.mu held).
func (w *Writer) saveStatus(ctx context.Context) {
	if err := w.kv.Put(ctx, w.cfg.Destination, &w.status); err != nil {
		klog.ErrorS(err, "Storing RepoStatus failed", "destination", w.ref())
	}
	if w.onStatus != nil {
		w.onStatus(CloneRepoState(w.status))
	}
}
