// Package gitlog rebuilds a replica's index from a destination's Git history when the stream no longer
// holds it: every commit the Git writer made carries its change IDs, audit IDs, the actor's groups, the
// per-file resourceVersions and the writer's markers in trailers, the author is the actor, and the
// commit's tree diff is the record's diff. It is the only place where the index meets Git.
package gitlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/index"
	"github.com/kubehistory/kubehistory/pkg/installkey"
)

// Options choose the history to read.
type Options struct {
	// Repository is a local repository (bare, a checkout, or the writer's cache) or a URL to clone.
	Repository string
	// Branch is the destination's branch.
	Branch string
	// Destination is the GitDestination the repository belongs to: it is part of every change ID, and
	// the records link to it.
	Destination change.DestinationRef
	// RepositoryURL is what the records show as the repository; default Repository without credentials.
	RepositoryURL string
	// MaxDiffBytes bounds each diff as the writer does; default gitrecord.DefaultMaxDiffBytes.
	MaxDiffBytes int
	// FirstSeq is the sequence of the first record; default 1.
	FirstSeq uint64
	// Key is the installation key: only commits sealed under it are kubehistory's; the others (anyone
	// who may push to the repository can make them) are skipped and counted. Required.
	Key installkey.Key
}

// Stats says what a rebuild read.
type Stats struct {
	Commits, Records int
	// Foreign counts the commits skipped because they are not sealed under the installation key.
	Foreign int
	// LastSeq is the sequence of the last record.
	LastSeq uint64
}

const batchSize = 1000

// Rebuild walks the branch's first-parent history oldest first and indexes one record per change ID
// trailer under synthetic, increasing sequences from FirstSeq. What Git does not keep is missing from
// the records: the actor's uid and impersonator, the object's uid, the request URI, markers the writer
// did not add itself (NoBody, TruncatedEvent, CollectionSweep), and the exact time of each change (the
// commit's author time is the newest change time of its changes).
func Rebuild(ctx context.Context, idx *index.Index, o Options) (Stats, error) {
	var st Stats
	if o.Key.IsZero() {
		return st, errors.New("gitlog: the installation key is required to tell kubehistory's commits from foreign ones")
	}
	if o.FirstSeq == 0 {
		o.FirstSeq = 1
	}
	if o.MaxDiffBytes <= 0 {
		o.MaxDiffBytes = gitrecord.DefaultMaxDiffBytes
	}
	if o.RepositoryURL == "" {
		o.RepositoryURL = gitrecord.RedactedURL(o.Repository)
	}
	repo, cleanup, err := open(ctx, o)
	if err != nil {
		return st, err
	}
	defer cleanup()
	head, err := branchHead(repo, o.Branch)
	if err != nil {
		return st, err
	}
	var chain []plumbing.Hash
	for h := head; !h.IsZero(); {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		c, err := repo.CommitObject(h)
		if err != nil {
			return st, fmt.Errorf("reading commit %s: %w", h, err)
		}
		chain = append(chain, h)
		h = plumbing.ZeroHash
		if len(c.ParentHashes) > 0 {
			// The writer's history is linear; a merge made by someone else contributes its first parent,
			// the branch the writer pushed to.
			h = c.ParentHashes[0]
		}
	}
	seq := o.FirstSeq
	batch := make([]index.SeqRecord, 0, batchSize)
	for i := len(chain) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		c, err := repo.CommitObject(chain[i])
		if err != nil {
			return st, fmt.Errorf("reading commit %s: %w", chain[i], err)
		}
		var recs []change.Record
		if gitrecord.Verify(o.Key, c) {
			if recs, err = records(repo, c, o); err != nil {
				return st, fmt.Errorf("commit %s: %w", c.Hash, err)
			}
		} else {
			// A foreign commit's trailers could forge history in any namespace: it is no record. Its
			// files stay in the trees, so the next sealed commit diffs against them.
			st.Foreign++
			klog.InfoS("Skipping a commit not sealed by this installation", "destination", o.Destination.String(), "commit", c.Hash.String(), "author", c.Author.Email)
		}
		if len(recs) > 0 {
			st.Commits++
		}
		for _, r := range recs {
			batch = append(batch, index.SeqRecord{Seq: seq, Record: r})
			st.LastSeq = seq
			seq++
		}
		if len(batch) >= batchSize || i == 0 {
			n, err := idx.AddBatch(batch)
			st.Records += n
			if err != nil {
				return st, err
			}
			batch = batch[:0]
		}
	}
	return st, nil
}

