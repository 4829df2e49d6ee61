package registry

import (
	"testing"
	"time"
)

// testLinger is short, so that tests that wait for a linger's end are
// quick. Tests that must see an object still lingering use a fakeClock
// instead of hoping to be fast: the registry's linger timer re-arms
// itself while Config.Now says the deadline is still ahead, so an object
// lingers until the test advances the clock, however slow the machine.
const testLinger = 100 * time.Millisecond

// awaitEvent waits for sub's next event, failing after a few seconds: for
// changes made by a timer rather than by the test.
func awaitEvent(t testing.TB, sub *Subscription) Event {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case ev := <-sub.Events():
		return ev
	case <-sub.Done():
		t.Fatalf("subscription ended: %v", sub.Err())
	case <-timer.C:
		t.Fatal("no event within 5s")
	}
	return Event{}
}

// counts is what Stats should say of one state: objects and their bytes.
type counts struct{ objects, bytes int64 }

// wantCounts checks Stats' objects and bytes by state; a state missing
// from want must be empty.
func wantCounts(t testing.TB, r *Registry, want map[State]counts) {
	t.Helper()
	st := r.Stats()
	for _, s := range []State{Pinned, Lingering, Weak} {
		if got := (counts{st.Objects[s], st.Bytes[s]}); got != want[s] {
			t.Fatalf("%v: %d objects of %d bytes, want %d of %d (all: objects %v bytes %v)",
				s, got.objects, got.bytes, want[s].objects, want[s].bytes, st.Objects, st.Bytes)
		}
	}
}

// wantState checks Stat of info's object: its state, pins and, while
// LINGERING, its deadline.
func wantState(t testing.TB, r *Registry, info Info, state State, pins int, lingerUntil time.Time) {
	t.Helper()
	got, err := r.Stat(info.Handle)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if got.State != state || got.Pins != pins || !got.LingerUntil.Equal(lingerUntil) {
		t.Fatalf("Stat = %v with %d pins, linger until %v; want %v with %d, until %v",
			got.State, got.Pins, got.LingerUntil, state, pins, lingerUntil)
	}
}

// collectNothing forces a collection that must free nothing.
func collectNothing(t testing.TB, r *Registry) {
	t.Helper()
	if rep := r.Collect(); rep.Objects != 0 {
		t.Fatalf("Collect freed %d objects, want none", rep.Objects)
	}
}

// collectIt forces a collection that must free exactly info's object and
// publish its COLLECTED event on sub (a WatchAll), which says it had been
// unpinned for unpinnedFor.
func collectIt(t testing.TB, r *Registry, sub *Subscription, info Info, unpinnedFor time.Duration) {
	t.Helper()
	if rep := r.Collect(); rep.Objects != 1 || rep.Bytes != info.Size {
		t.Fatalf("Collect report = %+v; want 1 object of %d bytes", rep, info.Size)
	}
	checkEvent(t, nextEvent(t, sub), wantEvent{kind: EventCollected, info: info, state: Collected, unpinnd: unpinnedFor})
	wantGone(t, r, info.Handle, ErrCollected)
}

