// Package registry keeps objects in memory under handles, holding each one
// strongly while a lease pins it and only weakly otherwise, so that the Go
// garbage collector reclaims what nobody pins.
//
// Collection is real garbage collection: an unpinned object's payload is
// referenced only by a weak.Pointer, and runtime.AddCleanup tells the
// registry when the collector took it. The registry publishes every
// lifecycle change as an Event.
//
// The registry knows leases only as Holders: the lease package decides who
// pins what, and the registry counts and keeps the pins.
package registry

import (
	"maps"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/weakref/registry/internal/handle"
)

const shardCount = 64 // a power of two; handle IDs are random, so shards fill evenly

// Config configures a Registry. The zero value of each limit means no
// limit.
type Config struct {
	// Codec mints and verifies object handles. Required.
	Codec *handle.Codec
	// MaxObjectBytes is the largest payload accepted.
	MaxObjectBytes int64
	// MaxPinnedBytes bounds the payload bytes held by pins, summed over
	// pinned objects (an object counts once however many leases pin it).
	MaxPinnedBytes int64
	// Tombstones is how many deleted handles are remembered, to answer
	// ErrDeleted rather than ErrCollected. Default 10000.
	Tombstones int
	// WatchBuffer is how many events a subscriber may fall behind before it
	// is dropped with ErrWatchTooSlow. Default 1024.
	WatchBuffer int
	// WatchHistory is how many of the latest events are kept for watches
	// that resume from a sequence (WatchFrom, WatchAllFrom). Default 10000;
	// negative keeps none.
	WatchHistory int
	// Now returns the current time; tests may set it. Default time.Now.
	Now func() time.Time
	// LeakGCCycles, when positive, is how many garbage collections a WEAK
	// object may survive before it is reported as a suspected leak.
	LeakGCCycles int
	// SoftCacheBytes, when positive, keeps the most recently resolved
	// objects strongly held, up to this many payload bytes, so that an
	// unpinned object in use is not collected between two resolves. The
	// least recently resolved go first.
	SoftCacheBytes int64
	// Observe, when set, is called with every event the registry
	// publishes (never CURRENT), numbered, in the order of Seq for each
	// object. It is called synchronously, with the object's shard lock
	// held, on the goroutine that made the change or on the runtime's
	// cleanup goroutine: it must be quick, must not block, and must not
	// call the Registry. It exists for metrics and tracing; nil costs
	// nothing.
	Observe func(Event)
}

// Registry holds objects. All methods are safe for concurrent use.
// Resolve and Stat take one shard's read lock and nothing else; changes take
// one shard's write lock and, briefly, the event hub's lock to number and
// fan out their events.
//
// The runtime keeps a Registry reachable while any of its objects' cleanups
// is pending, so a registry is meant to live as long as its process.
type Registry struct {
	codec   *handle.Codec
	cfg     Config
	now     func() time.Time
	observe func(Event) // cfg.Observe; nil when none
	shards  [shardCount]shard
	events  *hub
	tombs   *tombstones
	cache   *softCache // nil when off

	counters counters
}

// shard is one slice of the object map.
type shard struct {
	mu sync.RWMutex
	m  map[handle.ID]*entry // guarded by mu
	_  [40]byte             // keep neighbouring shards' locks off one cache line
}

