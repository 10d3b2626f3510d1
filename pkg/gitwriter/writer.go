// Package gitwriter is the Git writer stage of the data path: one Writer per GitDestination pulls the
// destination's accepted changes from JetStream (stream KUBEHISTORY_CHANGES), gathers them for a
// commit window, sanitizes each object, writes blobs and trees straight into a bare clone kept in the
// data directory (no worktree, no status scan: only the changed subtrees are rewritten), makes one
// commit per actor (author = the actor, committer = kubehistory, trailers with the change IDs),
// pushes, publishes the committed records to KUBEHISTORY_HISTORY and only then acks.
//
// Exactly once: a change ID found in Git (the journal in the data directory, rebuilt from commit
// trailers when missing or behind) is never committed again, and its record is re-published with
// Nats-Msg-Id = change ID, so a crash anywhere between push and ack neither loses nor doubles a
// history entry. Per object, states are ordered by resourceVersion and an older state never
// overwrites a newer one (the newest version written per path is kept in the journal and in a
// Kubehistory-Object-Version trailer).
package gitwriter

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/queue"
	"github.com/kubehistory/kubehistory/pkg/sanitize"
	"github.com/kubehistory/kubehistory/pkg/sopsenc"
)

// Writer commits the changes of one GitDestination. Build it with New and call Run once.
type Writer struct {
	cfg     Config
	q       Queue
	fetcher ObjectFetcher

	repo   *git.Repository
	storer storage.Storer
	auth   transport.AuthMethod
	state  *state
	cons   queue.Consumer
	kv     queue.StatusKV

	head   plumbing.Hash // the remote branch head as last seen or pushed
	synced bool

	checks      *checkPass           // the orphan check being gathered, chunk by chunk
	orphanSince map[string]time.Time // when each current orphan was first seen, for the grace period

	mu       sync.Mutex // guards status
	status   change.RepoState
	onStatus func(change.RepoState)
	// nextCheck and checkDelay pace the idle writer's retries of a remote it could not read.
	nextCheck  time.Time
	checkDelay time.Duration
}

// crashError is a failure the writer must not handle as a retryable error (the test hook).
type crashError struct{ err error }

func (e *crashError) Error() string { return "gitwriter: stopped after push: " + e.err.Error() }
func (e *crashError) Unwrap() error { return e.err }

// Queue is what a writer needs of JetStream, in pkg/queue's terms (queue.Conn implements it): a durable
// consumer of its destination's changes, publishing (records, and the orphan deletes it turns into
// changes) and the status bucket.
type Queue interface {
	Consumer(ctx context.Context, cfg queue.ConsumerConfig) (queue.Consumer, error)
	Publish(ctx context.Context, msgs []queue.Message) error
	Status(ctx context.Context) (queue.StatusKV, error)
}

var _ Queue = (*queue.Conn)(nil)

// New validates cfg and prepares a writer; fetcher may be nil (changes without a body then keep their
// NoBody marker and write no file).
func New(cfg Config, q Queue, fetcher ObjectFetcher) (*Writer, error) {
	registerWriterMetrics()
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("gitwriter: destination %s: DataDir is required", cfg.Destination)
	}
	if cfg.Key.IsZero() {
		return nil, fmt.Errorf("gitwriter: destination %s: the installation key is not set", cfg.Destination)
	}
	auth, err := cfg.authMethod()
	if err != nil {
		return nil, err
	}
	w := &Writer{cfg: cfg, q: q, fetcher: fetcher, auth: auth}
	if err := w.openRepo(); err != nil {
		return nil, err
	}
	w.state, err = loadState(cfg.dir(), cfg.IDRetention, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("gitwriter: destination %s: loading state: %w", cfg.Destination, err)
	}
	return w, nil
}

func (w *Writer) ref() string { return w.cfg.Destination.String() }

