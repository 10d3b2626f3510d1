package gitwriter

import (
	"bufio"
	"encoding/json"
	"fmt"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/gitrecord"
	"github.com/kubehistory/kubehistory/pkg/installkey"
)

// maxScan bounds how many commits are read to rebuild the state from trailers.
const maxScan = 200000

// idState says which commit recorded a change ID.
type idState struct {
	Commit string `json:"c"`
	Time   int64  `json:"t"`
}

// journalLine is one line of state.jsonl; exactly one of its groups of fields is set.
type journalLine struct {
	Head   string `json:"h,omitempty"`
	ID     string `json:"i,omitempty"`
	Commit string `json:"c,omitempty"`
	Time   int64  `json:"t,omitempty"`
	Path   string `json:"p,omitempty"`
	RV     string `json:"rv,omitempty"`
	Del    bool   `json:"d,omitempty"`
}

// state is what the writer must remember across restarts: which change IDs are in Git (so a
// redelivered change makes no second commit) and the newest resourceVersion written per path (so an
// older state never overwrites a newer one). It is an append-only journal in the data directory, made
// durable after every push; "h" lines say up to which remote head it is complete, and on start the
// trailers of the commits after that head are merged in (this is how a crash between push and
// journal write is recovered, and how a lost data directory is rebuilt).
type state struct {
	file      string
	head      plumbing.Hash
	ids       map[string]idState
	paths     map[string]gitrecord.ObjectVersion
	lines     int
	retention time.Duration
	// key verifies the seal of the commits whose trailers catchUp reads: only our own commits count.
	key installkey.Key
}

func loadState(dir string, retention time.Duration, key installkey.Key) (*state, error) {
	st := &state{file: filepath.Join(dir, "state.jsonl"), ids: map[string]idState{}, paths: map[string]gitrecord.ObjectVersion{}, retention: retention, key: key}
	f, err := os.Open(st.file)
	if os.IsNotExist(err) {
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	// Entries only count once a following "h" line confirms their batch was fully written; a batch
	// torn by a crash is recovered from the trailers instead.
	pendingIDs := map[string]idState{}
	pendingPaths := map[string]gitrecord.ObjectVersion{}
	for sc.Scan() {
		var l journalLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			klog.InfoS("Ignoring the torn tail of the writer journal", "file", st.file, "err", err)
			break
		}
		st.lines++
		switch {
		case l.ID != "":
			pendingIDs[l.ID] = idState{Commit: l.Commit, Time: l.Time}
		case l.Path != "":
			pendingPaths[l.Path] = gitrecord.ObjectVersion{RV: l.RV, Deleted: l.Del}
		case l.Head != "":
			for k, v := range pendingIDs {
				st.ids[k] = v
			}
			for k, v := range pendingPaths {
				st.paths[k] = v
			}
			pendingIDs, pendingPaths = map[string]idState{}, map[string]gitrecord.ObjectVersion{}
			st.head = plumbing.NewHash(l.Head)
		}
	}
	return st, nil
}

