package gitwriter

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// treeEdit is the new content of one path: a blob, or removal.
type treeEdit struct {
	blob   plumbing.Hash
	remove bool
}

type editNode struct {
	children map[string]*editNode
	edit     *treeEdit
}

// objectWriter writes blobs, trees and commits straight into the object storage, remembering what it
// wrote so that exactly those objects are pushed.
type objectWriter struct {
	s       storer.EncodedObjectStorer
	written []plumbing.Hash
	// trees caches decoded trees by hash: a batch reads the same folders again and again (to diff
	// and to rewrite them), and decoding is most of the cost of a commit.
	trees map[plumbing.Hash]map[string]object.TreeEntry
}

// tree returns the entries of a tree by name.
func (w *objectWriter) tree(h plumbing.Hash) (map[string]object.TreeEntry, error) {
	if e, ok := w.trees[h]; ok {
		return e, nil
	}
	t, err := object.GetTree(w.s, h)
	if err != nil {
		return nil, fmt.Errorf("reading tree %s: %w", h, err)
	}
	entries := make(map[string]object.TreeEntry, len(t.Entries))
	for _, e := range t.Entries {
		entries[e.Name] = e
	}
	if w.trees == nil {
		w.trees = map[plumbing.Hash]map[string]object.TreeEntry{}
	}
	w.trees[h] = entries
	return entries, nil
}

// readFile returns the content of path in the tree, or found=false.
func (w *objectWriter) readFile(treeHash plumbing.Hash, path string) ([]byte, bool, error) {
	if treeHash.IsZero() {
		return nil, false, nil
	}
	segs := strings.Split(path, "/")
	h := treeHash
	for i, seg := range segs {
		entries, err := w.tree(h)
		if err != nil {
			return nil, false, err
		}
		e, ok := entries[seg]
		if !ok {
			return nil, false, nil
		}
		last := i == len(segs)-1
		if last != (e.Mode != filemode.Dir) {
			return nil, false, nil
		}
		h = e.Hash
	}
	b, err := object.GetBlob(w.s, h)
	if err != nil {
		return nil, false, err
	}
	r, err := b.Reader()
	if err != nil {
		return nil, false, err
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, false, err
	}
	return buf.Bytes(), true, nil
}

func (w *objectWriter) put(t plumbing.ObjectType, data []byte) (plumbing.Hash, error) {
	obj := w.s.NewEncodedObject()
	obj.SetType(t)
	obj.SetSize(int64(len(data)))
	wr, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := wr.Write(data); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := wr.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	h, err := w.s.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	w.written = append(w.written, h)
	return h, nil
}

func (w *objectWriter) putObject(o interface {
	Encode(plumbing.EncodedObject) error
}) (plumbing.Hash, error) {
	obj := w.s.NewEncodedObject()
	if err := o.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	h, err := w.s.SetEncodedObject(obj)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	w.written = append(w.written, h)
	return h, nil
}

// updateTree returns the tree that is base with edits applied. Only the trees on the paths of the
// edits are read and rewritten; every other subtree is reused by hash, so the cost is proportional to
// the number of changed paths times the depth, not to the size of the repository.
func (w *objectWriter) updateTree(base plumbing.Hash, edits map[string]treeEdit) (plumbing.Hash, error) {
	root := &editNode{}
	for p, e := range edits {
		n := root
		for _, seg := range strings.Split(p, "/") {
			if n.children == nil {
				n.children = map[string]*editNode{}
			}
			c := n.children[seg]
			if c == nil {
				c = &editNode{}
				n.children[seg] = c
			}
			n = c
		}
		e := e
		n.edit = &e
	}
	h, _, err := w.applyNode(base, root)
	return h, err
}

func (w *objectWriter) applyNode(treeHash plumbing.Hash, n *editNode) (plumbing.Hash, bool, error) {
	entries := map[string]object.TreeEntry{}
	if !treeHash.IsZero() {
		cached, err := w.tree(treeHash)
		if err != nil {
			return plumbing.ZeroHash, false, err
		}
		for k, e := range cached {
			entries[k] = e
		}
	}
	for name, c := range n.children {
		if c.edit != nil {
			if c.edit.remove {
				delete(entries, name)
			} else {
				entries[name] = object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: c.edit.blob}
			}
			continue
		}
		var sub plumbing.Hash
		if e, ok := entries[name]; ok && e.Mode == filemode.Dir {
			sub = e.Hash
		}
		h, empty, err := w.applyNode(sub, c)
		if err != nil {
			return plumbing.ZeroHash, false, err
		}
		if empty {
			// Git has no empty folders: a folder whose last file went goes too.
			delete(entries, name)
		} else {
			entries[name] = object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h}
		}
	}
	if len(entries) == 0 && treeHash != emptyTreeHash {
		return plumbing.ZeroHash, true, nil
	}
	list := make([]object.TreeEntry, 0, len(entries))
	for _, e := range entries {
		list = append(list, e)
	}
	// Git orders entries by name with folders compared as if they ended in "/".
	sort.Slice(list, func(i, j int) bool { return gitSortName(list[i]) < gitSortName(list[j]) })
	h, err := w.putObject(&object.Tree{Entries: list})
	return h, false, err
}

func gitSortName(e object.TreeEntry) string {
	if e.Mode == filemode.Dir {
		return e.Name + "/"
	}
	return e.Name
}

// emptyTreeHash is the hash of the empty tree; the root of a commit that holds no file.
var emptyTreeHash = plumbing.NewHash("4b825dc642cb6eb9a060e54bf8d69288fbee4904")

// readFile reads one file of a tree without a cache.
func readFile(s storer.EncodedObjectStorer, treeHash plumbing.Hash, path string) ([]byte, bool, error) {
	return (&objectWriter{s: s}).readFile(treeHash, path)
}
