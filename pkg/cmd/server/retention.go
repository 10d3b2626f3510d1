package server

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

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

// Run applies the policy every Interval until ctx ends (index.RunRetention).
func (o *RetentionOptions) Run(ctx context.Context, idx *index.Index) {
	idx.RunRetention(ctx, o.policy(), o.Interval)
}
