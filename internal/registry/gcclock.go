package registry

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// The GC clock counts the garbage collector's cycles as they finish, so
// that an object can say how many it survived while weak at the cost of
// one atomic load. It is process-wide, as the collector is: a sentinel
// object with a cleanup that counts a tick and makes the next sentinel.
// A tick may come a little after its cycle, and two cycles before the
// cleanup goroutine runs count once: the count never runs ahead, so
// "survived N cycles" is never overstated.

var (
	gcTicks     atomic.Uint64
	gcClockOnce sync.Once
)

// gcSentinel holds a pointer so that the tiny allocator never packs it
// with other objects, which would delay its collection.
type gcSentinel struct {
	_ *int
	_ [48]byte
}

func armGCClock() {
	runtime.AddCleanup(new(gcSentinel), func(struct{}) {
		gcTicks.Add(1)
		armGCClock()
	}, struct{}{})
}

// gcNow returns the GC clock, starting it on first use.
func gcNow() uint64 {
	gcClockOnce.Do(armGCClock)
	return gcTicks.Load()
}
