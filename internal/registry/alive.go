package registry

import (
	"github.com/weakref/registry/internal/handle"
)

// ResolvePin resolves an object and pins it by by, as one step under its
// shard's lock: either the bytes come back and by pins the object, or the
// answer is an error and nothing is pinned. There is no moment between the
// check and the pin in which the collector could take it. already says by
// pinned it before. Errors: ErrCollected, ErrDeleted, a *LimitError for
// PINNED_BYTES_LIMIT.
func (r *Registry) ResolvePin(id handle.ID, by Holder) (obj Object, already bool, err error) {
	s := r.shard(id)
	s.lock()
	var info Info
	already, p, err := r.pinLocked(&info, s, id, "", by)
	if err != nil {
		s.unlock()
		r.counters.miss(err)
		return Object{}, false, err
	}
	e := s.m.get(id)
	obj = Object{Info: info}
	obj.Data, obj.More = e.bytes(p)
	obj.crc, obj.crcKnown = e.checksum()
	s.unlock()
	r.counters.hit(1)
	return obj, already, nil
}

// judge fills in whether in, an object's info, looks like a leak: WEAK,
// not held by the soft cache, and alive after Config.LeakGCCycles
// collections. The registry holds a weak object by its weak pointer only,
// and the payload is referenced by nothing outside it (readers get the
// byte slices, not the payload), so only a stray reference keeps it.
func (r *Registry) judge(in *Info) {
	n := r.cfg.LeakGCCycles
	in.SuspectedLeak = n > 0 && in.State == Weak && !in.SoftCached && in.WeakGCCycles >= int64(n)
}

// SuspectedLeaks counts the objects judge calls suspected leaks, from the
// shards' leak books: O(1) in the number of objects, touching none.
func (r *Registry) SuspectedLeaks() int64 {
	var n int64
	for i := range r.shards {
		n += r.shards[i].leaks.suspected()
	}
	return n
}
