package registry

import (
	"testing"
	"time"
)

// TestAccessTimeFollowsResolvesOnTheCoarseClock: with time.Now, a Resolve
// hit's access time comes from the coarse clock, which moves on while the
// registry is in use, is never after the resolve nor before the object's
// creation, and whose ticker ends when nobody reads it.
func TestAccessTimeFollowsResolvesOnTheCoarseClock(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	info, _ := put(t, r, 32, 1, Meta{}, &by)
	first := info.Accessed
	var last time.Time
	waitFor(t, 10*time.Second, "the access time never moved on", func() bool {
		obj, err := r.Resolve(info.Handle)
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		last = obj.Info.Accessed
		if last.Before(info.Created) || last.After(after) {
			t.Fatalf("accessed at %v: before its creation at %v or after the resolve returned at %v", last, info.Created, after)
		}
		return last.After(first)
	})
	waitFor(t, 10*time.Second, "the coarse clock's ticker still runs, unread", func() bool {
		return !r.clock.ticking.Load()
	})
	obj, err := r.Resolve(info.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Info.Accessed.Before(last) {
		t.Fatalf("accessed at %v after the ticker stopped, before the earlier %v", obj.Info.Accessed, last)
	}
}

// TestClosedRegistryStartsNoTicker: Close ends the coarse clock's ticker,
// and resolves after it read the clock exactly rather than start another.
func TestClosedRegistryStartsNoTicker(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	info, _ := put(t, r, 32, 1, Meta{}, &by)
	if _, err := r.Resolve(info.Handle); err != nil { // starts the ticker
		t.Fatal(err)
	}
	r.Close()
	waitFor(t, 10*time.Second, "the ticker outlived Close", func() bool { return !r.clock.ticking.Load() })
	before := time.Now()
	obj, err := r.Resolve(info.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if r.clock.ticking.Load() {
		t.Fatal("a resolve after Close started a ticker")
	}
	if obj.Info.Accessed.Before(before) {
		t.Fatalf("accessed at %v, before the resolve began at %v: not an exact reading", obj.Info.Accessed, before)
	}
}

// TestEventTimesOfAnObjectNeverGoBack: an object's events mix exact
// readings (its creation, its last unpin) and coarse ones (pins and
// unpins that change no state); in order of sequence their times never
// decrease, nor do its pins' times precede its state's.
func TestEventTimesOfAnObjectNeverGoBack(t *testing.T) {
	r := newRegistry(t, Config{})
	sub, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	keeper := newHolder(r)
	info, _ := put(t, r, 32, 1, Meta{}, &keeper)
	const rounds = 50
	for range rounds {
		by := newHolder(r)
		pinned := mustPin(t, r, info.ID, by)
		if _, pins, _ := r.Inspect(info.ID); len(pins) != 2 || pins[1].Since.Before(pinned.StateSince) {
			t.Fatalf("pins %+v: the second pinned before the object's state began at %v", pins, pinned.StateSince)
		}
		mustUnpin(t, r, info.ID, by)
	}
	mustUnpin(t, r, info.ID, keeper)
	var last time.Time
	for i := range 2 + 2*rounds + 2 { // CREATED, PINNED, the rounds, UNPINNED, WEAK
		ev := nextEvent(t, sub)
		if ev.Time.Before(last) {
			t.Fatalf("event %d (%v) at %v, before the one before it at %v", i, ev.Kind, ev.Time, last)
		}
		last = ev.Time
	}
	noEvent(t, sub)
}
