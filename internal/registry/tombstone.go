package registry

import (
	"sync"

	"github.com/weakref/registry/internal/handle"
)

// tombstones remembers the most recently deleted handles, a bounded number
// of them, oldest forgotten first. A forgotten one resolves as collected.
type tombstones struct {
	mu   sync.Mutex
	set  map[handle.ID]struct{} // guarded by mu
	ring []handle.ID            // guarded by mu; insertion order
	next int                    // guarded by mu; the ring slot to write
}

func newTombstones(n int) *tombstones {
	n = max(n, 0)
	return &tombstones{set: make(map[handle.ID]struct{}, n), ring: make([]handle.ID, 0, n)}
}

func (t *tombstones) add(id handle.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cap(t.ring) == 0 {
		return
	}
	if len(t.ring) < cap(t.ring) {
		t.ring = append(t.ring, id)
	} else {
		delete(t.set, t.ring[t.next])
		t.ring[t.next] = id
		t.next = (t.next + 1) % len(t.ring)
	}
	t.set[id] = struct{}{}
}

func (t *tombstones) has(id handle.ID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.set[id]
	return ok
}
