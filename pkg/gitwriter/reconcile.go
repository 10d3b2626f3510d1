package gitwriter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/queue"
)

// reconcileChanges says whether a reconcile change (seed, orphan delete) changes Git. The reconciler
// republishes every object in scope on every pass: only where Git differs is there history to record,
// and a second start of kubehistory must make no commit at all.
func reconcileChanges(apply, del bool, old fileState, yaml []byte) bool {
	if !apply {
		return false // Git already holds a newer state of the object
	}
	if del {
		return old.exists
	}
	return !old.exists || !bytes.Equal(old.content, yaml)
}

// classifySeeds finds, before the batch is grouped into commits by actor, the seeds that show Git
// behind the cluster without a recorded change: the file exists and differs from the listed state.
// Those are recorded with the Gap marker and no actor, since whoever made the missed changes never
// reached us through the audit trail. The exception is a file whose journal version equals the
// listed resourceVersion: no change was missed, only the rendering differs (for example a resource
// added to sensitiveResources), and the seed keeps the reconciler as its actor. The batch is copied,
// not modified, so that build stays pure across retries.
//
// A seed that would be a Gap but was published less than GapGrace ago is held instead (returned in
// held with the time left): the audit change that explains the difference may still be on its way.
func (w *Writer) classifySeeds(batch []*pending, read func(string) (fileState, error), current func(string) (gitrecord.ObjectVersion, bool),
	now time.Time) ([]*pending, map[string]time.Duration, error) {
	out := batch
	copied := false
	var held map[string]time.Duration
	for i, p := range batch {
		if p.ch.Verb != change.VerbSeed || p.yaml == nil {
			continue
		}
		path := gitrecord.ObjectPath(w.cfg.PathPrefix, p.ch.Object)
		old, err := read(path)
		if err != nil {
			return nil, nil, err
		}
		y, err := w.content(p, path, old)
		if err != nil {
			return nil, nil, err
		}
		if !old.exists || bytes.Equal(old.content, y) {
			continue
		}
		if cur, known := current(path); known && !cur.Deleted && cur.RV != "" && cur.RV == p.rv() {
			continue
		}
		if left := w.cfg.GapGrace - now.Sub(p.published()); w.cfg.GapGrace > 0 && left > 0 {
			if held == nil {
				held = map[string]time.Duration{}
			}
			held[p.ch.ChangeID] = left
			continue
		}
		if !copied {
			out, copied = append([]*pending(nil), batch...), true
		}
		q := *p
		q.ch.Actor = change.Actor{}
		q.markers = append(append([]change.Marker(nil), p.markers...), change.MarkerGap)
		out[i] = &q
	}
	if len(held) > 0 {
		kept := make([]*pending, 0, len(out))
		for _, p := range out {
			if _, h := held[p.ch.ChangeID]; !h {
				kept = append(kept, p)
			}
		}
		out = kept
	}
	return out, held, nil
}

// published is when the change was stored in the stream (zero when unknown: never held).
func (p *pending) published() time.Time {
	if p.msg == nil {
		return time.Time{}
	}
	return p.msg.Time
}

// staleCheck is the age past which an orphan check is skipped.
const staleCheck = 10 * time.Minute

// checkPass gathers the chunks of one orphan check.
type checkPass struct {
	pass       string
	chunks     int
	seen       map[int]bool
	expected   map[string]bool
	excluded   map[string]bool
	resources  map[string]bool
	namespaces map[string]bool
	grace      time.Duration
	actor      change.Actor
}