// TestLingerLifecycle walks objects with a linger through each way into
// and out of LINGERING: every event, Stat, and the figures by state at
// each step, and the registry empty at the end.
func TestLingerLifecycle(t *testing.T) {
	const size = 700
	type step struct {
		clock *fakeClock
		r     *Registry
		sub   *Subscription
		by    Holder
	}
	// lingerThenCollect checks a LINGERING object until the test's clock
	// passes its deadline, then its WEAK event and its collection.
	lingerThenCollect := func(t *testing.T, s step, info Info, until time.Time) {
		t.Helper()
		wantState(t, s.r, info, Lingering, 0, until)
		collectNothing(t, s.r)
		s.clock.Advance(until.Sub(s.clock.Now())) // exactly the deadline: over
		ev := awaitEvent(t, s.sub)
		checkEvent(t, ev, wantEvent{kind: EventWeak, info: info, state: Weak})
		if !ev.Time.Equal(until) {
			t.Fatalf("WEAK at %v, want at the deadline %v", ev.Time, until)
		}
		wantState(t, s.r, info, Weak, 0, time.Time{})
		wantCounts(t, s.r, map[State]counts{Weak: {1, size}})
		// Collected at the deadline, one linger after it was let go.
		collectIt(t, s.r, s.sub, info, testLinger)
	}
	tests := []struct {
		name string
		run  func(t *testing.T, s step)
	}{
		{"put without a lease lingers, then goes weak", func(t *testing.T, s step) {
			info, want := put(t, s.r, size, 1, Meta{Linger: testLinger}, nil)
			until := s.clock.Now().Add(testLinger)
			if info.State != Lingering || info.Linger != testLinger || !info.LingerUntil.Equal(until) {
				t.Fatalf("Put = %v, linger %v until %v; want LINGERING, %v until %v", info.State, info.Linger, info.LingerUntil, testLinger, until)
			}
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventCreated, info: info, state: Lingering})
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventLingering, info: info, state: Lingering})
			wantCounts(t, s.r, map[State]counts{Lingering: {1, size}})
			mustResolve(t, s.r, info.Handle, want)
			lingerThenCollect(t, s, info, until)
		}},
		{"last unpin lingers, then goes weak", func(t *testing.T, s step) {
			info, want := put(t, s.r, size, 2, Meta{Linger: testLinger}, &s.by)
			if info.State != Pinned || !info.LingerUntil.IsZero() || info.Linger != testLinger {
				t.Fatalf("Put with a holder = %v, linger %v until %v; want PINNED, %v, no deadline", info.State, info.Linger, info.LingerUntil, testLinger)
			}
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventCreated, info: info, state: Pinned, pins: 1})
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventPinned, info: info, state: Pinned, pins: 1, lease: s.by.LeaseID})
			wantCounts(t, s.r, map[State]counts{Pinned: {1, size}})
			collectNothing(t, s.r)

			s.clock.Advance(time.Second)
			got := mustUnpin(t, s.r, info.ID, s.by)
			until := s.clock.Now().Add(testLinger)
			if got.State != Lingering || !got.LingerUntil.Equal(until) {
				t.Fatalf("last Unpin = %v until %v; want LINGERING until %v", got.State, got.LingerUntil, until)
			}
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventUnpinned, info: info, state: Lingering, lease: s.by.LeaseID})
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventLingering, info: info, state: Lingering})
			wantCounts(t, s.r, map[State]counts{Lingering: {1, size}})
			if st := s.r.Stats(); st.Pins != 0 {
				t.Fatalf("Stats.Pins = %d after the last unpin", st.Pins)
			}
			mustResolve(t, s.r, info.Handle, want)
			lingerThenCollect(t, s, info, until)
		}},
		{"pin during linger holds it past the deadline; unpin lingers again", func(t *testing.T, s step) {
			info, want := put(t, s.r, size, 3, Meta{Linger: testLinger}, nil)
			firstUntil := s.clock.Now().Add(testLinger)
			nextEvent(t, s.sub) // CREATED
			nextEvent(t, s.sub) // LINGERING
			got := mustPin(t, s.r, info.ID, s.by)
			if got.State != Pinned || !got.LingerUntil.IsZero() {
				t.Fatalf("Pin during linger = %v until %v; want PINNED, no deadline", got.State, got.LingerUntil)
			}
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventPinned, info: info, state: Pinned, pins: 1, lease: s.by.LeaseID})
			wantCounts(t, s.r, map[State]counts{Pinned: {1, size}})

			// Let the first linger's deadline pass, in the registry's clock
			// and in real time: a marker put after the pin lingers as long
			// and ends later, so once its WEAK arrives the first linger's
			// timer is over too, had it not been stopped.
			marker, _ := put(t, s.r, 10, 4, Meta{Linger: testLinger}, nil)
			nextEvent(t, s.sub) // CREATED
			nextEvent(t, s.sub) // LINGERING
			s.clock.Advance(2 * testLinger)
			checkEvent(t, awaitEvent(t, s.sub), wantEvent{kind: EventWeak, info: marker, state: Weak})
			if !s.clock.Now().After(firstUntil) {
				t.Fatal("test bug: the first deadline is not over")
			}
			wantState(t, s.r, info, Pinned, 1, time.Time{})
			if _, _, err := s.r.Delete(marker.ID, false); err != nil {
				t.Fatal(err)
			}
			nextEvent(t, s.sub) // DELETED
			noEvent(t, s.sub)
			collectNothing(t, s.r)
			mustResolve(t, s.r, info.Handle, want)
			wantCounts(t, s.r, map[State]counts{Pinned: {1, size}})

			got = mustUnpin(t, s.r, info.ID, s.by)
			until := s.clock.Now().Add(testLinger)
			if got.State != Lingering || !got.LingerUntil.Equal(until) {
				t.Fatalf("Unpin = %v until %v; want LINGERING again, until %v", got.State, got.LingerUntil, until)
			}
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventUnpinned, info: info, state: Lingering, lease: s.by.LeaseID})
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventLingering, info: info, state: Lingering})
			wantCounts(t, s.r, map[State]counts{Lingering: {1, size}})
			lingerThenCollect(t, s, info, until)
		}},
		{"delete during linger ends it with no WEAK after", func(t *testing.T, s step) {
			info, _ := put(t, s.r, size, 5, Meta{Linger: testLinger}, nil)
			nextEvent(t, s.sub) // CREATED
			nextEvent(t, s.sub) // LINGERING
			del, pins, err := s.r.Delete(info.ID, false)
			if err != nil || len(pins) != 0 || del.State != Lingering {
				t.Fatalf("Delete = %v, %v pins, %v; want the LINGERING object, no pins, nil", del.State, pins, err)
			}
			checkEvent(t, nextEvent(t, s.sub), wantEvent{kind: EventDeleted, info: info, state: Deleted})
			wantCounts(t, s.r, nil)
			wantGone(t, s.r, info.Handle, ErrDeleted)

			// As above, a marker's WEAK comes after the deleted object's
			// linger would have ended: nothing may come for it.
			marker, _ := put(t, s.r, 10, 6, Meta{Linger: testLinger}, nil)
			nextEvent(t, s.sub) // CREATED
			nextEvent(t, s.sub) // LINGERING
			s.clock.Advance(2 * testLinger)
			checkEvent(t, awaitEvent(t, s.sub), wantEvent{kind: EventWeak, info: marker, state: Weak})
			if _, _, err := s.r.Delete(marker.ID, false); err != nil {
				t.Fatal(err)
			}
			nextEvent(t, s.sub) // DELETED
			noEvent(t, s.sub)
			wantGone(t, s.r, info.Handle, ErrDeleted)
			if st := s.r.Stats(); st.Deleted != 2 || st.Collected != 0 {
				t.Fatalf("Stats: %d deleted, %d collected; want 2, 0", st.Deleted, st.Collected)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noAutoGC(t) // so that Collect, not the runtime, takes what is WEAK
			clock := newFakeClock()
			r := newRegistry(t, Config{Now: clock.Now})
			sub, err := r.WatchAll()
			if err != nil {
				t.Fatal(err)
			}
			tt.run(t, step{clock: clock, r: r, sub: sub, by: newHolder(r)})
			noEvent(t, sub)
			sub.Close()
			assertHoldsNothing(t, r)
		})
	}
}

