package registry

import (
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// timeLayout is time.Time's fields as Go 1.26 lays them out.
type timeLayout struct {
	wall uint64 // hasMonotonic, 33 bits of seconds since 1885, 30 of nanoseconds
	ext  int64  // the monotonic reading, when wall has hasMonotonic
	loc  *time.Location
}

// wallStepped returns t, a time.Now reading, with its wall clock moved by
// d (whole seconds) and its monotonic reading kept: what time.Now returns
// after the system clock is stepped by d. checkWallStepped checks that
// time.Time is laid out as it expects.
func wallStepped(t time.Time, d time.Duration) time.Time {
	const nsecShift = 30
	p := (*timeLayout)(unsafe.Pointer(&t))
	p.wall += uint64(int64(d/time.Second)) << nsecShift
	return t
}

func checkWallStepped(t testing.TB) {
	t.Helper()
	const hasMonotonic = 1 << 63
	now := time.Now()
	if unsafe.Sizeof(now) != unsafe.Sizeof(timeLayout{}) || (*timeLayout)(unsafe.Pointer(&now)).wall&hasMonotonic == 0 {
		t.Fatal("time.Time is not laid out as wallStepped expects")
	}
	out := wallStepped(now, -time.Hour)
	if out.Sub(now) != 0 || out.Round(0).Sub(now.Round(0)) != -time.Hour {
		t.Fatalf("wallStepped moved the monotonic reading by %v and the wall clock by %v; want 0 and -1h",
			out.Sub(now), out.Round(0).Sub(now.Round(0)))
	}
}

// steppedClock is time.Now with a wall clock that a test can step.
type steppedClock struct{ step atomic.Int64 }

func (c *steppedClock) Now() time.Time {
	return wallStepped(time.Now(), time.Duration(c.step.Load()))
}

// TestDeadlinesIgnoreWallClockSteps: a linger and a hand-off end after
// their duration on the monotonic clock, though the wall clock is stepped
// back an hour while they run.
func TestDeadlinesIgnoreWallClockSteps(t *testing.T) {
	checkWallStepped(t)
	for _, tt := range []struct {
		name  string
		start func(r *Registry) Info
	}{
		{"linger", func(r *Registry) Info {
			info, _ := put(t, r, 32, 1, Meta{Linger: testLinger}, nil)
			return info
		}},
		{"hand-off", func(r *Registry) Info {
			by := newHolder(r)
			info, _ := put(t, r, 32, 1, Meta{}, &by)
			if _, _, err := r.UnpinHandoff(info.ID, by, testLinger); err != nil {
				t.Fatal(err)
			}
			return info
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := &steppedClock{}
			r := newRegistry(t, Config{Now: clock.Now})
			sub, err := r.WatchAll(EventLingering, EventWeak)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			start := time.Now()
			info := tt.start(r)
			if ev := awaitEvent(t, sub); ev.Kind != EventLingering || ev.ID != info.ID {
				t.Fatalf("first event %v, want LINGERING", ev.Kind)
			}
			clock.step.Store(int64(-time.Hour))
			if ev := awaitEvent(t, sub); ev.Kind != EventWeak || ev.ID != info.ID {
				t.Fatalf("second event %v, want WEAK", ev.Kind)
			}
			if took := time.Since(start); took < testLinger {
				t.Fatalf("WEAK after %v, before the deadline of %v", took, testLinger)
			}
		})
	}
}
