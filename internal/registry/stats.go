package registry

import (
	"errors"
	"runtime/metrics"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/weakref/registry/internal/handle"
)

const numStates = int(Deleted) + 1

// Miss reasons counted by Resolve, as in Stats.ResolveMisses.
const (
	MissMalformed = "HANDLE_MALFORMED"
	MissUnknown   = "HANDLE_UNKNOWN"
	MissRestarted = "REGISTRY_RESTARTED"
	MissForeign   = "HANDLE_FOREIGN_NODE"
	MissCollected = "OBJECT_COLLECTED"
	MissDeleted   = "OBJECT_DELETED"
)

var missReasons = [...]string{MissMalformed, MissUnknown, MissRestarted, MissForeign, MissCollected, MissDeleted}

// counters are the registry's figures, kept with atomics so that no path
// takes a lock for them.
type counters struct {
	objects [numStates]atomic.Int64
	bytes   [numStates]atomic.Int64

	pins           atomic.Int64
	puts           atomic.Int64
	hits           [hitStripes]paddedCount // see hit
	misses         [len(missReasons)]atomic.Int64
	collected      atomic.Int64
	collectedBytes atomic.Int64
	deleted        atomic.Int64
}

// hitStripes is how many counters the hits are spread over.
const hitStripes = 16

// paddedCount is a counter on a cache line of its own.
type paddedCount struct {
	n atomic.Int64
	_ [56]byte
}

// hit counts n Resolve hits. Every hit adds to a counter, and with one
// counter two cores resolving took turns holding its cache line on every
// call; each goroutine adds to the stripe its stack's address picks, so
// that two rarely share one (a sixteenth of pairs do).
func (c *counters) hit(n int64) {
	var here byte
	// Stacks are at least 8 KiB apart; a goroutine's calls from one place
	// pick one stripe (a stack that grows moves, which only changes it).
	a := uint64(uintptr(unsafe.Pointer(&here))) >> 13
	c.hits[(a*0x9e3779b97f4a7c15)>>60].n.Add(n)
}

func (c *counters) hitCount() int64 {
	var n int64
	for i := range c.hits {
		n += c.hits[i].n.Load()
	}
	return n
}

// add counts n objects of size bytes in state s (n and size negative to
// remove them).
func (c *counters) add(s State, n, size int64) {
	c.objects[s].Add(n)
	c.bytes[s].Add(size)
}

// move counts one object of size bytes going from one state to another.
func (c *counters) move(from, to State, size int64) {
	c.add(from, -1, -size)
	c.add(to, 1, size)
}

func (c *counters) miss(err error) {
	if i := missIndex(err); i >= 0 {
		c.misses[i].Add(1)
	}
}

// missIndex returns the index in missReasons of why Resolve failed with
// err, or -1 if err is not a miss.
func missIndex(err error) int {
	var restarted *handle.RestartedError
	var foreign *handle.ForeignNodeError
	switch {
	case errors.Is(err, handle.ErrMalformed):
		return 0
	case errors.Is(err, handle.ErrUnknown):
		return 1
	case errors.As(err, &restarted):
		return 2
	case errors.As(err, &foreign):
		return 3
	case errors.Is(err, ErrCollected):
		return 4
	case errors.Is(err, ErrDeleted):
		return 5
	}
	return -1
}

// MissReason returns the miss reason (MissCollected, MissUnknown…) that
// Resolve counted for err, or "" if err is not a miss.
func MissReason(err error) string {
	if i := missIndex(err); i >= 0 {
		return missReasons[i]
	}
	return ""
}

// Stats are the registry's figures at one moment. Counts by state are read
// one by one without a lock, so under load they may disagree by the few
// changes in flight.
type Stats struct {
	Objects        map[State]int64
	Bytes          map[State]int64
	Pins           int64
	Puts           int64
	ResolveHits    int64
	ResolveMisses  map[string]int64
	Collected      int64
	CollectedBytes int64
	Deleted        int64
	Watchers       int
	GCCycles       int64
	Epoch          uint64
	EpochStart     time.Time
	MaxObjectBytes int64
	MaxPinnedBytes int64
	// HeldBytes is the bytes MaxPinnedBytes bounds: pinned, lingering and
	// handed off.
	HeldBytes                 int64
	MaxPinnedBytesPerIdentity int64
	SoftCache                 SoftCacheStats
	WatchHistory              HistoryStats
	SuspectedLeaks            int64
}

// Stats returns the registry's figures.
func (r *Registry) Stats() Stats {
	c := &r.counters
	st := Stats{
		Objects:                   make(map[State]int64, 3),
		Bytes:                     make(map[State]int64, 3),
		Pins:                      c.pins.Load(),
		Puts:                      c.puts.Load(),
		ResolveHits:               c.hitCount(),
		ResolveMisses:             make(map[string]int64, len(missReasons)),
		Collected:                 c.collected.Load(),
		CollectedBytes:            c.collectedBytes.Load(),
		Deleted:                   c.deleted.Load(),
		Watchers:                  r.events.count(),
		Epoch:                     r.codec.Epoch(),
		EpochStart:                time.UnixMilli(int64(r.codec.Epoch())),
		MaxObjectBytes:            r.cfg.MaxObjectBytes,
		MaxPinnedBytes:            r.cfg.MaxPinnedBytes,
		HeldBytes:                 r.held.Load(),
		MaxPinnedBytesPerIdentity: r.cfg.MaxPinnedBytesPerIdentity,
		SoftCache:                 r.cache.stats(),
		WatchHistory:              r.events.history(),
		SuspectedLeaks:            r.SuspectedLeaks(),
	}
	for _, s := range []State{Pinned, Lingering, Weak} {
		st.Objects[s] = c.objects[s].Load()
		st.Bytes[s] = c.bytes[s].Load()
	}
	for i, reason := range missReasons {
		st.ResolveMisses[reason] = c.misses[i].Load()
	}
	st.GCCycles = int64(readRuntime().gcCycles)
	return st
}

// runtimeFigures are the Go runtime's figures the registry reports.
type runtimeFigures struct {
	gcCycles  uint64
	heapBytes uint64
}

// readRuntime reads runtime/metrics, which unlike runtime.ReadMemStats
// does not stop the world.
func readRuntime() runtimeFigures {
	samples := []metrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/memory/classes/heap/objects:bytes"},
	}
	metrics.Read(samples)
	var f runtimeFigures
	if samples[0].Value.Kind() == metrics.KindUint64 {
		f.gcCycles = samples[0].Value.Uint64()
	}
	if samples[1].Value.Kind() == metrics.KindUint64 {
		f.heapBytes = samples[1].Value.Uint64()
	}
	return f
}
