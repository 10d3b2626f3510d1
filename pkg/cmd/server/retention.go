package server

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/kubehistory/kubehistory/pkg/index"
)

// RetentionOptions bound the index; Git keeps everything, and an index rebuilt from Git can serve
// what retention removed.
type RetentionOptions struct {
	MaxAge     time.Duration
	MaxEntries int
	// Interval is how often the policy is applied. Not a flag: a minute keeps each pass small (the
	// entries of one minute) while the index never exceeds its bounds by more than a minute's worth.
	Interval time.Duration
}

// NewRetentionOptions returns the defaults: keep everything.
func NewRetentionOptions() *RetentionOptions {
	return &RetentionOptions{Interval: time.Minute}
}

// AddFlags adds the retention flags; they belong in the "kubehistory" section.
func (o *RetentionOptions) AddFlags(fs *pflag.FlagSet) {
	fs.DurationVar(&o.MaxAge, "index-max-age", o.MaxAge, "Remove history entries older than this from the index (checked every minute); 0 keeps all. Git keeps everything; a list or watch resuming from a removed resourceVersion answers 410 Gone.")
	fs.IntVar(&o.MaxEntries, "index-max-entries", o.MaxEntries, "Keep at most this many history entries in the index, removing the oldest first (checked every minute); 0 keeps all.")
}

// Validate reports impossible bounds.
func (o *RetentionOptions) Validate() []error {
	var errs []error
	if o.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("--index-max-age %s must not be negative", o.MaxAge))
	}
	if o.MaxEntries < 0 {
		errs = append(errs, fmt.Errorf("--index-max-entries %d must not be negative", o.MaxEntries))
	}
	return errs
}

func (o *RetentionOptions) policy() index.Retention {
	return index.Retention{MaxAge: o.MaxAge, MaxEntries: o.MaxEntries}
}

// Run applies the policy at once and then every Interval until ctx ends; with no bound it returns at
// once. A failed pass is logged and retried at the next tick: retention is housekeeping, and the API
// serves correctly (if from a larger file) meanwhile.
func (o *RetentionOptions) Run(ctx context.Context, idx *index.Index) {
	p := o.policy()
	if p.MaxAge <= 0 && p.MaxEntries <= 0 {
		return
	}
	klog.InfoS("Index retention on", "maxAge", p.MaxAge, "maxEntries", p.MaxEntries, "interval", o.Interval)
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		start := time.Now()
		removed, err := idx.Retain(p, start)
		switch {
		case err != nil:
			klog.ErrorS(err, "Applying index retention", "removed", removed)
		case removed > 0:
			klog.InfoS("Index retention removed entries", "removed", removed, "duration", time.Since(start))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