func (w *Writer) openRepo() error {
	dir := filepath.Join(w.cfg.dir(), "repo.git")
	if err := os.MkdirAll(w.cfg.dir(), 0o700); err != nil {
		return err
	}
	repo, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		repo, err = git.PlainInit(dir, true)
	}
	if err != nil {
		return fmt.Errorf("gitwriter: opening clone cache %s: %w", dir, err)
	}
	cfg, err := repo.Config()
	if err != nil {
		return err
	}
	// The URL may have changed since the cache was made: the remote always follows the destination.
	cfg.Remotes["origin"] = &gitconfig.RemoteConfig{Name: "origin", URLs: []string{w.cfg.URL},
		Fetch: []gitconfig.RefSpec{gitconfig.RefSpec(fmt.Sprintf("+refs/heads/*:refs/remotes/origin/*"))}}
	if err := repo.SetConfig(cfg); err != nil {
		return err
	}
	if err := repo.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.NewBranchReferenceName(w.cfg.Branch))); err != nil {
		return err
	}
	w.repo, w.storer = repo, repo.Storer
	return nil
}

// Run consumes and commits until ctx ends (then it returns nil, handing unfinished changes back to
// JetStream), or until a Hooks.AfterPush error (returned, nothing handed back: a simulated crash).
func (w *Writer) Run(ctx context.Context) error {
	if err := w.open(ctx); err != nil {
		return err
	}
	klog.InfoS("Git writer started", "destination", w.ref(), "repository", gitrecord.RedactedURL(w.cfg.URL), "branch", w.cfg.Branch)
	defer klog.InfoS("Git writer stopped", "destination", w.ref())
	w.check(ctx)
	for {
		batch, err := w.collect(ctx)
		if ctx.Err() != nil {
			nakAll(batch)
			return nil
		}
		if err != nil {
			klog.ErrorS(err, "Fetching changes failed", "destination", w.ref())
			if len(batch) == 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(w.cfg.RetryInitial):
				}
				continue
			}
		}
		if len(batch) == 0 {
			if !w.synced && !time.Now().Before(w.nextCheck) {
				w.check(ctx)
			}
			continue
		}
		if err := w.processWithRetry(ctx, batch); err != nil {
			return err
		}
	}
}

func (w *Writer) open(ctx context.Context) error {
	var err error
	if w.kv, err = w.q.Status(ctx); err != nil {
		return fmt.Errorf("gitwriter: destination %s: %w", w.ref(), err)
	}
	w.loadStatus(ctx)
	w.cons, err = w.q.Consumer(ctx, queue.ConsumerConfig{
		Stream:        change.ChangesStream,
		Durable:       queue.ChangesConsumerName(w.cfg.Destination),
		Description:   "kubehistory Git writer of " + w.ref(),
		FilterSubject: w.cfg.Destination.ChangesSubject(),
		AckWait:       w.cfg.AckWait,
		MaxAckPending: w.cfg.MaxAckPending,
	})
	if err != nil {
		return fmt.Errorf("gitwriter: destination %s: creating consumer: %w", w.ref(), err)
	}
	return nil
}

// pending is one change being committed.
type pending struct {
	msg  *queue.Msg
	dups []*queue.Msg // redeliveries of the same change ID in the same batch
	ch   change.Change
	seq  uint64

	resolved bool
	yaml     []byte // sanitized state to write; nil when there is none
	gone     bool
	markers  []change.Marker // added by the writer
	// outOfScope: matched by ingest without the object's labels, and no rule selects the object.
	outOfScope bool
	// plain is the cleaned object of a Secret that an encrypting destination stores SOPS-encrypted; its
	// file content depends on the file's previous content (see content).
	plain map[string]interface{}
}

// control is true for a reconciler's orphan check: it changes no object and makes no record itself.
func (p *pending) control() bool { return p.ch.OrphanCheck != nil }

func isDelete(v change.Verb) bool {
	return v == change.VerbDelete || v == change.VerbOrphanDelete
}

