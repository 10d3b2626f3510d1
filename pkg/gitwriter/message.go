package gitwriter

import (
	"fmt"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
)

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
