package registry

import "github.com/weakref/registry/internal/handle"

// ResolveMany resolves each of hs as Resolve would, in order, and calls fn
// with each handle's index and its object or error: the same object and
// the same error Resolve of that handle alone would give, the same hit and
// miss counts, the same touch of the soft cache.
//
// It is cheaper per handle than Resolve because a batch shares what a
// single call pays for alone: the clock is read once (every hit of the
// batch is accessed at that instant, which is when the batch was asked),
// the hit count is added once, and with withInfo false the answer's Info
// carries only ID, Handle, Size and SoftCached, the metadata copy (four
// time conversions, the owner, the GC cycles) being most of a hit's cost
// after the handle's decode.
//
// obj is valid only during fn: the next handle reuses it (one Object per
// batch, the only allocation of a batch of hits). fn runs with no
// lock held and may take its time.
func (r *Registry) ResolveMany(hs []string, withInfo bool, fn func(i int, obj *Object, err error)) {
	var (
		obj   Object
		now   int64
		hits  int64
		clock bool // now is read, at the first handle that may hit
	)
	for i, h := range hs {
		if id, mac, ok := r.codec.Split(handle.Object, h); ok {
			if !clock {
				now, clock = r.clock.nano(), true
			}
			if r.hit(id, mac, h, now, withInfo, &obj) {
				hits++
				fn(i, &obj, nil)
				continue
			}
		}
		// A miss, or a string the fast path does not recognise: Resolve
		// alone classifies it, counts it, and answers a hit it finds.
		o, err := r.Resolve(h)
		obj = o
		fn(i, &obj, err)
	}
	r.counters.hit(hits)
}

// hit answers into obj the Resolve of h, whose ID and tag Split gave, if
// it names a live object: as resolved does, with the access time now, and
// the full Info only if withInfo. It reports false, having changed
// nothing, if h does not name a live object; Resolve then tells why.
func (r *Registry) hit(id handle.ID, mac handle.MAC, h string, now int64, withInfo bool, obj *Object) bool {
	s := r.shard(id)
	s.mu.RLock()
	e := s.m.get(id)
	if e == nil || !e.issued(mac) {
		s.mu.RUnlock()
		return false
	}
	p := e.value()
	if p == nil {
		s.mu.RUnlock()
		return false
	}
	e.access(now)
	if withInfo {
		obj.Info = e.info(h)
	} else {
		obj.Info = Info{ID: e.id, Handle: h, Size: e.size, SoftCached: e.has(flagCached)}
	}
	obj.Data, obj.More = e.bytes(p)
	obj.crc, obj.crcKnown = e.checksum()
	s.mu.RUnlock()
	if r.cache != nil {
		obj.Info.SoftCached = r.cache.touch(e, p)
	}
	return true
}