// collect waits for a first change, then gathers more for the commit window.
func (w *Writer) collect(ctx context.Context) ([]*pending, error) {
	var out []*pending
	byID := map[string]*pending{}
	var deadline time.Time
	for len(out) < w.cfg.MaxBatch {
		var wait time.Duration // idle: the queue's poll, which bounds how long a stop takes
		if !deadline.IsZero() {
			if wait = time.Until(deadline); wait <= 0 {
				break
			}
		}
		msgs, err := w.cons.Fetch(ctx, w.cfg.MaxBatch-len(out), wait)
		for _, msg := range msgs {
			var ch change.Change
			err := change.DecodeChange(msg.Data, &ch)
			if errors.Is(err, change.ErrUnknownVersion) {
				// Written by a newer build (an upgrade under way): a writer of that build reads it.
				klog.ErrorS(err, "Leaving a change of a newer storage version", "destination", w.ref(), "subject", msg.Subject)
				_ = msg.NakWithDelay(time.Minute)
				continue
			}
			if err != nil || ch.ChangeID == "" {
				// A message no writer can ever read: terminate it rather than block the destination.
				klog.ErrorS(err, "Dropping an undecodable change", "destination", w.ref(), "subject", msg.Subject)
				_ = msg.Term()
				continue
			}
			if ch.Sweep {
				// A deletecollection without the list of objects: the reconciler's next pass finds the
				// files of the deleted objects as orphans (pruned or reported per the destination).
				klog.InfoS("Leaving a collection sweep to the reconciler", "destination", w.ref(), "changeID", ch.ChangeID,
					"group", ch.Object.Group, "resource", ch.Object.Resource, "namespace", ch.Object.Namespace)
				_ = msg.Ack()
				continue
			}
			if p, ok := byID[ch.ChangeID]; ok {
				p.dups = append(p.dups, msg)
				continue
			}
			if faultAckOnFetch {
				// Deliberately broken build (tag kubehistory_fault_ack_on_fetch): acks before the push,
				// to show that the reliability suite catches it. Never in a release.
				_ = msg.Ack()
			}
			p := &pending{msg: msg, ch: ch, seq: msg.Seq}
			byID[ch.ChangeID] = p
			out = append(out, p)
			if deadline.IsZero() {
				deadline = time.Now().Add(w.cfg.CommitWindow)
			}
		}
		if err != nil {
			return out, err
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		if len(out) == 0 && !w.synced && !time.Now().Before(w.nextCheck) {
			return nil, nil // idle with a remote not read yet: Run checks it again
		}
	}
	return out, nil
}

func nakAll(batch []*pending) {
	for _, p := range batch {
		if p.msg != nil {
			_ = p.msg.Nak()
		}
		for _, d := range p.dups {
			_ = d.Nak()
		}
	}
}

func (w *Writer) processWithRetry(ctx context.Context, batch []*pending) error {
	// Keep the messages ours while we work on them, however long a push or an outage takes: AckWait is
	// short so that after a crash the batch comes back quickly, before later changes overtake it.
	msgs := make([]*queue.Msg, len(batch))
	for i, p := range batch {
		msgs[i] = p.msg
	}
	defer queue.KeepInProgress(msgs, w.cfg.AckWait)()
	delay := w.cfg.RetryInitial
	for {
		err := w.process(ctx, batch)
		if err == nil {
			return nil
		}
		var crash *crashError
		if errors.As(err, &crash) {
			return err
		}
		if ctx.Err() != nil {
			nakAll(batch)
			return nil
		}
		klog.ErrorS(err, "Committing changes failed; will retry", "destination", w.ref(), "changes", len(batch), "retryIn", delay)
		w.failed(ctx, err, len(batch))
		select {
		case <-ctx.Done():
			nakAll(batch)
			return nil
		case <-time.After(delay):
		}
		if delay *= 2; delay > w.cfg.RetryMax {
			delay = w.cfg.RetryMax
		}
	}
}

// process commits, pushes, publishes and acks one batch. Any error leaves the batch unacked and the
// remote as it was or with our commits pushed (then the retry finds their IDs in Git).
func (w *Writer) process(ctx context.Context, batch []*pending) error {
	if !w.synced {
		if err := w.sync(ctx); err != nil {
			return err
		}
	}
	if err := w.resolve(ctx, batch); err != nil {
		return err
	}
	var res *buildResult
	for attempt := 0; ; attempt++ {
		fresh := w.uncommitted(batch)
		var err error
		res, err = w.build(w.head, fresh, time.Now())
		if err != nil {
			return err
		}
		if res.head == w.head {
			break
		}
		err = w.push(ctx, w.head, res.head, res.objects)
		if errors.Is(err, errStale) && attempt < 5 {
			klog.InfoS("Remote branch moved; rebuilding our commits on top", "destination", w.ref(), "reason", err.Error())
			if err := w.sync(ctx); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			w.synced = false // look at the remote again before the next attempt
			return err
		}
		break
	}
	if w.cfg.Hooks.AfterPush != nil {
		if err := w.cfg.Hooks.AfterPush(); err != nil {
			return &crashError{err}
		}
	}
	pushed := res.head != w.head
	w.head = res.head
	if err := w.state.record(res.head, res.ids, res.paths); err != nil {
		// Git has the commits: the next start rebuilds the journal from the trailers.
		klog.ErrorS(err, "Writing the writer journal failed", "destination", w.ref())
	}
	records := res.records
	for _, p := range batch {
		if _, held := res.held[p.ch.ChangeID]; held {
			continue
		}
		if _, fresh := res.ids[p.ch.ChangeID]; fresh || p.control() || res.skipped[p.ch.ChangeID] {
			continue
		}
		rec, err := w.committedRecord(p)
		if err != nil {
			return err
		}
		records = append(records, rec)
	}
	if err := w.publish(ctx, records); err != nil {
		return err
	}
	// Orphan checks come after the changes published before them (the reconciler's seeds) are in Git.
	for _, p := range batch {
		if p.control() {
			if err := w.orphanCheck(ctx, &p.ch); err != nil {
				return err
			}
		}
	}
	for _, p := range batch {
		if left, held := res.held[p.ch.ChangeID]; held {
			klog.V(2).InfoS("Holding a seed that finds Git behind the cluster: its audit change may still come", "destination", w.ref(),
				"changeID", p.ch.ChangeID, "for", left)
			_ = p.msg.NakWithDelay(left)
			for _, d := range p.dups {
				_ = d.Ack()
			}
			continue
		}
		_ = p.msg.Ack()
		for _, d := range p.dups {
			_ = d.Ack()
		}
	}
	w.succeeded(ctx, records, len(res.ids), pushed)
	klog.V(2).InfoS("Committed changes", "destination", w.ref(), "changes", len(batch), "new", len(res.ids),
		"unchanged", len(res.skipped), "head", w.head.String())
	return nil
}

// uncommitted drops the changes whose ID Git already has.
func (w *Writer) uncommitted(batch []*pending) []*pending {
	out := make([]*pending, 0, len(batch))
	for _, p := range batch {
		if _, done := w.state.ids[p.ch.ChangeID]; !done && !p.control() {
			out = append(out, p)
		}
	}
	return out
}

// resolve sanitizes every body once, fetching the object when the change has none (or an unusable
// one); the result is kept across retries so that a record's markers do not change between attempts.
func (w *Writer) resolve(ctx context.Context, batch []*pending) error {
	for _, p := range batch {
		if p.resolved || p.control() {
			p.resolved = true
			continue
		}
		if isDelete(p.ch.Verb) {
			w.inScope(p, nil)
			p.resolved = true
			continue
		}
		if _, done := w.state.ids[p.ch.ChangeID]; done {
			continue
		}
		opts := w.sanitizeOptions(p.ch)
		encrypt := w.encrypts(p.ch.Object)
		if len(p.ch.Body) > 0 && !encrypt {
			y, err := sanitize.Sanitize([]byte(p.ch.Body), opts)
			if err == nil {
				p.yaml, p.resolved = y, true
				continue
			}
			klog.ErrorS(err, "Unusable object body; fetching the object instead", "destination", w.ref(), "changeID", p.ch.ChangeID)
		}
		if w.fetcher == nil {
			p.resolved = true
			continue
		}
		o := p.ch.Object
		body, found, err := w.fetcher.Get(ctx, o.Group, o.Version, o.Resource, o.Namespace, o.Name)
		if err != nil {
			return fmt.Errorf("fetching %s %s/%s: %w", o.Resource, o.Namespace, o.Name, err)
		}
		if !found {
			p.gone, p.resolved = true, true
			p.markers = append(p.markers, change.MarkerObjectGone)
			w.inScope(p, nil)
			continue
		}
		if !w.inScope(p, body) {
			p.resolved = true
			continue
		}
		// The fetched object is sanitized here, in memory; only its sanitized YAML goes on.
		opts.Redacted = false
		if encrypt {
			if p.plain, err = sanitize.CleanForEncryption(body, opts); err != nil {
				return fmt.Errorf("sanitizing fetched %s %s/%s: %w", o.Resource, o.Namespace, o.Name, err)
			}
		}
		y, err := sanitize.Sanitize(body, opts)
		if err != nil {
			return fmt.Errorf("sanitizing fetched %s %s/%s: %w", o.Resource, o.Namespace, o.Name, err)
		}
		p.yaml, p.resolved = y, true
		p.markers = append(p.markers, change.MarkerFetchedAtWriteTime)
		if p.ch.Object.ResourceVersion == "" {
			p.ch.Object.ResourceVersion = bodyRV(body)
		}
	}
	return nil
}

// encrypts says whether the object is a Secret this destination stores SOPS-encrypted. Such a Secret is
// always read from the API server at write time: the body in the stream holds fingerprints, not values.
func (w *Writer) encrypts(o change.Object) bool {
	return len(w.cfg.SOPSRecipients) > 0 && o.Group == "" && o.Resource == "secrets"
}

// content is what the change writes to its file, whose current content is old: the sanitized YAML, or
// for an encrypted Secret its SOPS file, which keeps old's lastmodified and age stanzas when no value
// changed (so an unchanged Secret is an unchanged file).
func (w *Writer) content(p *pending, path string, old fileState) ([]byte, error) {
	if p.plain == nil {
		return p.yaml, nil
	}
	var prev []byte
	if old.exists {
		prev = old.content
	}
	return sopsenc.Encrypt(p.plain, sopsenc.Options{Recipients: w.cfg.SOPSRecipients, DataKey: w.sopsDataKey(path),
		Now: p.ch.ChangeTime.Time, Previous: prev})
}

// sopsDataKey is the data key of one encrypted file: derived from the installation key, the destination
// and the path, so that it is stable (unchanged values keep their ciphertext) and differs per file.
func (w *Writer) sopsDataKey(path string) []byte {
	m := hmac.New(sha256.New, w.cfg.Key.Derive("sops-data-key"))
	m.Write([]byte(w.cfg.Destination.String() + "\x00" + path))
	return m.Sum(nil)
}

func (w *Writer) sanitizeOptions(c change.Change) sanitize.Options {
	return sanitize.Options{
		Group: c.Object.Group, Resource: c.Object.Resource, Key: w.cfg.Key, Redacted: c.Redacted,
		SensitiveResources: w.cfg.SensitiveResources, SensitivePaths: w.cfg.SensitivePaths, StripAnnotations: w.cfg.StripAnnotations,
	}
}

// rv is the resourceVersion the change left the object at.
func (p *pending) rv() string {
	if p.ch.Object.ResourceVersion != "" {
		return p.ch.Object.ResourceVersion
	}
	return bodyRV(p.ch.Body)
}

func bodyRV(body []byte) string {
	var o struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if len(body) == 0 || json.Unmarshal(body, &o) != nil {
		return ""
	}
	return o.Metadata.ResourceVersion
}

// applies says whether a change may replace the newest state written for its path.
func applies(cur gitrecord.ObjectVersion, known bool, rv string, del bool) bool {
	if !known || rv == "" || cur.RV == "" {
		return true
	}
	if del {
		// A delete carries the version the object had when deleted: equal to the last state written.
		return !olderThan(rv, cur.RV)
	}
	if cur.Deleted {
		// The same version as the delete is the state before it: only a newer object revives the file.
		return !olderThan(rv, cur.RV) && rv != cur.RV
	}
	return !olderThan(rv, cur.RV)
}

type buildResult struct {
	head    plumbing.Hash
	objects []plumbing.Hash
	records []change.Record
	ids     map[string]idState
	paths   map[string]gitrecord.ObjectVersion
	// skipped are reconcile changes that found Git already equal to the cluster (or newer): they make
	// neither a commit nor a record.
	skipped map[string]bool
	// held are seeds that would be Gaps, held for the time left of GapGrace: neither committed nor
	// acked, they are redelivered after that time.
	held map[string]time.Duration
}

type actorGroup struct {
	actor   change.Actor
	changes []*pending
}

// groupByActor orders the batch by change time and splits it into runs of consecutive changes by the
// same actor (one commit each); inside a group the changes of one object are ordered by
// resourceVersion (batches arrive out of order).
func groupByActor(batch []*pending) []*actorGroup {
	sorted := append([]*pending(nil), batch...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].ch.ChangeTime.Time, sorted[j].ch.ChangeTime.Time
		if !a.Equal(b) {
			return a.Before(b)
		}
		return sorted[i].seq < sorted[j].seq
	})
	// A new commit starts whenever the actor changes in time order: "one commit per actor in the
	// window" must not reorder history, or alice's delete could land before bob's earlier update of
	// the same object and Git would end with a state the cluster never had last.
	var groups []*actorGroup
	for _, p := range sorted {
		if n := len(groups); n == 0 || groups[n-1].actor.Username != p.ch.Actor.Username {
			groups = append(groups, &actorGroup{actor: p.ch.Actor})
		}
		g := groups[len(groups)-1]
		g.changes = append(g.changes, p)
	}
	for _, g := range groups {
		var order []string
		byObj := map[string][]*pending{}
		for _, p := range g.changes {
			k := gitrecord.ObjectPath("", p.ch.Object)
			if _, ok := byObj[k]; !ok {
				order = append(order, k)
			}
			byObj[k] = append(byObj[k], p)
		}
		g.changes = g.changes[:0]
		for _, k := range order {
			l := byObj[k]
			sort.SliceStable(l, func(i, j int) bool { return olderThan(l[i].rv(), l[j].rv()) })
			g.changes = append(g.changes, l...)
		}
	}
	return groups
}