// orphanCheck adds one chunk of a reconciler's orphan check and, once every chunk of the pass is
// there, compares the files under the destination's prefix with the objects the scope covers.
// The pass is forgotten only after it was handled, so a failed attempt is redone with the batch.
func (w *Writer) orphanCheck(ctx context.Context, ch *change.Change) error {
	oc := ch.OrphanCheck
	if age := time.Since(ch.ChangeTime.Time); age > staleCheck {
		// A backlog (the writer was down): the reconciler publishes a fresh check every pass, so only
		// recent ones are worth a walk of the tree.
		klog.V(2).InfoS("Skipping a stale orphan check", "destination", w.ref(), "pass", oc.Pass, "age", age)
		return nil
	}
	if w.checks == nil || w.checks.pass != oc.Pass {
		if w.checks != nil {
			klog.InfoS("Dropping an incomplete orphan check", "destination", w.ref(), "pass", w.checks.pass,
				"chunks", len(w.checks.seen), "of", w.checks.chunks)
		}
		w.checks = &checkPass{pass: oc.Pass, chunks: oc.Chunks, seen: map[int]bool{}, expected: map[string]bool{},
			excluded: map[string]bool{}, resources: map[string]bool{}, namespaces: map[string]bool{}}
	}
	c := w.checks
	c.seen[oc.Chunk] = true
	for _, p := range oc.Expected {
		c.expected[p] = true
	}
	for _, p := range oc.Excluded {
		c.excluded[p] = true
	}
	if oc.Chunk == 0 {
		for _, r := range oc.Resources {
			c.resources[r] = true
		}
		for _, n := range oc.Namespaces {
			c.namespaces[n] = true
		}
		c.grace = time.Duration(oc.GraceSeconds) * time.Second
		c.actor = ch.Actor
	}
	if len(c.seen) < c.chunks {
		return nil
	}
	if err := w.handleOrphans(ctx, c, time.Now()); err != nil {
		return err
	}
	w.checks = nil
	return nil
}

// orphan is a file of the destination whose object the scope does not cover.
type orphan struct {
	path   string // full path in the repository
	object change.Object
	reason string
}

func (w *Writer) handleOrphans(ctx context.Context, c *checkPass, now time.Time) error {
	files, err := w.files()
	if err != nil {
		return err
	}
	if w.orphanSince == nil {
		w.orphanSince = map[string]time.Time{}
	}
	current := map[string]bool{}
	var due []orphan
	for _, rel := range files {
		if c.expected[rel] {
			continue
		}
		obj, ok := gitrecord.ObjectFromPath(rel)
		if !ok {
			continue // not a file the writer made (a README, say): not ours to judge
		}
		full := gitrecord.ObjectPath(w.cfg.PathPrefix, obj)
		current[full] = true
		since, seen := w.orphanSince[full]
		if !seen {
			since = now
			w.orphanSince[full] = now
		}
		// A file whose object was just deleted stays until the delete's audit event had its chance to
		// arrive and be recorded with its actor: only then is it an orphan.
		if now.Sub(since) < c.grace {
			continue
		}
		ns := obj.Namespace
		if ns == "" {
			ns = gitrecord.ClusterDir
		}
		reason := OrphanReasonOutOfScope
		if c.resources[obj.Group+"/"+obj.Resource] && c.namespaces[ns] && !c.excluded[rel] {
			reason = OrphanReasonObjectGone
		}
		due = append(due, orphan{path: full, object: obj, reason: reason})
	}
	for p := range w.orphanSince {
		if !current[p] {
			delete(w.orphanSince, p)
		}
	}
	if w.cfg.OrphanPolicy == configv1alpha1.OrphanPrune && len(due) > 0 {
		if err := w.publishOrphanDeletes(ctx, c, due, now); err != nil {
			return err
		}
		klog.InfoS("Pruning orphaned files", "destination", w.ref(), "files", len(due), "pass", c.pass)
		w.setOrphans(ctx, nil, 0, metav1.ConditionTrue, ReasonOrphansPruned, fmt.Sprintf("pruned %d files whose objects no longer exist or left the scope", len(due)))
		return nil
	}
	if len(due) > 0 {
		klog.InfoS("Orphaned files found", "destination", w.ref(), "files", len(due), "policy", w.cfg.OrphanPolicy, "pass", c.pass)
		list := orphanList(due)
		listed := "listed in orphans"
		if len(list) < len(due) {
			listed = fmt.Sprintf("the first %d by path listed in orphans", len(list))
		}
		w.setOrphans(ctx, list, len(due), metav1.ConditionFalse, ReasonOrphansFound,
			fmt.Sprintf("%d files in Git whose objects no longer exist or left the scope; orphanPolicy Report keeps them (%s)", len(due), listed))
		return nil
	}
	w.setOrphans(ctx, nil, 0, metav1.ConditionTrue, ReasonInSync, "every file in Git belongs to an object in the tracked scope")
	return nil
}

