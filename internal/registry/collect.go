package registry

import (
	"runtime"
	"time"
)

// CollectReport says what a forced collection freed.
type CollectReport struct {
	Objects    int64
	Bytes      int64
	Duration   time.Duration
	HeapBefore uint64
	HeapAfter  uint64
}

// Collect runs a full Go garbage collection and then reaps, before it
// returns, every object the collector took, so that the report is exact and
// a Resolve right after it answers ErrCollected. (The runtime queues the
// cleanups that would reap them too, but runs them later, on its own
// goroutines; they then find nothing left to do.)
func (r *Registry) Collect() CollectReport {
	start := time.Now()
	before := readRuntime().heapBytes
	objects0, bytes0 := r.counters.collected.Load(), r.counters.collectedBytes.Load()
	// runtime.GC blocks until a complete cycle, sweep included, has run:
	// every weak pointer to an unreachable payload now answers nil.
	runtime.GC()
	r.sweep()
	return CollectReport{
		Objects:    r.counters.collected.Load() - objects0,
		Bytes:      r.counters.collectedBytes.Load() - bytes0,
		Duration:   time.Since(start),
		HeapBefore: before,
		HeapAfter:  readRuntime().heapBytes,
	}
}

// sweep reaps every unpinned object whose payload the collector took.
func (r *Registry) sweep() {
	now := r.now()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, e := range s.m {
			if e.strong == nil && e.weak.Value() == nil {
				r.reapLocked(s, e, now)
			}
		}
		s.mu.Unlock()
	}
}