type fileState struct {
	content []byte
	exists  bool
}

// build writes the commits of a batch on top of base without touching any ref. It is pure with
// respect to the writer's state, so a rejected push simply builds again on the new remote head.
func (w *Writer) build(base plumbing.Hash, batch []*pending, now time.Time) (*buildResult, error) {
	res := &buildResult{head: base, ids: map[string]idState{}, paths: map[string]gitrecord.ObjectVersion{}, skipped: map[string]bool{}}
	if len(batch) == 0 {
		return res, nil
	}
	ow := &objectWriter{s: w.storer}
	tree := plumbing.ZeroHash
	if !base.IsZero() {
		c, err := object.GetCommit(w.storer, base)
		if err != nil {
			return nil, fmt.Errorf("reading commit %s: %w", base, err)
		}
		tree = c.TreeHash
	}
	baseTree := tree
	files := map[string]fileState{}
	read := func(p string) (fileState, error) {
		if f, ok := files[p]; ok {
			return f, nil
		}
		b, ok, err := ow.readFile(baseTree, p)
		if err != nil {
			return fileState{}, err
		}
		f := fileState{content: b, exists: ok}
		files[p] = f
		return f, nil
	}
	current := func(p string) (gitrecord.ObjectVersion, bool) {
		if v, ok := res.paths[p]; ok {
			return v, true
		}
		v, ok := w.state.paths[p]
		return v, ok
	}
	batch, held, err := w.classifySeeds(batch, read, current, now)
	res.held = held
	if err != nil {
		return nil, err
	}
	committedAt := metav1.NewTime(now.Truncate(time.Second))
	parent := base
	for _, g := range groupByActor(batch) {
		edits := map[string]treeEdit{}
		versions := map[string]gitrecord.ObjectVersion{}
		first := len(res.records)
		var latest time.Time
		for _, p := range g.changes {
			if p.outOfScope {
				res.skipped[p.ch.ChangeID] = true
				continue
			}
			o := p.ch.Object
			path := gitrecord.ObjectPath(w.cfg.PathPrefix, o)
			old, err := read(path)
			if err != nil {
				return nil, err
			}
			del := isDelete(p.ch.Verb)
			next := old
			y, err := w.content(p, path, old)
			if err != nil {
				return nil, err
			}
			cur, known := current(path)
			apply := (del || y != nil) && applies(cur, known, p.rv(), del)
			if !apply && p.ch.Verb == change.VerbSeed && y != nil && impossiblyNewer(cur.RV, p.rv()) {
				// A seed is the cluster's observed state: a recorded version far beyond it cannot be real
				// (forged, or resourceVersions went back after an etcd restore) and must not freeze the
				// file. A slightly newer one is an audit change that raced the List, and wins.
				apply = true
			}
			if p.ch.Source == change.SourceReconcile && !reconcileChanges(apply, del, old, y) {
				res.skipped[p.ch.ChangeID] = true
				continue
			}
			if apply {
				if del {
					next = fileState{}
					if old.exists {
						edits[path] = treeEdit{remove: true}
					}
				} else {
					next = fileState{content: y, exists: true}
					if !old.exists || string(old.content) != string(y) {
						blob, err := ow.put(plumbing.BlobObject, y)
						if err != nil {
							return nil, err
						}
						edits[path] = treeEdit{blob: blob}
					}
				}
				files[path] = next
				ps := gitrecord.ObjectVersion{RV: p.rv(), Deleted: del}
				res.paths[path], versions[path] = ps, ps
			}
			rec := change.Record{Fields: p.ch.Fields, Cluster: o.Namespace == ""}
			rec.Markers = append(append([]change.Marker(nil), p.ch.Markers...), p.markers...)
			rec.Git = w.gitLink(path, "", committedAt)
			rec.Diff, rec.DiffTruncated = gitrecord.TruncateDiff(gitrecord.UnifiedDiff(path, old.content, next.content, old.exists, next.exists), w.cfg.MaxDiffBytes)
			res.records = append(res.records, rec)
			if t := p.ch.ChangeTime.Time; t.After(latest) {
				latest = t
			}
		}
		if len(res.records) == first {
			continue // only reconcile changes that found Git equal to the cluster: no (empty) commit
		}
		newTree := tree
		if len(edits) > 0 || tree.IsZero() {
			var err error
			if newTree, err = ow.updateTree(tree, edits); err != nil {
				return nil, err
			}
			if newTree.IsZero() {
				// Every file is gone: a commit still needs a (the empty) tree.
				if newTree, err = ow.putObject(&object.Tree{}); err != nil {
					return nil, err
				}
			}
		}
		if latest.IsZero() {
			latest = now
		}
		commit := &object.Commit{
			Author:    object.Signature{Name: gitrecord.AuthorName(g.actor.Username), Email: w.authorEmail(g.actor.Username), When: latest},
			Committer: object.Signature{Name: w.cfg.CommitterName, Email: w.cfg.CommitterEmail, When: now},
			Message:   commitMessage(recorded(g, res.skipped), versions),
			TreeHash:  newTree,
		}
		if !parent.IsZero() {
			commit.ParentHashes = []plumbing.Hash{parent}
		}
		// The seal is what makes the trailers count: commits without it are foreign (issue 14).
		gitrecord.Seal(w.cfg.Key, commit)
		h, err := ow.putObject(commit)
		if err != nil {
			return nil, err
		}
		for i := first; i < len(res.records); i++ {
			res.records[i].Git.Commit = h.String()
			res.ids[res.records[i].ChangeID] = idState{Commit: h.String(), Time: now.Unix()}
		}
		parent, tree = h, newTree
	}
	res.head, res.objects = parent, ow.written
	return res, nil
}

