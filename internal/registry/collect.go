package registry

import (
	"runtime"
	"runtime/metrics"
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

// cleanupWait bounds how long Collect waits for the runtime to run the
// cleanups its collection queued. Reaping one object takes about a
// microsecond, so this is room for millions.
const cleanupWait = 10 * time.Second

// Collect runs a full Go garbage collection and then waits, before it
// returns, until the runtime has run the cleanups that collection queued:
// each collected object's reap, so that the report is exact and Stats,
// List and Resolve agree right after it. (Were the cleanups to take longer
// than cleanupWait, the report counts those that ran.)
//
// It never looks at the objects' weak pointers: a sweep calling Value on
// every unpinned entry would, should another collection be marking at
// that moment (automatic, or another Collect), keep every object it
// reached alive through that collection.
func (r *Registry) Collect() CollectReport {
	start := time.Now()
	before := readRuntime().heapBytes
	objects0, bytes0 := r.counters.collected.Load(), r.counters.collectedBytes.Load()
	// runtime.GC blocks until a complete cycle, sweep included, has run:
	// every unreachable payload's cleanup is queued by then.
	runtime.GC()
	awaitCleanups(time.Now().Add(cleanupWait))
	return CollectReport{
		Objects:    r.counters.collected.Load() - objects0,
		Bytes:      r.counters.collectedBytes.Load() - bytes0,
		Duration:   time.Since(start),
		HeapBefore: before,
		HeapAfter:  readRuntime().heapBytes,
	}
}

// awaitCleanups waits until the runtime has run as many cleanups as it
// had queued when called, or until deadline. The runtime counts both
// (runtime/metrics), and counts a batch as executed once it has run.
func awaitCleanups(deadline time.Time) {
	queued := []metrics.Sample{{Name: "/gc/cleanups/queued:cleanups"}}
	executed := []metrics.Sample{{Name: "/gc/cleanups/executed:cleanups"}}
	metrics.Read(queued)
	if queued[0].Value.Kind() != metrics.KindUint64 {
		return // a runtime without the figures: nothing to wait on
	}
	want := queued[0].Value.Uint64()
	pause := 10 * time.Microsecond
	for {
		metrics.Read(executed)
		if executed[0].Value.Kind() != metrics.KindUint64 || executed[0].Value.Uint64() >= want || time.Now().After(deadline) {
			return
		}
		time.Sleep(pause) // the cleanup goroutines need the CPU more than this loop
		pause = min(2*pause, time.Millisecond)
	}
}