// orphanList is what RepoStatus lists of the orphans: the first change.MaxOrphans by path, so that a
// status stays small (a rule narrowed by mistake can orphan thousands of files) and stable between
// passes.
func orphanList(due []orphan) []change.RepoOrphan {
	list := make([]change.RepoOrphan, 0, len(due))
	for _, o := range due {
		list = append(list, change.RepoOrphan{Path: o.path, Reason: o.reason})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
	if len(list) > change.MaxOrphans {
		list = list[:change.MaxOrphans]
	}
	return list
}

// publishOrphanDeletes turns orphans into ordinary changes on the destination's own subject, so that
// they take the writer's exactly-once path (journal, trailers, records re-published after a crash).
// Their IDs derive from the pass and the object: an orphan check redelivered after a crash publishes
// the same IDs, which JetStream deduplicates. Each delete carries the file's version from the journal,
// so that an object re-created meanwhile (a newer version in Git) is not deleted.
func (w *Writer) publishOrphanDeletes(ctx context.Context, c *checkPass, due []orphan, now time.Time) error {
	base, err := w.headTree()
	if err != nil {
		return err
	}
	ow := &objectWriter{s: w.storer}
	msgs := make([]queue.Message, 0, len(due))
	for _, o := range due {
		obj := o.object
		if content, ok, err := ow.readFile(base, o.path); err == nil && ok {
			obj.Version, obj.Kind = typeOf(content)
		}
		if ps, ok := w.state.paths[o.path]; ok {
			obj.ResourceVersion = ps.RV
		}
		ch := change.Change{
			Fields: change.Fields{
				Object:     obj,
				Verb:       change.VerbOrphanDelete,
				Actor:      c.actor,
				Source:     change.SourceReconcile,
				ChangeID:   change.ID(w.cfg.Destination, "orphan/"+c.pass, obj),
				ChangeTime: metav1.NewMicroTime(now),
			},
			Destination: w.cfg.Destination,
		}
		m, err := queue.NewMessage(&ch)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	if err := w.q.Publish(ctx, msgs); err != nil {
		return fmt.Errorf("publishing orphan deletes: %w", err)
	}
	return nil
}

// typeOf reads the version and kind of an object's YAML file.
func typeOf(content []byte) (version, kind string) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(content, &head); err != nil {
		return "", ""
	}
	v := head.APIVersion
	if i := strings.LastIndex(v, "/"); i >= 0 {
		v = v[i+1:]
	}
	return v, head.Kind
}

func (w *Writer) headTree() (plumbing.Hash, error) {
	if w.head.IsZero() {
		return plumbing.ZeroHash, nil
	}
	c, err := object.GetCommit(w.storer, w.head)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("reading commit %s: %w", w.head, err)
	}
	return c.TreeHash, nil
}

// files lists the files under the destination's path prefix at the pushed head, relative to it.
func (w *Writer) files() ([]string, error) {
	root, err := w.headTree()
	if err != nil || root.IsZero() {
		return nil, err
	}
	ow := &objectWriter{s: w.storer}
	h := root
	if w.cfg.PathPrefix != "" {
		for _, seg := range strings.Split(w.cfg.PathPrefix, "/") {
			entries, err := ow.tree(h)
			if err != nil {
				return nil, err
			}
			e, ok := entries[seg]
			if !ok || e.Mode != filemode.Dir {
				return nil, nil
			}
			h = e.Hash
		}
	}
	t, err := object.GetTree(w.storer, h)
	if err != nil {
		return nil, err
	}
	var out []string
	it := t.Files()
	defer it.Close()
	for {
		f, err := it.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		out = append(out, f.Name)
	}
	sort.Strings(out)
	return out, nil
}

func (w *Writer) setOrphans(ctx context.Context, list []change.RepoOrphan, count int, status metav1.ConditionStatus, reason, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status.Orphans, w.status.OrphanCount = list, int64(count)
	meta.SetStatusCondition(&w.status.Conditions, metav1.Condition{Type: ConditionSynced, Status: status, Reason: reason, Message: msg})
	w.saveStatus(ctx)
}