// recorded is the group without the reconcile changes that found nothing to change: their IDs must not
// reach the trailers, which say what Git holds.
func recorded(g *actorGroup, skipped map[string]bool) *actorGroup {
	out := &actorGroup{actor: g.actor, changes: make([]*pending, 0, len(g.changes))}
	for _, p := range g.changes {
		if !skipped[p.ch.ChangeID] {
			out.changes = append(out.changes, p)
		}
	}
	return out
}

func (w *Writer) gitLink(path, commit string, at metav1.Time) change.GitLink {
	return change.GitLink{
		Destination: w.cfg.Destination.Name, DestinationNamespace: w.cfg.Destination.Namespace,
		Repository: gitrecord.RedactedURL(w.cfg.URL), Branch: w.cfg.Branch, Commit: commit, Path: path, CommittedAt: &at,
	}
}

func (w *Writer) authorEmail(username string) string {
	if username == "" {
		username = gitrecord.UnknownAuthor
	}
	local := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune(".!#$%&'*+/=?^_`{|}~-", r):
			return r
		}
		return '-'
	}, username)
	return strings.ReplaceAll(w.cfg.AuthorEmailPattern, "{username}", local)
}

// commitMessage is the message of a group's commit, in the grammar of gitrecord.Message.
func commitMessage(g *actorGroup, versions map[string]gitrecord.ObjectVersion) string {
	m := gitrecord.Message{Author: gitrecord.AuthorName(g.actor.Username), Trailers: gitrecord.Trailers{
		ActorGroups: g.actor.Groups, Versions: versions, Markers: map[string][]string{},
	}}
	for _, p := range g.changes {
		m.Items = append(m.Items, gitrecord.Item{Verb: p.ch.Verb, Object: p.ch.Object})
		m.IDs = append(m.IDs, p.ch.ChangeID)
		m.AuditIDs = append(m.AuditIDs, p.ch.AuditID)
		for _, mk := range p.markers {
			m.Markers[p.ch.ChangeID] = append(m.Markers[p.ch.ChangeID], string(mk))
		}
	}
	return m.Format()
}