// TestLingerEndsAtItsDeadline runs linger on the real clock: the object
// becomes WEAK no earlier than its deadline, and survives a collection
// that ends before it.
func TestLingerEndsAtItsDeadline(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	sub, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	const linger = 200 * time.Millisecond
	before := time.Now()
	info, want := put(t, r, 500, 1, Meta{Linger: linger}, nil)
	if info.LingerUntil.Before(before.Add(linger)) || info.LingerUntil.After(time.Now().Add(linger)) {
		t.Fatalf("LingerUntil %v, want the Put's time plus %v", info.LingerUntil, linger)
	}
	nextEvent(t, sub) // CREATED
	nextEvent(t, sub) // LINGERING
	rep := r.Collect()
	if time.Now().Before(info.LingerUntil) {
		// The collection ended within the linger, so the object was
		// strongly held all through it. (On a machine slow enough to
		// pass the deadline first, there is nothing to check here.)
		if rep.Objects != 0 {
			t.Fatalf("Collect during the linger freed %d objects", rep.Objects)
		}
		mustResolve(t, r, info.Handle, want)
	}
	ev := awaitEvent(t, sub)
	checkEvent(t, ev, wantEvent{kind: EventWeak, info: info, state: Weak})
	if ev.Time.Before(info.LingerUntil) {
		t.Fatalf("WEAK at %v, before the deadline %v", ev.Time, info.LingerUntil)
	}
	if rep := r.Collect(); rep.Objects != 1 {
		t.Fatalf("Collect after the linger freed %d objects, want 1", rep.Objects)
	}
	ev = nextEvent(t, sub)
	if ev.Kind != EventCollected || ev.ID != info.ID || ev.UnpinnedFor < linger {
		t.Fatalf("after the collection: %v of %s, unpinned for %v; want COLLECTED of %s, unpinned for %v or more",
			ev.Kind, ev.Handle, ev.UnpinnedFor, info.Handle, linger)
	}
	wantGone(t, r, info.Handle, ErrCollected)
	noEvent(t, sub)
}

