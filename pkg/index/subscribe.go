package index

import (
	"errors"
	"fmt"
)

// ErrSubscriberTooSlow ends a subscription whose buffer was full when Add had a new entry for it: Add
// (and with it the feed from JetStream) never waits for a watcher.
var ErrSubscriberTooSlow = errors.New("subscriber too slow: its buffer of new entries was full")

// Subscription receives every entry added to the index after Subscribe returned, in sequence order.
type Subscription struct {
	x   *Index
	ch  chan Entry
	err error // set, under x.mu, before ch is closed by the index
}

// Subscribe returns a subscription with room for buffer entries not yet received. A watcher subscribes
// before it reads the index, so that no entry falls between what it reads and what it receives.
func (x *Index) Subscribe(buffer int) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	s := &Subscription{x: x, ch: make(chan Entry, buffer)}
	x.mu.Lock()
	x.subs[s] = struct{}{}
	x.mu.Unlock()
	return s
}

// Entries is closed when the subscription ends; Err then tells why.
func (s *Subscription) Entries() <-chan Entry { return s.ch }

// Err is nil while the subscription runs or after Cancel, ErrSubscriberTooSlow (wrapped) when the index
// ended it.
func (s *Subscription) Err() error {
	s.x.mu.Lock()
	defer s.x.mu.Unlock()
	return s.err
}

// Cancel ends the subscription; safe to call more than once and after the index ended it.
func (s *Subscription) Cancel() {
	s.x.mu.Lock()
	defer s.x.mu.Unlock()
	if _, ok := s.x.subs[s]; ok {
		delete(s.x.subs, s)
		close(s.ch)
	}
}

// notify hands a new entry to every subscription without blocking; a full one is ended instead.
func (x *Index) notify(e Entry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for s := range x.subs {
		select {
		case s.ch <- e:
		default:
			s.err = fmt.Errorf("%w (%d entries) at sequence %d", ErrSubscriberTooSlow, cap(s.ch), e.Seq)
			delete(x.subs, s)
			close(s.ch)
		}
	}
}
