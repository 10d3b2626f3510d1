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
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/queue"
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
	// nextCheck and checkBackoff pace the idle writer's retries of a remote it could not read.
	nextCheck    time.Time
	checkBackoff *wait.Backoff
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