// TestLingeringBytesCountAgainstThePinnedBytesLimit: PINNED_BYTES_LIMIT
// bounds every byte held strongly on a lease's behalf, LINGERING ones
// too: a lingering object keeps its reservation through PINNED and back,
// a Put with a linger and no lease is refused past the limit, and the
// bytes go back when the object becomes WEAK.
func TestLingeringBytesCountAgainstThePinnedBytesLimit(t *testing.T) {
	noAutoGC(t)
	clock := newFakeClock()
	r := newRegistry(t, Config{Now: clock.Now, MaxPinnedBytes: 1000})
	a, b := newHolder(r), newHolder(r)
	x, wantX := put(t, r, 600, 1, Meta{Linger: time.Hour}, &a)
	mustUnpin(t, r, x.ID, a)
	wantCounts(t, r, map[State]counts{Lingering: {1, 600}})
	if got := r.HeldBytes(); got != 600 {
		t.Fatalf("HeldBytes = %d with 600 lingering; want 600", got)
	}

	// The lingering bytes count: 600 more pinned, or lingering with no
	// lease at all, are refused, and nothing moves.
	before := statsSnapshot(r)
	_, err := r.Put(newPayload(600, 2), Meta{}, &b)
	wantLimit(t, err, LimitPinnedBytes, 1000, 1200)
	_, err = r.Put(newPayload(600, 2), Meta{Linger: time.Minute}, nil)
	wantLimit(t, err, LimitPinnedBytes, 1000, 1200)
	if after := statsSnapshot(r); after.Puts != before.Puts || after.HeldBytes != before.HeldBytes ||
		after.Bytes[Lingering] != before.Bytes[Lingering] || after.Objects[Pinned] != before.Objects[Pinned] {
		t.Fatalf("a refused put changed the stats:\nbefore %+v\nafter  %+v", before, after)
	}

	// Pinning x again keeps its reservation: nothing more is needed.
	mustPin(t, r, x.ID, a)
	wantCounts(t, r, map[State]counts{Pinned: {1, 600}})
	y, _ := put(t, r, 400, 3, Meta{}, &b)
	if got := r.HeldBytes(); got != 1000 {
		t.Fatalf("HeldBytes = %d; want 1000", got)
	}
	mustUnpin(t, r, x.ID, a)
	wantCounts(t, r, map[State]counts{Pinned: {1, 400}, Lingering: {1, 600}})

	// The linger over, x is WEAK and its bytes go back.
	clock.Advance(time.Hour)
	r.endLinger(x.ID)
	wantCounts(t, r, map[State]counts{Pinned: {1, 400}, Weak: {1, 600}})
	if got := r.HeldBytes(); got != 400 {
		t.Fatalf("HeldBytes = %d after x became WEAK; want 400", got)
	}
	mustResolve(t, r, x.Handle, wantX)

	for _, info := range []Info{x, y} {
		if _, _, err := r.Delete(info.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	assertHoldsNothing(t, r)
}

// TestLingerOfZeroOrLessIsNone: an object put without a (positive)
// linger is WEAK at once, and its last unpin makes it WEAK.
func TestLingerOfZeroOrLessIsNone(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	by := newHolder(r)
	for _, linger := range []time.Duration{0, -time.Second} {
		info, _ := put(t, r, 100, 1, Meta{Linger: linger}, nil)
		if info.State != Weak || !info.LingerUntil.IsZero() {
			t.Fatalf("Put with linger %v = %v until %v; want WEAK", linger, info.State, info.LingerUntil)
		}
		pinned, _ := put(t, r, 100, 2, Meta{Linger: linger}, &by)
		if got := mustUnpin(t, r, pinned.ID, by); got.State != Weak {
			t.Fatalf("last Unpin with linger %v = %v; want WEAK", linger, got.State)
		}
	}
	if rep := r.Collect(); rep.Objects != 4 {
		t.Fatalf("Collect freed %d objects, want 4", rep.Objects)
	}
	assertHoldsNothing(t, r)
}
