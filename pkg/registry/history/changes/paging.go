package changes

import (
	"fmt"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/storage"

	"github.com/kubehistory/kubehistory/pkg/index"
)

// continuePrefix is the key space the continue tokens point into. Tokens use the apiserver's own
// encoding (storage.EncodeContinue: base64url JSON {"v":"meta.k8s.io/v1","rv":<snapshot>,"start":<key>}),
// where the start key is the decimal index sequence of the last entry served. The rv is the snapshot
// fixed by the first page: records are append-only, so every page read at rv X lists exactly the
// entries with a sequence at or below X, and a page set is an exact snapshot.
const continuePrefix = "/changes/"

// encodeContinue returns the token that resumes after lastSeq in the snapshot rv.
func encodeContinue(lastSeq, rv uint64) (string, error) {
	return storage.EncodeContinue(continuePrefix+strconv.FormatUint(lastSeq, 10), continuePrefix, int64(rv))
}

// decodeContinue returns the sequence to resume after and the snapshot of a token; a token this server
// did not make answers 400.
func decodeContinue(token string) (afterSeq, rv uint64, err error) {
	key, snapshot, err := storage.DecodeContinue(token, continuePrefix)
	if err != nil {
		return 0, 0, apierrors.NewBadRequest(fmt.Sprintf("invalid continue token: %v", err))
	}
	afterSeq, err = strconv.ParseUint(strings.TrimPrefix(key, continuePrefix), 10, 64)
	if err != nil || snapshot <= 0 || afterSeq > uint64(snapshot) {
		return 0, 0, apierrors.NewBadRequest(fmt.Sprintf("invalid continue token: start %q at resourceVersion %d", strings.TrimPrefix(key, continuePrefix), snapshot))
	}
	return afterSeq, uint64(snapshot), nil
}

// window is the part of the index a list request reads.
type window struct {
	opts index.ListOptions
	// keep, when checked, is the sequence above which the index must still hold every entry for the
	// answer to be exact: the last entry served for a continued list, the snapshot for an exact read.
	keep    uint64
	checked bool
	// notOlderThan is the resourceVersion the answer may not be older than (0: any).
	notOlderThan uint64
}

// listWindow turns the request's paging and resourceVersion into index options.
func listWindow(options *metainternalversion.ListOptions) (window, error) {
	var w window
	if options == nil {
		return w, nil
	}
	if options.Limit > 0 {
		w.opts.Limit = int(options.Limit)
	}
	if options.Continue != "" {
		var err error
		w.opts.AfterSeq, w.opts.MaxSeq, err = decodeContinue(options.Continue)
		w.keep, w.checked = w.opts.AfterSeq, true
		return w, err
	}
	// resourceVersionMatch=Exact reads a past snapshot, which append-only records make exact for free.
	// Any other resourceVersion ("", "0", NotOlderThan) reads the latest state, which is never older
	// unless this replica's index is behind the resourceVersion asked for.
	if options.ResourceVersionMatch == metav1.ResourceVersionMatchExact {
		rv, err := strconv.ParseUint(options.ResourceVersion, 10, 64)
		if err != nil || rv == 0 {
			return w, apierrors.NewBadRequest(fmt.Sprintf("resourceVersionMatch=Exact needs a positive resourceVersion, not %q", options.ResourceVersion))
		}
		w.opts.MaxSeq = rv
		w.keep, w.checked = rv, true
		return w, nil
	}
	if rv := options.ResourceVersion; rv != "" && rv != "0" {
		var err error
		if w.notOlderThan, err = strconv.ParseUint(rv, 10, 64); err != nil {
			return w, apierrors.NewBadRequest(fmt.Sprintf("invalid resourceVersion %q: history resourceVersions are index sequences", rv))
		}
	}
	return w, nil
}

// check refuses a page the index can no longer answer exactly: a snapshot whose entries were compacted
// (410: the client starts the list again) or one this replica has not reached yet (504 with a retry
// hint, what the apiserver answers for a resourceVersion from the future; replicas share sequences).
func (w window) check(res index.ListResult) error {
	if w.notOlderThan > res.Head {
		return storage.NewTooLargeResourceVersionError(w.notOlderThan, res.Head, 1)
	}
	if !w.checked {
		return nil
	}
	if w.opts.MaxSeq > res.Head {
		return storage.NewTooLargeResourceVersionError(w.opts.MaxSeq, res.Head, 1)
	}
	if res.Compacted > w.keep {
		return apierrors.NewResourceExpired(fmt.Sprintf(
			"resourceVersion %d is older than the index retention (entries through %d are removed): start the list again",
			w.keep, res.Compacted))
	}
	return nil
}
