package registry

import (
	"bytes"
	"encoding/base64"
	"slices"

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
		if got, ok := e.meta.Labels[k]; !ok || got != v {
			return false
		}
	}
	// Liveness is judged by state, never by the weak pointer: an entry
	// still in its map is listed in its state until its cleanup reaps it.
	// Value on an unpinned entry during the collector's mark would keep
	// its object alive for that cycle.
	return true
}

// List returns up to limit objects that match f, in ID order, starting
// after the page token; and the token of the next page, empty on the last.
// Each page scans every shard once; it takes no lock across shards, so a
// listing under change is a fair view, not a snapshot.
func (r *Registry) List(f Filter, pageToken string, limit int) ([]Info, string, error) {
	var after handle.ID
	if pageToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(pageToken)
		if err != nil || len(raw) != len(after) {
			return nil, "", ErrPageToken
		}
		copy(after[:], raw)
	}
	if limit <= 0 {
		limit = 100
	}
	// Keep the limit+1 smallest IDs above after: one more than the page,
	// to know whether another page follows.
	type item struct {
		id   handle.ID
		info Info
	}
	page := make([]item, 0, limit+1)
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		for id, e := range s.m {
			if pageToken != "" && bytes.Compare(id[:], after[:]) <= 0 {
				continue
			}
			if len(page) == limit+1 && bytes.Compare(id[:], page[limit].id[:]) >= 0 {
				continue
			}
			if !f.match(e) {
				continue
			}
			it := item{id: id, info: e.info()}
			r.judge(&it.info)
			if f.SuspectedLeaks && !it.info.SuspectedLeak {
				continue
			}
			at, _ := slices.BinarySearchFunc(page, id, func(a item, b handle.ID) int { return bytes.Compare(a.id[:], b[:]) })
			if len(page) == limit+1 {
				page = page[:limit]
			}
			page = slices.Insert(page, at, it)
		}
		s.mu.RUnlock()
	}
	next := ""
	if len(page) > limit {
		page = page[:limit]
		last := page[limit-1].id
		next = base64.RawURLEncoding.EncodeToString(last[:])
	}
	out := make([]Info, len(page))
	for i := range page {
		out[i] = page[i].info
	}
	return out, next, nil
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
	info := e.info()
	r.judge(&info)
	return info, append([]Pin(nil), e.pins...), nil
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
		if e := s.m[id]; e != nil {
			// Under the shard lock no change to e can slip between this
			// CURRENT event and the subscription.
			r.events.watch(sub, id, r.event(e, EventCurrent, "", now))
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
		_, ok := r.shard(id).m[id] // an object leaves its map as its final event is published
		return ok
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
