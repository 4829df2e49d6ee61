package registry

import (
	"time"

	"github.com/weakref/registry/internal/handle"
)

// reap is the cleanup run by the Go runtime after the collector took the
// payload of object id. It runs on a runtime goroutine: it must be quick.
func (r *Registry) reap(id handle.ID) {
	s := r.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	// The runtime queues the cleanup only once the payload is unreachable,
	// so its weak pointer is nil: there is nothing to check but that the
	// entry is still there (Delete may have removed it) and unpinned.
	if e := s.m[id]; e != nil && e.strong == nil {
		r.reapLocked(s, e, r.now())
	}
}

// reapLocked removes a collected object and publishes its COLLECTED event.
// The caller holds s.mu and has seen e's weak pointer go nil.
func (r *Registry) reapLocked(s *shard, e *entry, now time.Time) {
	delete(s.m, e.id)
	s.index.Delete(itemOf(e))
	s.leaks.setWeak(e, false)
	r.counters.add(e.state, -1, -e.size)
	r.accounts.release(e.owner)
	r.counters.collected.Add(1)
	r.counters.collectedBytes.Add(e.size)
	e.state = Collected
	e.stateSince = now.UnixNano()
	ev := r.event(e, EventCollected, "", now)
	ev.UnpinnedFor = time.Duration(now.UnixNano() - e.unpinnedAt)
	r.emit(ev)
}
