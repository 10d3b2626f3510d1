package gitwriter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	git "github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	"k8s.io/klog/v2"

	configv1alpha1 "github.com/kubehistory/kubehistory/apis/config/v1alpha1"
	"github.com/kubehistory/kubehistory/pkg/gitrecord"
)

// errStale means the remote branch is not where our commits were built: someone else pushed. The
// writer fetches and rebuilds its commits on the new head.
var errStale = errors.New("remote branch moved")

func (w *Writer) branchRef() plumbing.ReferenceName {
	return plumbing.NewBranchReferenceName(w.cfg.Branch)
}

func (w *Writer) trackingRef() plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName("origin", w.cfg.Branch)
}

// push sends exactly the objects this batch wrote and moves the branch from old to new. go-git's own
// Push computes what to send by walking everything reachable from the remote refs, which costs the
// whole repository on every push; the writer knows what it wrote, so it builds the packfile from that
// list and talks receive-pack directly. The old value in the command makes the update a
// compare-and-swap: a concurrent push elsewhere is refused by the server, not overwritten.
func (w *Writer) push(ctx context.Context, old, new plumbing.Hash, objects []plumbing.Hash) error {
	ep, err := transport.NewEndpoint(w.cfg.URL)
	if err != nil {
		return err
	}
	cl, err := client.NewClient(ep)
	if err != nil {
		return err
	}
	sess, err := cl.NewReceivePackSession(ep, w.auth)
	if err != nil {
		return w.readError(fmt.Errorf("connecting to %s: %w", gitrecord.RedactedURL(w.cfg.URL), err))
	}
	defer sess.Close()
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return w.readError(fmt.Errorf("listing %s for a push: %w", gitrecord.RedactedURL(w.cfg.URL), err))
	}
	remote := plumbing.ZeroHash
	req := packp.NewReferenceUpdateRequest()
	if ar != nil {
		refs, err := ar.AllReferences()
		if err != nil {
			return err
		}
		if r, ok := refs[w.branchRef()]; ok {
			remote = r.Hash()
		}
		req = packp.NewReferenceUpdateRequestFromCapabilities(ar.Capabilities)
	}
	if remote != old {
		return fmt.Errorf("%w: %s is at %s, expected %s", errStale, w.cfg.Branch, remote, old)
	}
	req.Commands = []*packp.Command{{Name: w.branchRef(), Old: old, New: new}}
	var pack bytes.Buffer
	// No delta search: the objects are small YAML files and new; speed matters more than size.
	if _, err := packfile.NewEncoder(&pack, w.storer, false).Encode(objects, 0); err != nil {
		return fmt.Errorf("building packfile: %w", err)
	}
	req.Packfile = io.NopCloser(&pack)
	rs, err := sess.ReceivePack(ctx, req)
	if rs != nil && rs.UnpackStatus != "" && rs.UnpackStatus != "ok" {
		return w.pushError(fmt.Errorf("pushing to %s: unpack failed: %s", gitrecord.RedactedURL(w.cfg.URL), rs.UnpackStatus))
	}
	if rs != nil && rs.Error() != nil {
		// The ref update was refused (go-git returns the report's error as err too). Either a push
		// elsewhere won the race (the branch moved: fetch and rebuild on it), or the remote refuses our
		// pushes (a hook, a protected branch): then retrying later is all there is to do.
		if head, lerr := w.remoteHead(ctx); lerr == nil && head != old {
			return fmt.Errorf("%w: %v", errStale, rs.Error())
		}
		return w.pushError(fmt.Errorf("the remote refused the push to %s of %s: %v", w.cfg.Branch, gitrecord.RedactedURL(w.cfg.URL), rs.Error()))
	}
	if err != nil {
		return w.pushError(fmt.Errorf("pushing to %s: %w", gitrecord.RedactedURL(w.cfg.URL), err))
	}
	return w.setLocalRefs(new)
}

// pushError classifies a failed push.
func (w *Writer) pushError(err error) error {
	return &remoteError{reason: w.transportReason(err, configv1alpha1.ReasonPushFailed), err: err}
}

// remoteHead lists the remote branch head (zero when the branch does not exist).
func (w *Writer) remoteHead(ctx context.Context) (plumbing.Hash, error) {
	remote, err := w.repo.Remote("origin")
	if err != nil {
		return plumbing.ZeroHash, err
	}
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: w.auth})
	if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return plumbing.ZeroHash, err
	}
	for _, r := range refs {
		if r.Name() == w.branchRef() {
			return r.Hash(), nil
		}
	}
	return plumbing.ZeroHash, nil
}

// sync finds the remote branch head, fetches it when it is new to us and merges the trailers of the
// commits we did not know into the state.
func (w *Writer) sync(ctx context.Context) error {
	remote, err := w.repo.Remote("origin")
	if err != nil {
		return err
	}
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: w.auth})
	if err != nil && !errors.Is(err, transport.ErrEmptyRemoteRepository) {
		return w.readError(fmt.Errorf("listing %s: %w", gitrecord.RedactedURL(w.cfg.URL), err))
	}
	head := plumbing.ZeroHash
	for _, r := range refs {
		if r.Name() == w.branchRef() {
			head = r.Hash()
		}
	}
	if !head.IsZero() {
		if _, err := w.storer.EncodedObject(plumbing.CommitObject, head); err != nil {
			spec := gitconfig.RefSpec(fmt.Sprintf("+%s:%s", w.branchRef(), w.trackingRef()))
			err := remote.FetchContext(ctx, &git.FetchOptions{RefSpecs: []gitconfig.RefSpec{spec}, Auth: w.auth, Tags: git.NoTags})
			if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
				return w.readError(fmt.Errorf("fetching %s: %w", gitrecord.RedactedURL(w.cfg.URL), err))
			}
		}
	}
	if err := w.state.catchUp(w.storer, head); err != nil {
		return err
	}
	if head != w.head {
		klog.V(2).InfoS("Remote branch head", "destination", w.ref(), "branch", w.cfg.Branch, "head", head.String())
	}
	w.head = head
	w.synced = true
	return w.setLocalRefs(head)
}

// setLocalRefs points the clone's branch and tracking ref at the pushed head, so that the cache is
// a normal repository one can inspect with git, and its objects stay referenced.
func (w *Writer) setLocalRefs(h plumbing.Hash) error {
	if h.IsZero() {
		return nil
	}
	for _, name := range []plumbing.ReferenceName{w.branchRef(), w.trackingRef()} {
		if err := w.storer.SetReference(plumbing.NewHashReference(name, h)); err != nil {
			return err
		}
	}
	return nil
}
