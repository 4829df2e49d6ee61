package registry

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"time"
)

// CollectReport says what a forced collection freed.
type CollectReport struct {
	Objects    int64
	Bytes      int64
	Duration   time.Duration
	HeapBefore uint64
	HeapAfter  uint64

	gcTook time.Duration // of Duration, runtime.GC's part: for benchmarks
}

// cleanupWait bounds how long Collect waits for the runtime to run the
// cleanups its collection queued and for the reaps they queued. Reaping
// one object takes about a microsecond of CPU (BenchmarkCollectAtScale),
// so this is room for millions even on a loaded machine.
const cleanupWait = 10 * time.Second

// Collect runs a full Go garbage collection that starts after the call
// and then waits, before it returns, until the runtime has run the
// cleanups that collection queued: each collected object's reap, so that
// the report is exact and Stats, List and Resolve agree right after it.
// (Were the cleanups and reaps to take longer than cleanupWait, the
// report counts the reaps that ran.)
//
// Forced collections stop the whole process's work, so they are shared
// and spaced: callers that ask while one is running or waiting to start
// share the next one, and its report; it starts no sooner than
// Config.CollectMinInterval, and four times the last one's duration,
// after the last one started. A flood of Collect calls thus costs the
// other clients at most a fifth of the time.
//
// It never looks at the objects' weak pointers: a sweep calling Value on
// every unpinned entry would, should another collection be marking at
// that moment (automatic, or another Collect), keep every object it
// reached alive through that collection.
func (r *Registry) Collect() CollectReport {
	f := &r.forced
	f.mu.Lock()
	rd := f.next
	if rd == nil {
		rd = &collectRound{done: make(chan struct{})}
		f.next = rd
		if !f.leading {
			f.leading = true
			go r.leadCollections()
		}
	}
	f.mu.Unlock()
	<-rd.done
	return rd.report
}

// forcedCollections spaces and shares forced collections (see Collect).
type forcedCollections struct {
	mu        sync.Mutex
	next      *collectRound // the round new callers join; nil when none waits
	leading   bool          // a goroutine is running rounds until none waits
	lastStart time.Time
	lastTook  time.Duration
}

// collectRound is one forced collection and the callers who share it.
type collectRound struct {
	done   chan struct{} // closed once report is set
	report CollectReport
}

// leadCollections runs the waiting rounds, one at a time, each when its
// spacing allows, and ends when none waits. One runs at a time: Collect
// starts it only when none is leading.
func (r *Registry) leadCollections() {
	f := &r.forced
	for {
		f.mu.Lock()
		rd := f.next
		if rd == nil {
			f.leading = false
			f.mu.Unlock()
			return
		}
		wait := time.Until(f.lastStart.Add(max(r.cfg.CollectMinInterval, 4*f.lastTook)))
		f.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait) // spacing, not waiting for a state
		}
		f.mu.Lock()
		f.next = nil // callers from now on need a collection that starts after them
		f.lastStart = time.Now()
		f.mu.Unlock()
		rd.report = r.collectNow()
		f.mu.Lock()
		f.lastTook = rd.report.Duration
		f.mu.Unlock()
		close(rd.done)
	}
}

// collectNow is one forced collection and its report.
func (r *Registry) collectNow() CollectReport {
	start := time.Now()
	before := readRuntime().heapBytes
	objects0, bytes0 := r.counters.collected.Load(), r.counters.collectedBytes.Load()
	// runtime.GC blocks until a complete cycle, sweep included, has run:
	// every unreachable payload's cleanup is queued by then.
	runtime.GC()
	gcTook := time.Since(start)
	deadline := time.Now().Add(cleanupWait)
	awaitCleanups(deadline)
	r.awaitReaps(deadline)
	return CollectReport{
		gcTook:     gcTook,
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