// committedRecord rebuilds the record of a change that Git already holds (a redelivery, or a crash
// between push and ack) from its commit: link, markers the writer added and the diff of the object's
// file in that commit. When one commit changed the same file twice the diff spans both changes.
func (w *Writer) committedRecord(p *pending) (change.Record, error) {
	id := w.state.ids[p.ch.ChangeID]
	h := plumbing.NewHash(id.Commit)
	path := gitrecord.ObjectPath(w.cfg.PathPrefix, p.ch.Object)
	rec := change.Record{Fields: p.ch.Fields, Cluster: p.ch.Object.Namespace == ""}
	c, err := object.GetCommit(w.storer, h)
	if err != nil {
		return rec, fmt.Errorf("reading commit %s of change %s: %w", h, p.ch.ChangeID, err)
	}
	rec.Git = w.gitLink(path, h.String(), metav1.NewTime(c.Committer.When))
	if !gitrecord.Verify(w.cfg.Key, c) {
		return rec, fmt.Errorf("commit %s of change %s is not sealed by this installation", h, p.ch.ChangeID)
	}
	for _, m := range gitrecord.ParseTrailers(c.Message).Markers[p.ch.ChangeID] {
		rec.Markers = append(rec.Markers, change.Marker(m))
		if change.Marker(m) == change.MarkerGap {
			rec.Actor = change.Actor{} // as when first committed: who made the missed changes is unknown
		}
	}
	parentTree := plumbing.ZeroHash
	if c.NumParents() > 0 {
		pc, err := object.GetCommit(w.storer, c.ParentHashes[0])
		if err != nil {
			return rec, err
		}
		parentTree = pc.TreeHash
	}
	old, oe, err := readFile(w.storer, parentTree, path)
	if err != nil {
		return rec, err
	}
	cur, ce, err := readFile(w.storer, c.TreeHash, path)
	if err != nil {
		return rec, err
	}
	rec.Diff, rec.DiffTruncated = gitrecord.TruncateDiff(gitrecord.UnifiedDiff(path, old, cur, oe, ce), w.cfg.MaxDiffBytes)
	return rec, nil
}

// publish sends the records to KUBEHISTORY_HISTORY and waits for every ack; Nats-Msg-Id is the change
// ID, so a record re-published after a crash reaches the index once.
func (w *Writer) publish(ctx context.Context, records []change.Record) error {
	subject := w.cfg.Destination.HistorySubject()
	msgs := make([]queue.Message, 0, len(records))
	for i := range records {
		data, err := change.EncodeRecord(&records[i])
		if err != nil {
			return err
		}
		msgs = append(msgs, queue.Message{Subject: subject, ID: records[i].ChangeID, Data: data})
	}
	if err := w.q.Publish(ctx, msgs); err != nil {
		return fmt.Errorf("publishing records: %w", err)
	}
	return nil
}
