package registry

import (
	"time"

	"github.com/weakref/registry/internal/handle"
)

// startLinger makes e LINGERING until now+d: held strongly, then WEAK. The
// caller holds e's shard lock and has set e.strong.
func (r *Registry) startLinger(e *entry, now time.Time, d time.Duration) {
	e.state = Lingering
	e.stateSince = now.UnixNano()
	x := e.extra()
	x.lingerUntil = now.Add(d)
	id := e.id // the timer must not reach the payload
	x.lingerTimer = time.AfterFunc(d, func() { r.endLinger(id) })
}

// stopLinger stops e's linger timer, if any. The caller holds e's shard
// lock.
func (e *entry) stopLinger() {
	if e.x != nil && e.x.lingerTimer != nil {
		e.x.lingerTimer.Stop()
		e.x.lingerTimer = nil
	}
}

// endLinger makes a LINGERING object WEAK once its linger is over. A
// timer calls it; by then the object may be pinned again, or gone.
func (r *Registry) endLinger(id handle.ID) {
	s := r.shard(id)
	s.lock()
	defer s.unlock()
	e := s.m.get(id)
	if e == nil || e.state != Lingering {
		return
	}
	now := r.now()
	if left := e.x.lingerUntil.Sub(now); left > 0 {
		e.x.lingerTimer = time.AfterFunc(left, func() { r.endLinger(id) }) // a clock that runs slow
		return
	}
	e.x.lingerTimer = nil
	r.counters.move(Lingering, Weak, e.size)
	r.releaseStrong(e.charge(), takeCharge(e))
	e.strong = nil // from here the GC decides
	e.state = Weak
	e.stateSince = now.UnixNano()
	s.leaks.setWeak(e, true)
	r.publish(e, r.handleOf(e), EventWeak, "", now)
}
