package registry

import (
	"maps"
	"runtime"
	"time"
	"unsafe"
	"weak"

	"github.com/weakref/registry/internal/handle"
)

// Put stores a copy-free reference to data and returns the new object's
// metadata. The registry keeps data as it is: the caller must not modify
// it afterwards. With by non-nil, the object is pinned by that lease from
// its first moment; otherwise it starts LINGERING if meta.Linger asks,
// else WEAK.
func (r *Registry) Put(data []byte, meta Meta, by *Holder) (Info, error) {
	return r.PutPayload(Payload{Data: data}, meta, by)
}

// PutPayload is Put for a payload in pieces, as an upload delivers it.
func (r *Registry) PutPayload(pl Payload, meta Meta, by *Holder) (info Info, err error) {
	if len(pl.Data) == 0 && len(pl.More) > 0 {
		pl.Data, pl.More = pl.More[0], pl.More[1:]
	}
	size := pl.Size()
	if size == 0 {
		return Info{}, ErrPayloadEmpty
	}
	if limit := r.cfg.MaxObjectBytes; limit > 0 && size > limit {
		return Info{}, &LimitError{Limit: LimitObjectSize, Max: limit, Want: size}
	}
	if err := ValidateLabels(meta.Labels); err != nil {
		return Info{}, err
	}
	meta.Labels = maps.Clone(meta.Labels) // the caller's map stays the caller's
	owner := meta.Owner                   // kept as e.owner, a pointer
	kept := objectMeta{ContentType: meta.ContentType, Labels: meta.Labels, Linger: meta.Linger}
	var charged *account
	if by != nil || meta.Linger > 0 {
		// Strongly held from the first moment, by the putter's act.
		a, err := r.reserveStrong(size+kept.metaBytes(), owner)
		if err != nil {
			return Info{}, err
		}
		charged = a
	}
	now := r.now()
	nowNano := now.UnixNano()
	var p *payload
	direct := r.cfg.OwnedPayloads && len(pl.More) == 0 && len(pl.Data) >= directMin
	if direct {
		p = &pl.Data[0]
	} else {
		p = (*payload)(unsafe.Pointer(&box{data: pl.Data, more: pl.More}))
	}
	id, mac := r.codec.Mint(handle.Object)
	h := r.codec.FormatMAC(handle.Object, id, mac)
	e := &entry{
		id:         id,
		mac:        mac,
		size:       size,
		created:    nowNano,
		weak:       weak.Make(p),
		owner:      r.accounts.acquire(owner),
		state:      Weak,
		stateSince: nowNano,
	}
	if direct {
		e.flags.Store(uint32(flagDirect))
	}
	if charged != nil {
		e.setCharge(charged) // a charge to its owner's account is implied
	}
	if kept.ContentType != "" || kept.Labels != nil || kept.Linger != 0 {
		e.extra().meta = kept
	}
	e.accessed.Store(nowNano)
	if pl.CRCKnown {
		e.setChecksum(pl.CRC32C)
	}
	// The cleanup's argument is e, never p: a cleanup that reached its
	// object would keep it alive forever, and e reaches p only through
	// strong, which is nil whenever the object is unpinned (while it is
	// pinned, p is alive anyway). A pointer costs the runtime an 8-byte
	// box for the argument where the 16-byte ID took 16.
	runtime.AddCleanup(p, r.reapFn, e)

	s := r.shard(id)
	s.lock()
	s.m.put(e)
	r.counters.puts.Add(1)
	switch {
	case by != nil:
		e.strong = p
		e.state = Pinned
		e.addPin(pinSlot{lease: by.ID, since: nowNano})
		r.counters.add(Pinned, 1, size)
		r.counters.pins.Add(1)
		// CREATED reports the pinned state: the object is never WEAK.
		r.publish(e, h, EventCreated, "", now)
		r.publish(e, h, EventPinned, by.LeaseID, now)
	case meta.Linger > 0:
		e.strong = p
		r.startLinger(e, now, meta.Linger)
		r.counters.add(Lingering, 1, size)
		r.publish(e, h, EventCreated, "", now)
		r.publish(e, h, EventLingering, "", now)
	default:
		r.counters.add(Weak, 1, size)
		s.leaks.setWeak(e, true)
		r.publish(e, h, EventCreated, "", now)
		r.publish(e, h, EventWeak, "", now)
	}
	e.fillInfo(&info, h)
	s.unlock()
	runtime.KeepAlive(p) // p must not be collected before it is in the map
	return info, nil
}

