package index

import "sync/atomic"

// RecentEntries is how many of the newest entries an Index keeps decoded in memory. Lists and gets of
// recent history (the common case: what changed lately, `kubectl get -w`, a page set being read) then
// skip decoding the entry from the file, which was about a third of a list's server time. Records never
// change once indexed, so a cached entry never goes stale. Bounded by count: at ~3 KiB per decoded
// entry with a diff, about 50 MiB when full.
const RecentEntries = 1 << 14

// recentCache is a direct-mapped cache of the entries of the most recent RecentEntries sequences: the
// entry of sequence s lives in slot s mod RecentEntries, so that older entries never push out newer
// ones and lookups take no lock. Entries are shared and must not be modified.
type recentCache struct {
	slots [RecentEntries]atomic.Pointer[Entry]
	head  atomic.Uint64 // the highest sequence seen
}

// get returns the cached entry of seq, or nil.
func (c *recentCache) get(seq uint64) *Entry {
	if p := c.slots[seq%RecentEntries].Load(); p != nil && p.Seq == seq {
		return p
	}
	return nil
}

// put caches e if its sequence is among the most recent ones. e must not be modified afterwards.
func (c *recentCache) put(e *Entry) {
	c.advance(e.Seq)
	if h := c.head.Load(); h >= RecentEntries && e.Seq <= h-RecentEntries {
		return // older than the window: it would push out a newer entry
	}
	c.slots[e.Seq%RecentEntries].Store(e)
}

// advance raises the highest sequence seen to seq.
func (c *recentCache) advance(seq uint64) {
	for {
		h := c.head.Load()
		if seq <= h || c.head.CompareAndSwap(h, seq) {
			return
		}
	}
}
