package registry

import (
	"github.com/weakref/registry/internal/handle"
)

// Delete removes an object at once. A pinned object is removed only with
// force; then its pins are dropped and returned so the caller can tell
// their leases. Errors: ErrCollected, ErrDeleted, ErrPinned.
func (r *Registry) Delete(id handle.ID, force bool) (Info, []Pin, error) {
	s := r.shard(id)
	s.lock()
	defer s.unlock()
	e, err := r.live(s, id)
	if err != nil {
		return Info{}, nil, err
	}
	h := r.handleOf(e)
	info := e.info(h)
	pins := r.pins(e)
	if len(pins) > 0 && !force {
		return info, pins, ErrPinned
	}
	now := r.now()
	s.m.del(id)
	s.leaks.setWeak(e, false)
	r.tombs.add(id)
	r.counters.add(e.state, -1, -e.size)
	if e.strong != nil { // pinned or lingering
		r.releaseStrong(e.charge(), takeCharge(e))
	}
	r.accounts.release(e.owner)
	r.counters.pins.Add(-int64(len(pins)))
	r.counters.deleted.Add(1)
	e.stopLinger()
	e.set(flagRemoved, true)
	if r.cache != nil {
		r.cache.remove(e)
	}
	e.strong = nil
	e.clearPins()
	e.state = Deleted
	e.stateSince = now.UnixNano()
	r.publish(e, h, EventDeleted, "", now)
	return info, pins, nil
}