// Object is a resolved object: its bytes and metadata.
type Object struct {
	// Data, then More in order, are the object's bytes (see Payload). They
	// are shared with the registry and every other reader: never modify
	// them.
	Data []byte
	More [][]byte
	Info Info

	crc      uint32
	crcKnown bool
}

// Payload returns the object's bytes, with their checksum if known.
func (o Object) Payload() Payload {
	return Payload{Data: o.Data, More: o.More, CRC32C: o.crc, CRCKnown: o.crcKnown}
}

// Resolve returns the object's bytes and metadata. Errors: those of Parse,
// ErrCollected, ErrDeleted.
//
// A hit costs no MAC: the handle is recognised by the tag its live entry
// keeps (entry.issued), and its answer carries h itself, the very string
// Put issued. Everything else is verified by the MAC first, so that each
// miss is classified as it always was.
func (r *Registry) Resolve(h string) (obj Object, err error) {
	if id, mac, ok := r.codec.Split(handle.Object, h); ok {
		s := r.shard(id)
		var v entryView
		if e, ok := s.peek(id, &v); ok && e.issued(mac) {
			p := v.strong
			if p == nil {
				p = e.weak.Value()
			}
			if p != nil {
				r.peeked(&obj, e, &v, p, h) // in place: an Object is 280 bytes to copy
				return obj, nil
			}
		}
		// Being changed, or not a live object's: ask under the lock.
		s.mu.RLock()
		if e := s.m.get(id); e != nil && e.issued(mac) {
			if p := e.value(); p != nil {
				return r.resolved(s, e, p, h), nil
			}
		}
		s.mu.RUnlock()
	}
	id, err := r.codec.Parse(handle.Object, h)
	if err != nil {
		r.counters.miss(err)
		return Object{}, err
	}
	s := r.shard(id)
	s.mu.RLock()
	e := s.m.get(id)
	var p *payload
	if e != nil {
		p = e.value()
	}
	if p == nil {
		s.mu.RUnlock()
		err := r.gone(id)
		r.counters.miss(err)
		return Object{}, err
	}
	return r.resolved(s, e, p, h), nil
}

// resolved answers a Resolve of e, whose payload p is alive and whose
// handle is h, and releases s's read lock, which the caller holds.
func (r *Registry) resolved(s *shard, e *entry, p *payload, h string) Object {
	e.access(r.clock.nano())
	obj := Object{Info: e.info(h)}
	obj.Data, obj.More = e.bytes(p)
	obj.crc, obj.crcKnown = e.checksum()
	s.mu.RUnlock()
	r.counters.hit(1)
	if r.cache != nil {
		obj.Info.SoftCached = r.cache.touch(e, p)
	}
	return obj
}

// peeked is resolved for an entry peek read without the lock: v is its
// view, p its payload.
func (r *Registry) peeked(obj *Object, e *entry, v *entryView, p *payload, h string) {
	e.access(r.clock.nano())
	e.infoOf(&obj.Info, v, h)
	obj.Data, obj.More = e.bytes(p)
	obj.crc, obj.crcKnown = e.checksum()
	r.counters.hit(1)
	if r.cache != nil {
		obj.Info.SoftCached = r.cache.touch(e, p)
	}
}

// RecordChecksum remembers the CRC-32C of a live object's payload, as a
// download computed it, for the downloads after it. The caller vouches
// for crc; an object already gone is ignored.
func (r *Registry) RecordChecksum(id handle.ID, crc uint32) {
	s := r.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if e := s.m.get(id); e != nil {
		e.setChecksum(crc)
	}
}

// Stat returns an object's metadata. Errors as Resolve.
func (r *Registry) Stat(h string) (Info, error) {
	if id, mac, ok := r.codec.Split(handle.Object, h); ok {
		var v entryView
		if e, ok := r.shard(id).peek(id, &v); ok && e.issued(mac) && (v.strong != nil || e.weak.Value() != nil) {
			var info Info
			e.infoOf(&info, &v, h)
			r.judge(&info)
			return info, nil
		}
	}
	id, err := r.Parse(h)
	if err != nil {
		return Info{}, err
	}
	// Parse accepts only the very string issued for id: the answer may
	// carry h rather than make it again.
	return r.stat(id, h)
}