// New returns an empty registry.
func New(cfg Config) *Registry {
	if cfg.Codec == nil {
		panic("registry: Config.Codec is required")
	}
	if cfg.Tombstones == 0 {
		cfg.Tombstones = 10000
	}
	if cfg.WatchBuffer <= 0 {
		cfg.WatchBuffer = 1024
	}
	if cfg.WatchHistory == 0 {
		cfg.WatchHistory = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Registry{
		codec:   cfg.Codec,
		cfg:     cfg,
		now:     cfg.Now,
		observe: cfg.Observe,
		events:  newHub(cfg.WatchBuffer, cfg.WatchHistory),
		tombs:   newTombstones(cfg.Tombstones),
	}
	for i := range r.shards {
		r.shards[i].m = make(map[handle.ID]*entry)
	}
	if cfg.SoftCacheBytes > 0 {
		r.cache = newSoftCache(cfg.SoftCacheBytes)
	}
	return r
}

// Close ends every subscription. Objects stay resolvable; Close exists so
// that watchers learn the registry is going away.
func (r *Registry) Close() {
	r.events.close()
}

func (r *Registry) shard(id handle.ID) *shard {
	return &r.shards[id[0]&(shardCount-1)]
}

// Epoch returns this run's epoch: the one in its handles and lease ids,
// and the one its event sequences belong to.
func (r *Registry) Epoch() uint64 { return r.codec.Epoch() }

// Parse verifies an object handle and returns its ID. Errors are those of
// handle.Codec.Parse.
func (r *Registry) Parse(h string) (handle.ID, error) {
	return r.codec.Parse(handle.Object, h)
}

// Put stores a copy-free reference to data and returns the new object's
// metadata. The registry keeps data as it is: the caller must not modify
// it afterwards. With by non-nil, the object is pinned by that lease from
// its first moment; otherwise it starts LINGERING if meta.Linger asks,
// else WEAK.
func (r *Registry) Put(data []byte, meta Meta, by *Holder) (Info, error) {
	return r.PutPayload(Payload{Data: data}, meta, by)
}

// PutPayload is Put for a payload in pieces, as an upload delivers it.
func (r *Registry) PutPayload(pl Payload, meta Meta, by *Holder) (Info, error) {
	if len(pl.Data) == 0 && len(pl.More) > 0 {
		pl.Data, pl.More = pl.More[0], pl.More[1:]
	}
	size := pl.Size()
	if size == 0 {
		return Info{}, ErrPayloadEmpty
	}
	if max := r.cfg.MaxObjectBytes; max > 0 && size > max {
		return Info{}, &LimitError{Limit: LimitObjectSize, Max: max, Want: size}
	}
	if err := ValidateLabels(meta.Labels); err != nil {
		return Info{}, err
	}
	meta.Labels = maps.Clone(meta.Labels) // the caller's map stays the caller's
	if by != nil {
		if err := r.reservePinned(size); err != nil {
			return Info{}, err
		}
	}
	now := r.now()
	nowNano := now.UnixNano()
	p := &payload{data: pl.Data, more: pl.More}
	id, h := r.codec.New(handle.Object)
	e := &entry{
		id:         id,
		handle:     h,
		size:       size,
		meta:       meta,
		created:    nowNano,
		weak:       weak.Make(p),
		state:      Weak,
		stateSince: nowNano,
		weakSince:  gcNow(),
		unpinnedAt: nowNano,
	}
	e.accessed.Store(nowNano)
	if pl.CRCKnown {
		e.crc.Store(uint64(pl.CRC32C) | crcKnown)
	}
	// The cleanup's argument is the ID, never p: a cleanup that reached its
	// object would keep it alive forever.
	runtime.AddCleanup(p, r.reap, id)

	s := r.shard(id)
	s.mu.Lock()
	s.m[id] = e
	r.counters.puts.Add(1)
	if by != nil {
		e.strong = p
		e.state = Pinned
		e.pins = append(e.pins, Pin{Lease: by.ID, LeaseID: by.LeaseID, Since: now})
		r.counters.add(Pinned, 1, size)
		r.counters.pins.Add(1)
		// CREATED reports the pinned state: the object is never WEAK.
		r.publish(e, EventCreated, "", now)
		r.publish(e, EventPinned, by.LeaseID, now)
	} else if meta.Linger > 0 {
		e.strong = p
		r.startLinger(e, now, meta.Linger)
		r.counters.add(Lingering, 1, size)
		r.publish(e, EventCreated, "", now)
		r.publish(e, EventLingering, "", now)
	} else {
		r.counters.add(Weak, 1, size)
		r.publish(e, EventCreated, "", now)
		r.publish(e, EventWeak, "", now)
	}
	info := e.info()
	s.mu.Unlock()
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
func (r *Registry) Resolve(h string) (Object, error) {
	id, err := r.Parse(h)
	if err != nil {
		r.counters.miss(err)
		return Object{}, err
	}
	s := r.shard(id)
	s.mu.RLock()
	e := s.m[id]
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
	e.accessed.Store(r.now().UnixNano())
	obj := Object{Data: p.data, More: p.more, Info: e.info()}
	obj.crc, obj.crcKnown = e.checksum()
	s.mu.RUnlock()
	r.counters.hits.Add(1)
	if r.cache != nil {
		obj.Info.SoftCached = r.cache.touch(e, p)
	}
	return obj, nil
}

// RecordChecksum remembers the CRC-32C of a live object's payload, as a
// download computed it, for the downloads after it. The caller vouches
// for crc; an object already gone is ignored.
func (r *Registry) RecordChecksum(id handle.ID, crc uint32) {
	s := r.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if e := s.m[id]; e != nil {
		e.crc.Store(uint64(crc) | crcKnown)
	}
}

// Stat returns an object's metadata. Errors as Resolve.
func (r *Registry) Stat(h string) (Info, error) {
	id, err := r.Parse(h)
	if err != nil {
		return Info{}, err
	}
	return r.StatID(id)
}

// StatID is Stat for a parsed handle.
func (r *Registry) StatID(id handle.ID) (Info, error) {
	s := r.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := r.live(s, id)
	if err != nil {
		return Info{}, err
	}
	info := e.info()
	r.judge(&info)
	return info, nil
}

// live returns the entry of id if its object is still alive, or why not.
// The caller holds s.mu (read or write).
func (r *Registry) live(s *shard, id handle.ID) (*entry, error) {
	e := s.m[id]
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
	s := r.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	info, already, _, err = r.pinLocked(s, id, by)
	return info, already, err
}

// pinLocked is Pin under s.mu, also returning the payload it holds.
func (r *Registry) pinLocked(s *shard, id handle.ID, by Holder) (info Info, already bool, p *payload, err error) {
	e := s.m[id]
	if e == nil {
		return Info{}, false, nil, r.gone(id)
	}
	if e.pinIndex(by.ID) >= 0 {
		return e.info(), true, e.strong, nil
	}
	now := r.now()
	p = e.strong // pinned or lingering
	if e.state != Pinned {
		if p == nil {
			p = e.weak.Value()
		}
		if p == nil {
			// Collected; its cleanup has not run yet. Reap it now so
			// that every observer agrees from here on.
			r.reapLocked(s, e, now)
			return Info{}, false, nil, ErrCollected
		}
		if err := r.reservePinned(e.size); err != nil {
			return Info{}, false, nil, err
		}
		r.counters.move(e.state, Pinned, e.size)
		e.stopLinger()
		e.strong = p
		faultPin(e)
		e.state = Pinned
		e.stateSince = now.UnixNano()
	}
	e.pins = append(e.pins, Pin{Lease: by.ID, LeaseID: by.LeaseID, Since: now})
	e.accessed.Store(now.UnixNano())
	r.counters.pins.Add(1)
	r.publish(e, EventPinned, by.LeaseID, now)
	return e.info(), false, p, nil
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
	s := r.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[id]
	if e == nil {
		return Info{}, false, r.gone(id)
	}
	i := e.pinIndex(by.ID)
	if i < 0 {
		if e.value() == nil {
			return Info{}, false, ErrCollected
		}
		return e.info(), false, nil
	}
	now := r.now()
	if handoff > 0 {
		e.handoffUntil = max(e.handoffUntil, now.Add(handoff).UnixNano())
	}
	e.pins = append(e.pins[:i], e.pins[i+1:]...)
	r.counters.pins.Add(-1)
	if len(e.pins) > 0 {
		r.publish(e, EventUnpinned, by.LeaseID, now)
		return e.info(), true, nil
	}
	// The last pin went: change state first, so that the UNPINNED event
	// already tells the state after it, then say LINGERING or WEAK.
	e.pins = nil
	r.releasePinned(e.size)
	e.stateSince = now.UnixNano()
	e.unpinnedAt = now.UnixNano()
	if until := max(now.Add(e.meta.Linger).UnixNano(), e.handoffUntil); until > now.UnixNano() {
		r.counters.move(Pinned, Lingering, e.size)
		r.startLinger(e, now, time.Duration(until-now.UnixNano()))
		r.publish(e, EventUnpinned, by.LeaseID, now)
		r.publish(e, EventLingering, "", now)
		return e.info(), true, nil
	}
	r.counters.move(Pinned, Weak, e.size)
	faultUnpinned(e.strong)
	e.strong = nil // from here the GC decides
	e.state = Weak
	e.weakSince = gcNow()
	r.publish(e, EventUnpinned, by.LeaseID, now)
	r.publish(e, EventWeak, "", now)
	return e.info(), true, nil
}

// startLinger makes e LINGERING until now+d: held strongly, then WEAK. The
// caller holds e's shard lock and has set e.strong.
func (r *Registry) startLinger(e *entry, now time.Time, d time.Duration) {
	e.state = Lingering
	e.stateSince = now.UnixNano()
	e.lingerUntil = now.Add(d).UnixNano()
	id := e.id // the timer must not reach the payload
	e.lingerTimer = time.AfterFunc(d, func() { r.endLinger(id) })
}

// stopLinger stops e's linger timer, if any. The caller holds e's shard
// lock.
func (e *entry) stopLinger() {
	if e.lingerTimer != nil {
		e.lingerTimer.Stop()
		e.lingerTimer = nil
	}
}

// endLinger makes a LINGERING object WEAK once its linger is over. A
// timer calls it; by then the object may be pinned again, or gone.
func (r *Registry) endLinger(id handle.ID) {
	s := r.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[id]
	if e == nil || e.state != Lingering {
		return
	}
	now := r.now()
	if left := time.Duration(e.lingerUntil - now.UnixNano()); left > 0 {
		e.lingerTimer = time.AfterFunc(left, func() { r.endLinger(id) }) // a clock that runs slow
		return
	}
	e.lingerTimer = nil
	r.counters.move(Lingering, Weak, e.size)
	e.strong = nil // from here the GC decides
	e.state = Weak
	e.stateSince = now.UnixNano()
	e.weakSince = gcNow()
	r.publish(e, EventWeak, "", now)
}

// Delete removes an object at once. A pinned object is removed only with
// force; then its pins are dropped and returned so the caller can tell
// their leases. Errors: ErrCollected, ErrDeleted, ErrPinned.
func (r *Registry) Delete(id handle.ID, force bool) (Info, []Pin, error) {
	s := r.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := r.live(s, id)
	if err != nil {
		return Info{}, nil, err
	}
	info := e.info()
	if len(e.pins) > 0 && !force {
		return info, append([]Pin(nil), e.pins...), ErrPinned
	}
	pins := e.pins
	now := r.now()
	delete(s.m, id)
	r.tombs.add(id)
	r.counters.add(e.state, -1, -e.size)
	if e.state == Pinned {
		r.releasePinned(e.size)
	}
	r.counters.pins.Add(-int64(len(pins)))
	r.counters.deleted.Add(1)
	e.stopLinger()
	e.removed.Store(true)
	if r.cache != nil {
		r.cache.remove(e)
	}
	e.strong, e.pins = nil, nil
	e.state = Deleted
	e.stateSince = now.UnixNano()
	r.publish(e, EventDeleted, "", now)
	return info, pins, nil
}

// reap is the cleanup run by the Go runtime after the collector took the
// payload of object id. It runs on a runtime goroutine: it must be quick.
func (r *Registry) reap(id handle.ID) {
	s := r.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[id]; e != nil && e.strong == nil && e.weak.Value() == nil {
		r.reapLocked(s, e, r.now())
	}
}

// reapLocked removes a collected object and publishes its COLLECTED event.
// The caller holds s.mu and has seen e's weak pointer go nil.
func (r *Registry) reapLocked(s *shard, e *entry, now time.Time) {
	delete(s.m, e.id)
	r.counters.add(e.state, -1, -e.size)
	r.counters.collected.Add(1)
	r.counters.collectedBytes.Add(e.size)
	e.state = Collected
	e.stateSince = now.UnixNano()
	ev := r.event(e, EventCollected, "", now)
	ev.UnpinnedFor = time.Duration(now.UnixNano() - e.unpinnedAt)
	r.emit(ev)
}

// publish sends e's event. The caller holds e's shard lock.
func (r *Registry) publish(e *entry, kind EventKind, lease string, now time.Time) {
	r.emit(r.event(e, kind, lease, now))
}

// emit numbers ev, delivers it to subscribers, then to the observer. The
// caller holds ev's object's shard lock.
func (r *Registry) emit(ev Event) {
	ev.Seq = r.events.publish(ev)
	if r.observe != nil {
		r.observe(ev)
	}
}

func (r *Registry) event(e *entry, kind EventKind, lease string, now time.Time) Event {
	return Event{
		Kind:    kind,
		ID:      e.id,
		Handle:  e.handle,
		State:   e.state,
		Pins:    len(e.pins),
		Size:    e.size,
		LeaseID: lease,
		Time:    now,
	}
}

// reservePinned accounts size more pinned bytes, or fails if that would
// pass MaxPinnedBytes.
func (r *Registry) reservePinned(size int64) error {
	max := r.cfg.MaxPinnedBytes
	for {
		cur := r.counters.bytes[Pinned].Load()
		if max > 0 && cur+size > max {
			return &LimitError{Limit: LimitPinnedBytes, Max: max, Want: cur + size}
		}
		if r.counters.bytes[Pinned].CompareAndSwap(cur, cur+size) {
			return nil
		}
	}
}

func (r *Registry) releasePinned(size int64) { r.counters.bytes[Pinned].Add(-size) }
