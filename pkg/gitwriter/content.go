package gitwriter

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/change"
	"github.com/kubehistory/kubehistory/pkg/sanitize"
	"github.com/kubehistory/kubehistory/pkg/sopsenc"
)

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