// StatID is Stat for a parsed handle.
func (r *Registry) StatID(id handle.ID) (Info, error) {
	return r.stat(id, "")
}

// stat is Stat of id, whose handle is h, or is made again when h is "".
func (r *Registry) stat(id handle.ID, h string) (Info, error) {
	s := r.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := r.live(s, id)
	if err != nil {
		return Info{}, err
	}
	if h == "" {
		h = r.handleOf(e)
	}
	info := e.info(h)
	r.judge(&info)
	return info, nil
}

// live returns the entry of id if its object is still alive, or why not.
// The caller holds s.mu (read or write).
//
// It is for single-object answers (Stat, Inspect, Delete) and may call
// the weak pointer's Value: an object collected whose cleanup has not run
// yet must answer ErrCollected there as Resolve does. Value during the
// collector's mark keeps that one object alive for the cycle; no scan may
// call it (see Filter.match).
func (r *Registry) live(s *shard, id handle.ID) (*entry, error) {
	e := s.m.get(id)
	if e == nil || e.value() == nil {
		return nil, r.gone(id)
	}
	return e, nil
}

// gone says why a genuine handle of this run has no live object.
func (r *Registry) gone(id handle.ID) error {
	if r.tombs.has(id) {
		return ErrDeleted
	}
	return ErrCollected
}

// Pin makes by a holder of the object. It reports already=true, changing
// nothing, when by pins it already. Errors: ErrCollected, ErrDeleted, a
// *LimitError for PINNED_BYTES_LIMIT.
func (r *Registry) Pin(id handle.ID, by Holder) (info Info, already bool, err error) {
	return r.PinParsed(id, "", by)
}

// PinParsed is Pin for a caller that has the handle: h, the string Parse
// accepted for id, which the answer and the events then carry instead of
// a handle made again (a string formatted and allocated per call). "" is
// Pin.
func (r *Registry) PinParsed(id handle.ID, h string, by Holder) (info Info, already bool, err error) {
	s := r.shard(id)
	s.lock()
	defer s.unlock()
	already, _, err = r.pinLocked(&info, s, id, h, by)
	return info, already, err
}

// pinLocked is PinParsed under s.mu, setting info, zero, to the answer
// (only if err is nil) and also returning the payload it holds.
func (r *Registry) pinLocked(info *Info, s *shard, id handle.ID, h string, by Holder) (already bool, p *payload, err error) {
	e := s.m.get(id)
	if e == nil {
		return false, nil, r.gone(id)
	}
	if h == "" {
		h = r.handleOf(e)
	}
	if e.pinIndex(by.ID) >= 0 {
		e.fillInfo(info, h)
		return true, e.strong, nil
	}
	var now time.Time
	if e.state == Pinned {
		now = r.clock.time() // no state changes: a pin's time is an access time
	} else {
		now = r.now()
	}
	p = e.strong // pinned or lingering
	if e.state != Pinned {
		if p == nil {
			p = e.weak.Value()
		}
		if p == nil {
			// Collected; its cleanup has not run yet. Reap it now so
			// that every observer agrees from here on. (Value is right
			// here: pinning needs the bytes.)
			r.reapLocked(s, e, now)
			return false, nil, ErrCollected
		}
		if e.state == Weak {
			// Strongly held again, by this lease's act; a LINGERING
			// object keeps the charge it has.
			a, err := r.reserveStrong(e.charge(), by.Identity)
			if err != nil {
				return false, nil, err
			}
			e.setCharge(a)
		}
		r.counters.move(e.state, Pinned, e.size)
		e.stopLinger()
		e.strong = p
		faultPin(e)
		e.state = Pinned
		e.stateSince = now.UnixNano()
		s.leaks.setWeak(e, false)
	}
	e.addPin(pinSlot{lease: by.ID, since: now.UnixNano()})
	e.access(now.UnixNano())
	r.counters.pins.Add(1)
	r.publish(e, h, EventPinned, by.LeaseID, now)
	e.fillInfo(info, h)
	return false, p, nil
}

