package registry

import "sync"

// MaxLeakGCCycles is the largest Config.LeakGCCycles; more is read as
// this. The leak book keeps a counter per cycle of the window.
const MaxLeakGCCycles = 1024

// leakBook counts one shard's leak candidates, so that Stats reports
// suspected leaks in O(1) without touching an entry, let alone a payload.
//
// A candidate is an entry that is WEAK and not held by the soft cache.
// Its weak age starts when it becomes one (it became WEAK, or left the
// soft cache while WEAK: an object just evicted has not yet had a chance
// to be collected) and is counted in GC cycles on the GC clock. It is a
// suspected leak once its age reaches n = Config.LeakGCCycles.
//
// The book counts candidates by the GC tick their age started in: ring
// holds the ticks at-n+1 .. at, tick t at ring[t%n], and old the
// candidates that started at or before at-n, which are the suspected
// leaks. As the clock moves on, the ticks that fall out of the window are
// folded into old. Every change and every read is O(1) (a fold is at most
// n steps, and one step per tick in all).
//
// Lock order: shard.mu, then softCache.mu, then leakBook.mu. The shard's
// transitions call setWeak under the shard's lock, the soft cache calls
// setCached under its own: mu makes the two agree on each entry.
type leakBook struct {
	mu   sync.Mutex
	n    uint64  // Config.LeakGCCycles; 0: count nothing, keep ages only
	at   uint64  // guarded by mu: the GC tick the ring is folded to
	ring []int64 // guarded by mu: candidates by starting tick, in the window
	old  int64   // guarded by mu: candidates at least n cycles old
}

func (b *leakBook) init(n int) {
	if n > 0 {
		b.n = uint64(min(n, MaxLeakGCCycles))
		b.ring = make([]int64, b.n)
	}
}

// fold moves the window on to now. b.mu is held.
func (b *leakBook) fold(now uint64) {
	if b.n == 0 || now <= b.at {
		return
	}
	steps := min(now-b.at, b.n)
	for t := b.at + 1; t <= b.at+steps; t++ {
		// Slot t%n held tick t-n, which is at least n cycles before now.
		i := t % b.n
		b.old += b.ring[i]
		b.ring[i] = 0
	}
	b.at = now
}

// setWeak records that e's state became WEAK (weak true) or left it. The
// caller holds e's shard lock and has set e.state.
func (b *leakBook) setWeak(e *entry, weak bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setWeakLocked(e, weak)
}

// leaveWeak is setWeak(e, false) for each of es under one hold of b.mu,
// as a reap of a chunk does: a lock per object was a tenth of the reap.
func (b *leakBook) leaveWeak(es []*entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range es {
		b.setWeakLocked(e, false)
	}
}

// setWeakLocked is setWeak with b.mu held.
func (b *leakBook) setWeakLocked(e *entry, weak bool) {
	if e.has(flagLeakWeak) == weak {
		return
	}
	e.set(flagLeakWeak, weak)
	now := gcNow() // read under mu: never behind b.at, read under mu before
	if weak {
		e.weakSince.Store(uint32(now)) // its weak age starts, cached or not
	}
	b.update(e, now)
}

// setCached records that the soft cache took e in (cached true) or let
// it go. The caller holds the cache's lock.
func (b *leakBook) setCached(e *entry, cached bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.has(flagLeakCached) == cached {
		return
	}
	e.set(flagLeakCached, cached)
	now := gcNow()
	if !cached && e.has(flagLeakWeak) {
		// Nothing held it but the cache: its age starts now.
		e.weakSince.Store(uint32(now))
	}
	b.update(e, now)
}

// update counts e in or out as its flags now say; now is the GC clock,
// read under b.mu. b.mu is held.
func (b *leakBook) update(e *entry, now uint64) {
	want := e.has(flagLeakWeak) && !e.has(flagLeakCached) && b.n > 0
	if want == e.has(flagLeakCounted) {
		return
	}
	e.set(flagLeakCounted, want)
	b.fold(now)
	if want {
		// The caller has just set e.weakSince to now: it changes only as
		// an entry becomes a candidate, so while counted it is the tick
		// the entry is counted under.
		b.ring[now%b.n]++
		return
	}
	// Its age in cycles, from the low 32 bits weakSince keeps: at is
	// never behind the tick it started.
	if age := uint64(uint32(b.at) - e.weakSince.Load()); age >= b.n {
		b.old--
	} else {
		b.ring[(b.at-age)%b.n]--
	}
}

// suspected returns how many of the shard's candidates are suspected
// leaks now.
func (b *leakBook) suspected() int64 {
	if b.n == 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fold(gcNow())
	return b.old
}