// record appends a pushed batch and makes it durable; the journal is compacted when mostly stale.
func (st *state) record(head plumbing.Hash, ids map[string]idState, paths map[string]gitrecord.ObjectVersion) error {
	for k, v := range ids {
		st.ids[k] = v
	}
	for k, v := range paths {
		st.paths[k] = v
	}
	st.head = head
	if st.lines > 2*(len(st.ids)+len(st.paths))+10000 {
		return st.compact()
	}
	if err := os.MkdirAll(filepath.Dir(st.file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(st.file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	n, err := writeLines(w, head, ids, paths)
	st.lines += n
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// compact rewrites the journal with the live entries only, forgetting IDs past the retention.
func (st *state) compact() error {
	cutoff := time.Now().Add(-st.retention).Unix()
	for k, v := range st.ids {
		if v.Time < cutoff {
			delete(st.ids, k)
		}
	}
	tmp := st.file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	n, err := writeLines(w, st.head, st.ids, st.paths)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	st.lines = n
	return os.Rename(tmp, st.file)
}

func writeLines(w *bufio.Writer, head plumbing.Hash, ids map[string]idState, paths map[string]gitrecord.ObjectVersion) (int, error) {
	enc := json.NewEncoder(w)
	n := 0
	for k, v := range ids {
		if err := enc.Encode(journalLine{ID: k, Commit: v.Commit, Time: v.Time}); err != nil {
			return n, err
		}
		n++
	}
	for k, v := range paths {
		if err := enc.Encode(journalLine{Path: k, RV: v.RV, Del: v.Deleted}); err != nil {
			return n, err
		}
		n++
	}
	return n + 1, enc.Encode(journalLine{Head: head.String()})
}

// catchUp merges the trailers of the commits from head back to the journal's head (first parent),
// and records head. When the journal's head is not found (new data directory, rewritten history) the
// path versions are rebuilt from scratch out of the whole scanned history.
func (st *state) catchUp(s storer.EncodedObjectStorer, head plumbing.Hash) error {
	if head.IsZero() || head == st.head {
		st.head = head
		return nil
	}
	ids := map[string]idState{}
	paths := map[string]gitrecord.ObjectVersion{}
	found := false
	cutoff := time.Now().Add(-st.retention)
	h := head
	for n := 0; !h.IsZero() && n < maxScan; n++ {
		if h == st.head {
			found = true
			break
		}
		c, err := object.GetCommit(s, h)
		if err != nil {
			return fmt.Errorf("reading commit %s: %w", h, err)
		}
		// A foreign commit (anyone could push one) says nothing: its trailers could claim any change ID
		// or freeze a path with a huge resourceVersion. Its files are still the branch's contents.
		var t gitrecord.Trailers
		if gitrecord.Verify(st.key, c) {
			t = gitrecord.ParseTrailers(c.Message)
		} else {
			klog.InfoS("Ignoring the trailers of a commit not sealed by this installation", "file", st.file, "commit", c.Hash.String())
		}
		if c.Committer.When.After(cutoff) {
			for _, id := range t.IDs {
				if _, ok := ids[id]; !ok {
					ids[id] = idState{Commit: c.Hash.String(), Time: c.Committer.When.Unix()}
				}
			}
		}
		for p, v := range t.Versions {
			// Newest first: the first version seen of a path is its current one.
			if _, ok := paths[p]; !ok {
				paths[p] = v
			}
		}
		if c.NumParents() == 0 {
			break
		}
		h = c.ParentHashes[0]
	}
	if !found {
		klog.InfoS("Rebuilding the writer state from Git trailers", "file", st.file, "head", head.String())
		st.paths = map[string]gitrecord.ObjectVersion{}
	}
	return st.record(head, ids, paths)
}

// olderThan reports whether resourceVersion a is older than b. Resource versions are opaque, but
// every API server backed by etcd uses increasing integers: they are compared as numbers when both
// parse (apimachinery's CompareResourceVersion). Otherwise (or when one is unknown) nothing can be
// said and the newest arrival wins.
func olderThan(a, b string) bool {
	c, err := resourceversion.CompareResourceVersion(a, b)
	return err == nil && c < 0
}

// impossibleLead is how far a recorded resourceVersion may run ahead of the one the reconciler
// observed before it counts as impossible. An audit change that raced the List leads by the few
// writes made in between; a forged trailer (18446744073709551615) or a revision from before an etcd
// restore leads by far more. A lead below this bound is taken as a real, newer change.
const impossibleLead = 1 << 32

// impossiblyNewer says whether recorded is a version the cluster, observed at seen, cannot have
// produced yet: not a number, or ahead of seen by more than impossibleLead.
func impossiblyNewer(recorded, seen string) bool {
	s, err := strconv.ParseUint(seen, 10, 64)
	if err != nil {
		return false // opaque versions: nothing to judge by
	}
	r, err := strconv.ParseUint(recorded, 10, 64)
	if err != nil {
		return true
	}
	return r > s && r-s > impossibleLead
}
