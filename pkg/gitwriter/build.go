package gitwriter

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
)

func isDelete(v change.Verb) bool {
	return v == change.VerbDelete || v == change.VerbOrphanDelete
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
