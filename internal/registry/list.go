package registry

import (
	"github.com/weakref/registry/internal/handle"
)

// Filter selects objects for List. The zero Filter selects all.
type Filter struct {
	// State, if not StateUnknown, selects objects in that state.
	State State
	// Labels selects objects that carry every one of these labels.
	Labels map[string]string
	// Lease, if not nil, selects objects that lease pins.
	Lease *handle.ID
	// SuspectedLeaks selects suspected leaks only (see Info).
	SuspectedLeaks bool
}

func (f *Filter) match(e *entry) bool {
	if f.State != StateUnknown && e.state != f.State {
		return false
	}
	if f.Lease != nil && e.pinIndex(*f.Lease) < 0 {
		return false
	}
	for k, v := range f.Labels {
		if got, ok := e.meta().Labels[k]; !ok || got != v {
			return false
		}
	}
	// Liveness is judged by state, never by the weak pointer: an entry
	// still in its map is listed in its state until its cleanup reaps it.
	// Value on an unpinned entry during the collector's mark would keep
	// its object alive for that cycle.
	return true
}

// listHold is how many entries List examines under one hold of a shard's
// read lock: a long filtered page must not keep a writer, such as the
// goroutine reaping what the collector took, waiting.
const listHold = 64

// listScanFactor bounds the entries a filtered List examines per page, as
// a multiple of the page size: a filter that few objects match gets a
// short page and a token to go on with rather than a scan of everything.
const listScanFactor = 10

// List returns up to limit objects that match f, in ID order, starting
// after the page token; and the token of the next page, empty on the last.
// A page token is a handle of kind handle.PageToken naming the last ID a
// page covered: MAC'd, so a token of another key, node or run, or an
// altered one, is refused with ErrPageToken.
//
// A page costs O(limit), whatever the number of objects: each shard keeps
// its entries in ID order (entryTable), and since an object's shard is its ID's first byte
// (modulo shardCount), the IDs that start with one byte lie together in
// one shard's tree. A page walks the first bytes up from the token's and,
// for each, the one table that holds them, examining entries in ID order
// and stopping at the page's end. With a filter, a page examines at most
// listScanFactor*limit entries (and never fewer than limit+1): when it
// reaches that bound it ends early, shorter than limit or even empty, with
// a token to go on from, as AIP-158 allows; only the last page has none.
//
// It takes one shard's read lock at a time, never two, and for at most
// listHold entries, so a listing under
// change is a fair view, not a snapshot. Liveness is judged by state: an
// object collected but not yet reaped is listed as it stood.
func (r *Registry) List(f Filter, pageToken string, limit int) ([]Info, string, error) {
	var after handle.ID
	if pageToken != "" {
		// Whatever Parse says (malformed, another key's, another node's,
		// an earlier run's, altered) the token is not one of this run's.
		id, err := r.codec.Parse(handle.PageToken, pageToken)
		if err != nil {
			return nil, "", ErrPageToken
		}
		after = id
	}
	if limit <= 0 {
		limit = 100
	}
	budget := limit + 1 // entries it may examine
	if !f.all() {
		budget = max(listScanFactor*limit, limit+1)
	}
	var (
		page     = make([]Info, 0, min(limit+1, 1024))
		examined int
		last     handle.ID // the last entry examined
	)
	// pivot is where the walk of each first byte starts: just after the
	// token for its first byte, then the first ID of each byte after it.
	pivot := after
	if pageToken != "" {
		if !incID(&pivot) {
			return nil, "", nil // the token is the largest ID there can be
		}
	}
	full := false
	for b := int(pivot[0]); b < 256 && !full; {
		s := &r.shards[b&(shardCount-1)] // as Registry.shard
		held, paused := 0, false
		s.mu.RLock()
		s.m.ascend(pivot, func(e *entry) bool {
			if e.id[0] != byte(b) {
				return false // the next first byte is in another shard
			}
			if held == listHold {
				pivot, paused = e.id, true // go on from e after a pause
				return false
			}
			held++
			examined++
			last = e.id
			if f.match(e) {
				info := e.info(r.handleOf(e))
				r.judge(&info)
				if !f.SuspectedLeaks || info.SuspectedLeak {
					page = append(page, info)
				}
			}
			full = len(page) > limit || examined >= budget
			return !full
		})
		s.mu.RUnlock()
		if !paused {
			if b++; b < 256 {
				pivot = handle.ID{byte(b)}
			}
		}
	}
	next := ""
	switch {
	case len(page) > limit:
		page = page[:limit]
		next = r.codec.Format(handle.PageToken, page[limit-1].ID)
	case full:
		// The bound was reached: the next page starts after the last
		// entry examined, matched or not.
		next = r.codec.Format(handle.PageToken, last)
	}
	return page, next, nil
}