// fillInfo sets in, zero, to e.info(h), field by field where the caller
// keeps it: Pin and Unpin built their 224-byte answer and copied it up
// through their calls. TestPeekAgreesWithInfo holds it to info. The
// caller holds the shard's lock.
func (e *entry) fillInfo(in *Info, h string) {
	m := e.meta()
	in.ID, in.Handle, in.Size = e.id, h, e.size
	in.ContentType, in.Labels, in.Linger = m.ContentType, m.Labels, m.Linger
	in.State, in.Pins = e.state, int(e.npins)
	in.Created = time.Unix(0, e.created)
	in.Accessed = time.Unix(0, e.accessed.Load())
	in.StateSince = time.Unix(0, e.stateSince)
	in.Owner = e.ownerName()
	in.LingerUntil = e.lingerUntilTime()
	in.SoftCached = e.has(flagCached)
	if e.state == Weak {
		since := e.weakSince.Load()
		in.WeakGCCycles = int64(uint32(gcNow()) - since) // the clock never goes back
	}
}

// Unpin removes by's pin from the object. It reports pinned=false,
// changing nothing, when by did not pin it. When the last pin goes, the
// object becomes WEAK: from then on only the garbage collector decides.
// Errors: ErrCollected, ErrDeleted (neither can happen to an object that
// by pins, unless an operator force-deleted it).
func (r *Registry) Unpin(id handle.ID, by Holder) (info Info, pinned bool, err error) {
	return r.UnpinHandoff(id, by, 0)
}

// UnpinHandoff is Unpin with a hand-off: the object stays strongly held
// (LINGERING) at least handoff after by lets go, once no lease pins it,
// so that another holder has time to pin it. The caller caps handoff.
func (r *Registry) UnpinHandoff(id handle.ID, by Holder, handoff time.Duration) (info Info, pinned bool, err error) {
	return r.UnpinHandoffParsed(id, "", by, handoff)
}

// UnpinHandoffParsed is UnpinHandoff for a caller that has the handle, as
// PinParsed is Pin.
func (r *Registry) UnpinHandoffParsed(id handle.ID, h string, by Holder, handoff time.Duration) (info Info, pinned bool, err error) {
	s := r.shard(id)
	s.lock()
	defer s.unlock()
	e := s.m.get(id)
	if e == nil {
		return Info{}, false, r.gone(id)
	}
	if h == "" {
		h = r.handleOf(e)
	}
	i := e.pinIndex(by.ID)
	if i < 0 {
		// A single-object answer: by's unpin of an object collected and
		// not yet reaped says ErrCollected, as Resolve would.
		if e.value() == nil {
			return Info{}, false, ErrCollected
		}
		e.fillInfo(&info, h)
		return info, false, nil
	}
	var now time.Time
	if handoff > 0 || e.npins == 1 {
		now = r.now() // a deadline, or the state changes
	} else {
		now = r.clock.time() // only an event's time
	}
	if until := now.Add(handoff); handoff > 0 && until.After(e.extra().handoffUntil) {
		e.x.handoffUntil = until
	}
	e.removePin(i)
	r.counters.pins.Add(-1)
	if e.npins > 0 {
		r.publish(e, h, EventUnpinned, by.LeaseID, now)
		e.fillInfo(&info, h)
		return info, true, nil
	}
	// The last pin went: change state first, so that the UNPINNED event
	// already tells the state after it, then say LINGERING or WEAK.
	e.stateSince = now.UnixNano()
	until := now.Add(e.meta().Linger)
	if e.x != nil {
		e.x.unpinnedAt = e.stateSince
		if e.x.handoffUntil.After(until) {
			until = e.x.handoffUntil
		}
	}
	if d := until.Sub(now); d > 0 {
		r.counters.move(Pinned, Lingering, e.size)
		r.startLinger(e, now, d)
		r.publish(e, h, EventUnpinned, by.LeaseID, now)
		r.publish(e, h, EventLingering, "", now)
		e.fillInfo(&info, h)
		return info, true, nil
	}
	r.counters.move(Pinned, Weak, e.size)
	r.releaseStrong(e.charge(), takeCharge(e))
	faultUnpinned(e.strong)
	e.strong = nil // from here the GC decides
	e.state = Weak
	s.leaks.setWeak(e, true)
	r.publish(e, h, EventUnpinned, by.LeaseID, now)
	r.publish(e, h, EventWeak, "", now)
	e.fillInfo(&info, h)
	return info, true, nil
}
