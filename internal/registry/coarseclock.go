package registry

import (
	"sync"
	"sync/atomic"
	"time"
)

// The registry reads two clocks. What changes an object's state (Put, a
// pin or an unpin that moves it, a linger, a delete) reads Config.Now, as
// it always did: state times and deadlines are exact. What only records
// that something happened - the access time a Resolve hit or a pin leaves,
// a pin's own time and event when the object stays PINNED, the event of an
// unpin that leaves other pins - reads the coarse clock: the latest of
// those readings, or of one a ticker takes every clockTick while the
// registry is in use, for the price of an atomic load. time.Now was a
// fifth of a Resolve hit and a quarter of a Pin and Unpin.
//
// So an access time, and the time of a pin that changes no state, is the
// true one to within about clockTick (later when the ticker's goroutine
// waits for a core), never after it, and never before the object's
// latest state change: the exact readings advance the coarse clock too,
// so the events of one object stay in order of time. A test that sets
// Config.Now gets exact readings everywhere: the coarse clock is for
// time.Now alone.
const (
	clockTick = time.Millisecond
	// clockIdleTicks is how many ticks nobody reads the clock before its
	// goroutine ends; the next reading starts it again.
	clockIdleTicks = 10
	// clockStepBack is how far behind the coarse clock a ticker's reading
	// must be to be taken as the wall clock stepped back, not as a reading
	// that lost a race with a later one.
	clockStepBack = 100 * time.Millisecond
)

type coarseClock struct {
	read   func() time.Time // Config.Now
	coarse bool             // read is time.Now: nano is coarse

	last    atomic.Int64 // unix nanoseconds: the latest reading
	ticking atomic.Bool  // a goroutine is refreshing last
	used    atomic.Bool  // last was read since the goroutine's last tick

	stopOnce sync.Once
	stop     chan struct{} // closed by close: the goroutine ends, and none starts again
}

func newCoarseClock(now func() time.Time) *coarseClock {
	if now == nil {
		return &coarseClock{read: time.Now, coarse: true, stop: make(chan struct{})}
	}
	return &coarseClock{read: now, stop: make(chan struct{})}
}

// now reads the exact clock, Config.Now; the coarse clock is not behind it
// from then on.
func (c *coarseClock) now() time.Time {
	t := c.read()
	if c.coarse {
		c.advance(t.UnixNano())
	}
	return t
}

// nano reads the coarse clock, in unix nanoseconds.
func (c *coarseClock) nano() int64 {
	if !c.coarse {
		return c.read().UnixNano()
	}
	if c.ticking.Load() {
		if !c.used.Load() { // a store only once a tick: readers share the cache line
			c.used.Store(true)
		}
		return c.last.Load()
	}
	return c.start()
}

// time is nano as a time.Time, for events.
func (c *coarseClock) time() time.Time {
	if !c.coarse {
		return c.read()
	}
	return time.Unix(0, c.nano())
}

// start reads the exact clock and starts the ticker, unless closed.
func (c *coarseClock) start() int64 {
	v := c.advance(time.Now().UnixNano())
	select {
	case <-c.stop:
		return v
	default:
	}
	if c.ticking.CompareAndSwap(false, true) {
		go c.tick()
	}
	return v
}

// advance makes last at least v, and returns it.
func (c *coarseClock) advance(v int64) int64 {
	for {
		old := c.last.Load()
		if v <= old {
			return old
		}
		if c.last.CompareAndSwap(old, v) {
			return v
		}
	}
}

// tick refreshes last every clockTick until the clock is closed or nobody
// read it for clockIdleTicks.
func (c *coarseClock) tick() {
	t := time.NewTicker(clockTick)
	defer t.Stop()
	idle := 0
	for {
		select {
		case <-c.stop:
			c.ticking.Store(false)
			return
		case <-t.C:
		}
		v := time.Now().UnixNano()
		if old := c.last.Load(); v < old-int64(clockStepBack) {
			c.last.CompareAndSwap(old, v) // stepped back: follow it
		} else {
			c.advance(v)
		}
		if c.used.Swap(false) {
			idle = 0
		} else if idle++; idle == clockIdleTicks {
			c.ticking.Store(false)
			return
		}
	}
}

// close ends the ticker; readings after it are exact.
func (c *coarseClock) close() {
	c.stopOnce.Do(func() { close(c.stop) })
}