// all reports whether f selects every object.
func (f *Filter) all() bool {
	return f.State == StateUnknown && len(f.Labels) == 0 && f.Lease == nil && !f.SuspectedLeaks
}

// incID sets id to the next ID in order, reporting false when id was the
// last.
func incID(id *handle.ID) bool {
	for i := len(id) - 1; i >= 0; i-- {
		id[i]++
		if id[i] != 0 {
			return true
		}
	}
	return false
}

// Inspect returns an object's metadata and its pins, oldest first.
func (r *Registry) Inspect(id handle.ID) (Info, []Pin, error) {
	s := r.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := r.live(s, id)
	if err != nil {
		return Info{}, nil, err
	}
	info := e.info(r.handleOf(e))
	r.judge(&info)
	return info, r.pins(e), nil
}

// WatchAll subscribes to every event of every object, or only those of the
// given kinds. The caller must Close the subscription.
func (r *Registry) WatchAll(kinds ...EventKind) (*Subscription, error) {
	return r.events.subscribe(kinds, true)
}

// WatchAllFrom is WatchAll resumed from sequence from: the subscription's
// Replay holds the history's events since from (inclusive) of the given
// kinds, and Events every later one; from 0 is WatchAll. Errors: a
// *CompactedError when the history no longer keeps from, or from is
// beyond the next event; ErrClosed.
func (r *Registry) WatchAllFrom(from uint64, kinds ...EventKind) (*Subscription, error) {
	if from == 0 {
		return r.WatchAll(kinds...)
	}
	return r.events.subscribeFrom(from, kinds, nil, nil)
}

// Watch subscribes to the events of the given objects. Each object's
// first event is EventCurrent with its state now (Collected or Deleted for
// one that is gone), then every change follows in order. The caller must
// Close the subscription.
func (r *Registry) Watch(ids []handle.ID) (*Subscription, error) {
	sub, err := r.events.subscribe(nil, false)
	if err != nil {
		return nil, err
	}
	now := r.now()
	ids = uniqueIDs(ids)
	sub.ending = len(ids) // each one's CURRENT event or a later one ends it
	for _, id := range ids {
		s := r.shard(id)
		s.mu.RLock()
		// An entry in its map has yet to publish its final event, so its
		// watch will see it (a collected one's COLLECTED comes with its
		// reap): judge by the map, not by the weak pointer, whose Value
		// would keep the object alive through a collection's mark.
		if e := s.m.get(id); e != nil {
			// Under the shard lock no change to e can slip between this
			// CURRENT event and the subscription.
			r.events.watch(sub, id, r.event(e, r.handleOf(e), EventCurrent, "", now))
			s.mu.RUnlock()
			continue
		}
		s.mu.RUnlock()
		st := Collected
		if r.tombs.has(id) {
			st = Deleted
		}
		r.events.current(sub, Event{Kind: EventCurrent, ID: id, Handle: r.codec.Format(handle.Object, id), State: st, Time: now})
	}
	return sub, nil
}

// WatchFrom is Watch resumed from sequence from: no CURRENT events; the
// subscription's Replay holds the history's events of ids since from
// (inclusive), and Events every later one. Objects that ended before from
// are neither replayed nor watched (Ending does not count them); from 0 is
// Watch. Errors as WatchAllFrom.
func (r *Registry) WatchFrom(ids []handle.ID, from uint64) (*Subscription, error) {
	if from == 0 {
		return r.Watch(ids)
	}
	// Hold the shards of ids, in shard order (nothing else holds two), so
	// that none of the objects ends between the check that it is still in
	// its map and its registration. Lock order: shard.mu, then hub.mu.
	var held [shardCount]bool
	for _, id := range ids {
		held[id[0]&(shardCount-1)] = true // as Registry.shard
	}
	for i := range r.shards {
		if held[i] {
			r.shards[i].mu.RLock()
			defer r.shards[i].mu.RUnlock()
		}
	}
	return r.events.subscribeFrom(from, nil, uniqueIDs(ids), func(id handle.ID) bool {
		return r.shard(id).m.get(id) != nil // an object leaves its map as its final event is published
	})
}

// uniqueIDs returns ids without repeats, in their first order.
func uniqueIDs(ids []handle.ID) []handle.ID {
	seen := make(map[handle.ID]struct{}, len(ids))
	out := make([]handle.ID, 0, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}