// open opens a local repository in place, or clones a URL (bare, one branch) into a temporary folder.
func open(ctx context.Context, o Options) (*git.Repository, func(), error) {
	if _, err := os.Stat(o.Repository); err == nil {
		repo, err := git.PlainOpen(o.Repository)
		if err != nil {
			return nil, nil, fmt.Errorf("opening repository %s: %w", o.Repository, err)
		}
		return repo, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "kubehistory-rebuild-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	repo, err := git.PlainCloneContext(ctx, dir, true, &git.CloneOptions{
		URL: o.Repository, ReferenceName: plumbing.NewBranchReferenceName(o.Branch), SingleBranch: true,
	})
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("cloning %s: %w", gitrecord.RedactedURL(o.Repository), err)
	}
	return repo, cleanup, nil
}

// branchHead finds the branch locally, or as the remote-tracking branch of the writer's cache.
func branchHead(repo *git.Repository, branch string) (plumbing.Hash, error) {
	for _, name := range []plumbing.ReferenceName{plumbing.NewBranchReferenceName(branch), plumbing.NewRemoteReferenceName("origin", branch)} {
		ref, err := repo.Reference(name, true)
		if err == nil {
			return ref.Hash(), nil
		}
		if !errors.Is(err, plumbing.ErrReferenceNotFound) {
			return plumbing.ZeroHash, err
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("branch %q not found in the repository", branch)
}

// assign finds each change ID's item. An audit change's ID is derived from the destination, its audit
// ID and its object, so trying the commit's audit IDs against its objects finds it exactly. Reconcile
// changes derive theirs from what Git does not keep (the object's uid); they take the items in order,
// which is how the writer lists them (one item per distinct verb and object).
func assign(m gitrecord.Message, dest change.DestinationRef) ([]gitrecord.Item, []string) {
	items := make([]gitrecord.Item, len(m.IDs))
	audit := make([]string, len(m.IDs))
	found := make([]bool, len(m.IDs))
	used := make([]bool, len(m.Items))
	for i, id := range m.IDs {
		obj, a, ok := auditMatch(m, dest, id)
		if !ok {
			continue
		}
		// The audit ID names the object, not the verb: one object changed twice with different verbs is
		// two items, listed in the order of the changes.
		pick := -1
		for j, it := range m.Items {
			if it.Object == obj {
				pick = j
				if !used[j] {
					break
				}
			}
		}
		items[i], audit[i], found[i], used[pick] = m.Items[pick], a, true, true
	}
	next, prev := 0, -1
	for i := range m.IDs {
		if found[i] {
			continue
		}
		for next < len(m.Items) && used[next] {
			next++
		}
		switch {
		case next < len(m.Items):
			items[i], used[next], prev = m.Items[next], true, next
		case prev >= 0:
			items[i] = m.Items[prev] // a second change of an object already listed
		case len(m.Items) > 0:
			items[i] = m.Items[len(m.Items)-1]
		}
	}
	return items, audit
}

// auditMatch finds the object and audit ID an audit change's ID was derived from.
func auditMatch(m gitrecord.Message, dest change.DestinationRef, id string) (change.Object, string, bool) {
	for _, it := range m.Items {
		for _, a := range m.AuditIDs {
			if change.ID(dest, a, it.Object) == id {
				return it.Object, a, true
			}
		}
	}
	return change.Object{}, "", false
}

// records are the records of one commit, in trailer order.
func records(repo *git.Repository, c *object.Commit, o Options) ([]change.Record, error) {
	author := c.Author.Name
	m := gitrecord.ParseMessage(c.Message, author)
	if len(m.IDs) == 0 {
		return nil, nil // not the writer's commit
	}
	if author == gitrecord.UnknownAuthor {
		author = ""
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	var parent *object.Tree
	if len(c.ParentHashes) > 0 {
		pc, err := repo.CommitObject(c.ParentHashes[0])
		if err != nil {
			return nil, err
		}
		if parent, err = pc.Tree(); err != nil {
			return nil, err
		}
	}
	items, auditIDs := assign(m, o.Destination)
	committed := metav1.NewTime(c.Committer.When)
	out := make([]change.Record, 0, len(m.IDs))
	for i, id := range m.IDs {
		it := items[i]
		if it.Object.Name == "" {
			klog.InfoS("Skipping a change ID whose object the commit message does not name", "commit", c.Hash.String(), "changeID", id)
			continue
		}
		path := objectPath(m.Versions, it.Object)
		_, wrote := m.Versions[path]
		old, oldOK, err := read(parent, path)
		if err != nil {
			return nil, err
		}
		cur, curOK, err := read(tree, path)
		if err != nil {
			return nil, err
		}
		obj := it.Object
		if v, ok := m.Versions[path]; ok {
			obj.ResourceVersion = v.RV
		}
		content := cur
		if !curOK {
			content = old
		}
		obj.Version, obj.Kind = typeOf(content)
		rec := change.Record{Cluster: obj.Namespace == "", Fields: change.Fields{
			Object:     obj,
			Verb:       it.Verb,
			Actor:      change.Actor{Username: author, Groups: m.ActorGroups},
			Source:     change.SourceAudit,
			AuditID:    auditIDs[i],
			ChangeID:   id,
			ChangeTime: metav1.NewMicroTime(c.Author.When),
			Git: change.GitLink{Destination: o.Destination.Name, DestinationNamespace: o.Destination.Namespace,
				Repository: o.RepositoryURL, Branch: o.Branch, Commit: c.Hash.String(), Path: path, CommittedAt: &committed},
			Markers: markers(m.Markers[id]),
		}}
		if it.Verb == change.VerbSeed || it.Verb == change.VerbOrphanDelete {
			rec.Source = change.SourceReconcile
		} else if rec.AuditID == "" && len(m.AuditIDs) == 1 {
			rec.AuditID = m.AuditIDs[0]
		}
		for _, mk := range rec.Markers {
			if mk == change.MarkerGap {
				rec.Actor = change.Actor{} // who made the missed changes is unknown
			}
		}
		if wrote {
			// A change that lost to a newer state of its object wrote nothing: no diff, as the writer records it.
			rec.Diff, rec.DiffTruncated = gitrecord.TruncateDiff(gitrecord.UnifiedDiff(path, old, cur, oldOK, curOK), o.MaxDiffBytes)
		}
		out = append(out, rec)
	}
	return out, nil
}

// objectPath is the object's file: the Object-Version trailer's path that ends in the object's own
// path (the destination's path prefix comes before it), or the unprefixed path when the change wrote
// nothing (an older state that lost to a newer one).
func objectPath(versions map[string]gitrecord.ObjectVersion, obj change.Object) string {
	rel := gitrecord.ObjectPath("", obj)
	for p := range versions {
		if p == rel || strings.HasSuffix(p, "/"+rel) {
			return p
		}
	}
	return rel
}

func read(tree *object.Tree, path string) ([]byte, bool, error) {
	if tree == nil {
		return nil, false, nil
	}
	f, err := tree.File(path)
	if errors.Is(err, object.ErrFileNotFound) || errors.Is(err, object.ErrDirectoryNotFound) || errors.Is(err, object.ErrEntryNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	s, err := f.Contents()
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	return []byte(s), true, nil
}

// typeOf reads the version and kind of a sanitized object file.
func typeOf(content []byte) (string, string) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(content, &tm); err != nil {
		return "", ""
	}
	gv, err := schema.ParseGroupVersion(tm.APIVersion)
	if err != nil {
		return "", tm.Kind
	}
	return gv.Version, tm.Kind
}

func markers(m []string) []change.Marker {
	if len(m) == 0 {
		return nil
	}
	out := make([]change.Marker, len(m))
	for i := range m {
		out[i] = change.Marker(m[i])
	}
	return out
}
